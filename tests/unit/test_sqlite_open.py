"""Opening a SQLite store (store/sqlite.py, store/sqlite_files.py, store/sqlite_schema.py) on
temporary files: URLs, clear errors naming what is wrong, migrations, an open that fails leaving
nothing behind, and the file's identity checked before writes."""
from __future__ import annotations

import os
import sqlite3

import pytest

from frontdesk.store import StoreError, StoreGone, StoreUnavailable, open_store, sqlite_file_missing
from frontdesk.store.sqlite import SQLiteStore, path_from_url
from frontdesk.store.sqlite_schema import MIGRATIONS
from tests.unit.store_parts import event


def descriptors(folder=None) -> int:
    """This process's open descriptors (of files in `folder` only, when given)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue   # the listing's own, closed meanwhile
        count += folder is None or target.startswith(str(folder))
    return count


@pytest.mark.parametrize("url, path", [
    ("sqlite:///frontdesk.db", "frontdesk.db"), ("sqlite:////var/lib/fd/q.db", "/var/lib/fd/q.db"),
    ("sqlite:///data/q.db?mode=x", "data/q.db")])
def test_a_sqlite_url_names_a_path_relative_with_three_slashes_absolute_with_four(url, path):
    assert path_from_url(url) == path


def test_a_sqlite_url_without_a_file_is_a_clear_error():
    with pytest.raises(StoreError, match="names no file"):
        path_from_url("sqlite:///")


@pytest.mark.parametrize("url", ["postgres://x", "redis", "sqlite://relative.db"])
def test_an_unknown_url_scheme_is_a_clear_error(url):
    with pytest.raises(StoreError, match="not supported"):
        open_store(url)


def test_a_sqlite_file_not_created_yet_is_missing_for_a_reader(tmp_path):
    assert sqlite_file_missing(f"sqlite:///{tmp_path}/new.db")
    assert not sqlite_file_missing(f"sqlite:///{tmp_path}/nowhere/new.db")   # its folder is the problem
    assert not sqlite_file_missing("mongodb://h/db") and not sqlite_file_missing("sqlite:///")


def test_building_a_store_opens_nothing(tmp_path):
    SQLiteStore(f"sqlite:///{tmp_path}/q.db")
    assert descriptors(tmp_path) == 0 and os.listdir(tmp_path) == []


def test_a_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match=f"{path}.*not a database"):
        open_store(f"sqlite:///{path}")


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path}/nowhere/x.db")


def test_a_folder_in_place_of_the_file_is_a_clear_error(tmp_path):
    (tmp_path / "q.db").mkdir()
    with pytest.raises(StoreError, match="is a directory"):
        open_store(f"sqlite:///{tmp_path}/q.db")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_file_is_a_clear_error(tmp_path):
    path = tmp_path / "ro.db"
    open_store(f"sqlite:///{path}").close()
    path.chmod(0o444)
    with pytest.raises(StoreError, match="not readable and writable"):
        open_store(f"sqlite:///{path}")


def newer_schema_file(path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()


def test_a_file_from_a_newer_frontdesk_is_refused(tmp_path):
    newer_schema_file(tmp_path / "new.db")
    with pytest.raises(StoreError, match="schema version 99"):
        open_store(f"sqlite:///{tmp_path}/new.db")


def test_a_refused_open_leaves_no_descriptor_behind(tmp_path):
    """The schema is refused after the writer locks and the first connection are open: they are
    closed again (a supervisor may try every second)."""
    newer_schema_file(tmp_path / "new.db")
    for _ in range(5):
        with pytest.raises(StoreError):
            open_store(f"sqlite:///{tmp_path}/new.db")
    assert descriptors(tmp_path) == 0


def test_a_refused_open_does_not_count_as_holding_the_file(tmp_path):
    """Else the process would refuse the next file at the path as "the old one still open here"."""
    newer_schema_file(tmp_path / "q.db")
    with pytest.raises(StoreError, match="schema version"):
        open_store(f"sqlite:///{tmp_path}/q.db")
    os.remove(tmp_path / "q.db")
    open_store(f"sqlite:///{tmp_path}/q.db").close()


def test_a_new_file_gets_every_migration_and_is_private(tmp_path):
    open_store(f"sqlite:///{tmp_path}/q.db").close()
    with sqlite3.connect(tmp_path / "q.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert (tmp_path / "q.db").stat().st_mode & 0o777 == 0o600


def test_a_file_from_before_the_counts_gets_them_counted_when_opened(tmp_path):
    url = f"sqlite:///{tmp_path}/counted.db"
    store = open_store(url)
    store.append("Ubot", [event(n, key) for n, key in enumerate("AABC")], 0)
    store.ack("d1", [store.claim("d1", 1, 30.0)[0]["o"]["_id"]])
    store.close()
    conn = sqlite3.connect(f"{tmp_path}/counted.db")   # back to schema 1: no counts
    for name in ("events_counted_insert", "events_counted_delete", "events_counted_update"):
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DROP TABLE event_counts")
    conn.execute("DROP TABLE rate_budget")
    conn.execute("DROP TABLE sends")
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    store = open_store(url)
    try:
        stats = store.stats()
        assert (stats["pending"], stats["done"]) == (3, 1)
    finally:
        store.close()


def test_a_write_to_a_file_replaced_since_it_was_opened_is_refused_as_gone(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/q.db")
    try:
        os.replace(tmp_path / "q.db", tmp_path / "moved.db")
        with pytest.raises(StoreGone, match="removed"):
            store.set_control("x", 1)
        with pytest.raises(StoreGone):
            store.append("Ubot", [event(1)], 0)
        with pytest.raises(StoreGone):
            store.health()
    finally:
        store.close()


def test_a_process_does_not_open_the_new_file_while_it_has_the_old_one_open(tmp_path):
    url = f"sqlite:///{tmp_path / 'fd.db'}"
    old = open_store(url)
    old.append("Ubot", [event(1)], 0)
    os.remove(tmp_path / "fd.db")
    with pytest.raises(StoreError, match="this process still has the database file that was removed"):
        open_store(url)
    old.close()
    new = open_store(url)
    try:
        assert new.stats()["pending"] == 0
    finally:
        new.close()


def test_a_closed_store_refuses_every_call_and_closes_once(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/q.db")
    store.close()
    store.close()
    for call in (lambda: store.stats(), lambda: store.claim("d1", 1, 1.0), lambda: store.set_control("x", 1),
                 lambda: store.append("Ubot", [event(1)], 0), lambda: store.health()):
        with pytest.raises(StoreUnavailable, match="closed"):
            call()
