"""The status page's sampler follows its store file: removed or replaced, it says so (the page
then exits for its supervisor to start it on the file now at the path: docs/store.md)."""
from __future__ import annotations

import os

import pytest

from frontdesk.statuspage import Sampler
from frontdesk.store import open_store


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_the_sampler_notices_its_store_file_gone(tmp_path, how):
    path = tmp_path / "fd.db"
    store = open_store(f"sqlite:///{path}")
    gone: list[str] = []
    sampler = Sampler(store, gone.append)
    try:
        sampler.read_once()
        assert sampler.view is not None and not gone
        if how == "removed":
            os.remove(path)
        else:
            open_store(f"sqlite:///{tmp_path / 'restored.db'}").close()
            os.replace(tmp_path / "restored.db", path)
        sampler.read_once()
        assert len(gone) == 1 and how in gone[0], gone
    finally:
        store.close()
