"""The status page's sampler and `frontdesk top` follow their store file: removed or replaced, they
say so (the page then exits for its supervisor to start it on the file now at the path, top stops:
a process that kept the old file open would keep the new one from opening, docs/store.md)."""
from __future__ import annotations

import os

import pytest

from frontdesk.statuspage import Sampler
from frontdesk.store import StoreGone, open_store
from frontdesk.top import still_the_file


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


def test_top_stops_watching_a_file_that_was_removed(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'fd.db'}")
    try:
        still_the_file(store)   # the file it opened: nothing to say
        os.remove(tmp_path / "fd.db")
        with pytest.raises(StoreGone, match="removed"):
            still_the_file(store)
    finally:
        store.close()
