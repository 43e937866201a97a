"""Fixtures shared by several test modules."""
from __future__ import annotations

import pytest

from tests.dispatcher_harness import Harness


@pytest.fixture
def harness(tmp_path):
    """Dispatchers against one SQLite store, killed (and the store closed) after the test."""
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()
