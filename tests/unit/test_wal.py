"""The WAL scan (store/sqlite_wal.py) on WAL files built byte by byte from sqlite.org/fileformat2.html,
then damaged, and on WAL files SQLite itself wrote: what SQLite's recovery replays, and which
committed transactions it would drop."""
from __future__ import annotations

import os
import random
import shutil
import sqlite3
import struct
import sys

import pytest

from frontdesk.store import sqlite_wal as wal

SALTS = (0x1234, 0xABCD)
OLD_SALTS = (0x1233, 0x5555)   # an earlier generation: salt-1 is one less, salt-2 another random value


def spec_checksum(data: bytes, big_endian: bool, s0: int = 0, s1: int = 0) -> tuple[int, int]:
    """The algorithm as the file format document gives it, written out independently of store/sqlite_wal.py."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) % 2 ** 32
        s1 = (s1 + words[i + 1] + s0) % 2 ** 32
    return s0, s1


def frames_of(*transactions: int) -> list[tuple[int, int]]:
    """(page number, database size after commit) for transactions of that many frames each."""
    frames, page = [], 1
    for size in transactions:
        for i in range(size):
            frames.append((page, page + 10 if i == size - 1 else 0))
            page += 1
    return frames


def build_wal(frames: list[tuple[int, int]], page_size: int = 512, big_endian: bool = False,
              salts: tuple[int, int] = SALTS) -> bytes:
    header = struct.pack(">6I", wal.WAL_MAGIC | big_endian, wal.WAL_VERSION, page_size, 0, *salts)
    running = spec_checksum(header, big_endian)
    out = [header, struct.pack(">2I", *running)]
    for page, commit in frames:
        data = bytes((page * 7 + i) % 251 for i in range(page_size))
        running = spec_checksum(struct.pack(">2I", page, commit) + data, big_endian, *running)
        out += [struct.pack(">6I", page, commit, *salts, *running), data]
    return b"".join(out)


def build_index(committed: int, page_size: int = 512, big_endian: bool = False,
                salts: tuple[int, int] = SALTS) -> bytes:
    """A wal-index (-shm) header as a live process leaves it: native byte order, two copies."""
    page_code = 1 if page_size == 65536 else page_size
    head = struct.pack("=3I2BH2I2I", wal.WAL_VERSION, 0, 7, 1, big_endian, page_code, committed, 10, 0, 0) \
        + struct.pack(">2I", *salts)
    head += struct.pack("=2I", *spec_checksum(head, sys.byteorder == "big"))
    return (head * 2).ljust(32768, b"\0")


def frame_offset(number: int, page_size: int = 512) -> int:
    return 32 + (number - 1) * (24 + page_size)


def damage(data: bytes, offset: int, length: int) -> bytes:
    return data[:offset] + b"\xde\xad\xbe\xef" * (length // 4) + data[offset + length:]


@pytest.fixture
def db(tmp_path):
    """Path of a database whose -wal and -shm the test writes."""
    def write(wal_bytes: bytes, index: bytes | None = None, page_size: int | None = None) -> str:
        path = str(tmp_path / "fd.db")
        with open(path, "wb") as f:   # a database file header, for its page size
            f.write(wal.DATABASE_MAGIC + (page_size or 512).to_bytes(2, "big") + bytes(82) if page_size else b"")
        with open(path + "-wal", "wb") as f:
            f.write(wal_bytes)
        if index is not None:
            with open(path + "-shm", "wb") as f:
                f.write(index)
        elif os.path.exists(path + "-shm"):
            os.unlink(path + "-shm")
        return path
    return write


# --- the checksum ----------------------------------------------------------------------------------

@pytest.mark.parametrize("page_size", [512, 4096, 65536])
@pytest.mark.parametrize("big_endian", [False, True])
def test_frames_checksummed_together_match_the_documented_algorithm(page_size, big_endian):
    rng = random.Random(page_size + big_endian)
    count = 5
    frames = bytes(rng.getrandbits(8) for _ in range(count * (24 + page_size)))
    seeds = [(rng.getrandbits(32), rng.getrandbits(32)) for _ in range(count)]
    expected = [spec_checksum(frames[i * (24 + page_size):i * (24 + page_size) + 8]
                              + frames[i * (24 + page_size) + 24:(i + 1) * (24 + page_size)], big_endian, *seed)
                for i, seed in enumerate(seeds)]
    assert wal._frame_checksums(frames, count, page_size, big_endian, seeds) == expected


def test_the_header_checksum_of_a_wal_sqlite_wrote_holds(tmp_path):
    path, _ = sqlite_wal(tmp_path, rows=1)
    header = open(path + "-wal", "rb").read(32)
    magic, *_, sum0, sum1 = struct.unpack(">8I", header)
    assert wal.checksum(header[:24], bool(magic & 1)) == (sum0, sum1)


# --- WAL files built byte by byte --------------------------------------------------------------------

def test_a_sound_wal_and_one_torn_by_a_crash_are_not_damage(db):
    assert wal.scan(db(build_wal(frames_of(3, 2, 4)))) is None
    unfinished = build_wal(frames_of(3, 2) + [(40, 0), (41, 0)])   # a transaction cut short
    assert wal.scan(db(unfinished)) is None
    torn = build_wal(frames_of(3, 2, 3))   # its commit frame's header written, not its page
    assert wal.scan(db(damage(torn, frame_offset(8) + 24, 512), index=build_index(5))) is None
    assert wal.scan(db(build_wal([])[:32] + b"\0" * 100)) is None   # not one whole frame


def test_damage_in_the_middle_names_the_committed_transactions_after_it(db):
    data = build_wal(frames_of(3, 3, 3, 3))   # commits at frames 3, 6, 9, 12
    found = wal.scan(db(damage(data, frame_offset(5) + 100, 400)))   # in frame 5's page
    assert (found.first_bad, found.replayed, found.lost, found.header_damaged) == (5, 3, (6, 9, 12), False)
    assert found.frames == 12 and "damaged at frame 5 of 12" in found.describe()
    assert "replays frames 1-3 and drops at least 3 committed transaction(s)" in found.describe()


def test_a_frame_whose_header_is_damaged_hides_only_the_frame_after_it(db):
    """The next frame's checksum continues from the one stored in the damaged header: it cannot be
    checked, every later one can."""
    data = build_wal(frames_of(3, 1, 3, 3))   # commits at 3, 4, 7, 10
    found = wal.scan(db(damage(data, frame_offset(3), 24)))
    assert (found.first_bad, found.replayed, found.lost) == (3, 0, (7, 10))


def test_a_damaged_wal_header_loses_every_frame(db):
    data = damage(build_wal(frames_of(3, 3, 3)), 0, 500)   # the header and frame 1
    with_index = wal.scan(db(data, index=build_index(9)))
    assert with_index.header_damaged and with_index.lost == (3, 6, 9) and with_index.first_bad == 1
    assert "the WAL header is damaged: SQLite ignores all 9 frames" in with_index.describe()
    from_database_header = wal.scan(db(data, page_size=512))   # no wal-index: the database's page size
    assert from_database_header.lost == (3, 6, 9)
    unknown = wal.scan(db(data))
    assert unknown.header_damaged and not unknown.frames and "page size is unknown" in unknown.describe()


def test_damage_to_the_last_commit_frame_is_found_through_the_wal_index(db):
    data = build_wal(frames_of(3, 3, 3))
    data = damage(data, frame_offset(9) + 24, 512)   # the page of the last commit frame
    found = wal.scan(db(data, index=build_index(9)))
    assert (found.replayed, found.lost) == (6, (9,))
    # Without a wal-index it looks like a commit frame torn by a crash, which was never acknowledged
    assert wal.scan(db(data)) is None


def test_frames_of_earlier_generations_are_not_damage(db):
    old = build_wal(frames_of(4, 4, 4), salts=OLD_SALTS)
    new = build_wal(frames_of(2, 2))
    assert wal.scan(db(new + old[len(new):])) is None   # the old frames behind the new ones
    index_of_the_old = build_index(12, salts=OLD_SALTS)
    assert wal.scan(db(new + old[len(new):], index=index_of_the_old)) is None


def test_damage_is_found_among_many_batches_of_frames(db, monkeypatch):
    monkeypatch.setattr(wal, "BATCH_FRAMES", 4)
    old = build_wal(frames_of(*[2] * 20), salts=OLD_SALTS)
    new = build_wal(frames_of(*[2] * 12))   # frames 1-24, commits every second frame
    data = damage(new + old[len(new):], frame_offset(9) + 30, 100)
    found = wal.scan(db(data))
    assert (found.first_bad, found.replayed, found.lost) == (9, 8, tuple(range(10, 25, 2)))


def test_big_endian_checksums_are_read_too(db):
    data = build_wal(frames_of(2, 2, 2), big_endian=True)
    assert wal.scan(db(data)) is None
    assert wal.scan(db(damage(data, frame_offset(2) + 40, 64))).lost == (4, 6)


def test_a_wal_index_that_is_not_whole_is_ignored(db):
    data = damage(build_wal(frames_of(3, 3)), frame_offset(6) + 24, 512)
    index = bytearray(build_index(6))
    index[16] ^= 1   # one copy changed: a torn write of the wal-index
    assert wal.scan(db(data, index=bytes(index))) is None
    assert wal.scan(db(data, index=build_index(6)[:60])) is None


# --- WAL files SQLite wrote ---------------------------------------------------------------------------

def sqlite_wal(tmp_path, rows: int) -> tuple[str, int]:
    """A database with `rows` rows committed one per transaction, its WAL not merged: the files as
    a process killed at that moment leaves them (copied while the connection is open)."""
    live = str(tmp_path / "live.db")
    conn = sqlite3.connect(live, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA synchronous=OFF")   # a copy is all the test needs, not the disk
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    for row in range(rows):
        conn.execute("INSERT INTO t (body) VALUES (?)", ("x" * 1500,))
    path = str(tmp_path / "crashed.db")
    for suffix in ("", "-wal", "-shm"):
        shutil.copyfile(live + suffix, path + suffix)
    conn.close()
    return path, rows


def rows_sqlite_keeps(path: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM t").fetchone()[0]
    except sqlite3.OperationalError:   # no such table: the transaction creating it was dropped too
        return 0
    finally:
        conn.close()


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_a_wal_sqlite_wrote_damaged_at_the_start_middle_and_end(tmp_path, where):
    path, rows = sqlite_wal(tmp_path, rows=60)
    size = os.path.getsize(path + "-wal")
    assert wal.scan(path) is None
    offset = {"start": 0, "middle": size // 2, "end": size - 4096}[where]
    with open(path + "-wal", "r+b") as f:
        f.seek(offset)
        f.write(b"\xde\xad\xbe\xef" * 1024)
    found = wal.scan(path)
    kept = rows_sqlite_keeps(path)   # (a connection: what SQLite's recovery makes of it)
    assert found is not None and kept < rows
    assert len(found.lost) >= rows - kept - 1   # each lost row is a commit; the damaged one may hide
    assert found.header_damaged == (where == "start")


def rows_in(path: str) -> int:
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM t").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


@pytest.mark.parametrize("where", ["start", "middle"])
def test_replay_merges_what_sqlite_keeps_or_every_intact_commit(tmp_path, where):
    """`replay` against SQLite as the judge: what recovery keeps, and with everything, every row but
    the one (at most) whose frame was damaged."""
    path, rows = sqlite_wal(tmp_path, rows=60)
    size = os.path.getsize(path + "-wal")
    with open(path + "-wal", "r+b") as f:
        f.seek(0 if where == "start" else size // 2)
        f.write(b"\xde\xad\xbe\xef" * 1024)
    os.unlink(path + "-shm")
    kept, everything = str(tmp_path / "kept.db"), str(tmp_path / "everything.db")
    wal.replay(path, path + "-wal", kept, everything=False)
    wal.replay(path, path + "-wal", everything, everything=True)
    assert rows_in(kept) == rows_sqlite_keeps(path) < rows
    assert rows_in(everything) >= rows - 1
    conn = sqlite3.connect(f"file:{everything}?immutable=1", uri=True)
    try:
        assert conn.execute("PRAGMA quick_check").fetchone() == ("ok",)
    finally:
        conn.close()
