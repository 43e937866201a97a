"""SQLite's write-ahead log read the way SQLite's recovery reads it, to find the committed
transactions that recovery drops. The formats: sqlite.org/fileformat2.html, "The WAL File Format"
and "WAL-Index Format".

At open, SQLite replays the WAL up to the last commit frame before the first frame whose salts or
cumulative checksum fail, and silently drops everything after that frame: a few damaged bytes in a
WAL not yet merged into the database lose every transaction written after them, acknowledged
appends included, and nothing says so. `scan` finds them before any connection can replay, merge
or reset the WAL:

- the frames SQLite will replay, computed as its recovery does (header, salts, checksum chain);
- after the first bad frame, every frame whose checksum, computed from the checksum stored in the
  frame before it, matches its own is intact: an intact commit frame of the WAL's current
  generation (its salts) is a committed transaction SQLite will not replay;
- a damaged commit frame cannot be told from one a crash tore in the middle of its write (never
  acknowledged), so the wal-index the last process left in the `-shm` file is read too: its count
  of committed frames is written only after a commit is complete, so a count beyond what SQLite
  replays names a commit the checksums cannot.

Checksums are the expensive part: a loop over the words spends ~90 µs of CPU on a 4 KiB frame,
`_frame_checksums` ~19 µs by working on all frames of a batch at once (docs/store.md).
"""
from __future__ import annotations

import array
import os
import shutil
import struct
import sys
from dataclasses import dataclass

WAL_MAGIC = 0x377F0682          # | 1: checksums read the data as big-endian words
WAL_VERSION = 3007000
HEADER = struct.Struct(">8I")   # magic, version, page size, checkpoint no, salt-1, salt-2, checksum-1, -2
FRAME_HEADER = struct.Struct(">6I")   # page no, database size after a commit (0: not one), salts, checksums
# The wal-index header, in the writing host's byte order: version, unused, change counter, isInit,
# bigEndCksum, page size (1 for 65536), mxFrame (committed frames), pages, last frame's checksum,
# salts (the WAL header's bytes), checksum of the 40 bytes before it. Two copies, then nBackfill...
INDEX_HEADER = struct.Struct("=3I2BH2I2I8s2I")
DATABASE_MAGIC = b"SQLite format 3\x00"
BATCH_FRAMES = 512              # frames read and checksummed together (2 MiB of 4 KiB pages)
_MASK = 0xFFFFFFFF
_NATIVE_BIG = sys.byteorder == "big"
_LOW = 1 if _NATIVE_BIG else 0  # the low 32-bit word of a native 64-bit lane


def checksum(data: bytes, big_endian: bool, seed: tuple[int, int] = (0, 0)) -> tuple[int, int]:
    """SQLite's WAL checksum of `data` (a multiple of 8 bytes), continuing from `seed`."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    s0, s1 = seed
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & _MASK
        s1 = (s1 + words[i + 1] + s0) & _MASK
    return s0, s1


def _to_lanes(values: list[int]) -> int:
    lanes = bytearray(8 * len(values))
    memoryview(lanes).cast("I")[_LOW::2] = array.array("I", values)
    return int.from_bytes(lanes, sys.byteorder)


def _from_lanes(number: int, count: int) -> list[int]:
    return memoryview(number.to_bytes(8 * count, sys.byteorder)).cast("I")[_LOW::2].tolist()


def _frame_checksums(frames: bytes, count: int, page_size: int, big_endian: bool,
                     seeds: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The checksum of each of `count` whole frames, each continuing from its own seed.

    All frames at once: the running sums of frame i live in 64-bit lane i of two big integers, so
    each step of the algorithm is a few big-integer operations for every frame, and word j of
    every frame is gathered into its lanes by one strided copy.
    """
    if big_endian == _NATIVE_BIG:
        words = memoryview(frames).cast("I")
    else:
        swapped = array.array("I", frames)
        swapped.byteswap()
        words = memoryview(swapped)
    frame_words = (FRAME_HEADER.size + page_size) // 4
    column_bytes = bytearray(8 * count)
    column_words = memoryview(column_bytes).cast("I")[_LOW::2]

    def column(j: int) -> int:   # word j of every frame, one per lane
        column_words[:] = words[j::frame_words]
        return int.from_bytes(column_bytes, sys.byteorder)

    mask = _to_lanes([_MASK] * count)
    s0, s1 = _to_lanes([seed[0] for seed in seeds]), _to_lanes([seed[1] for seed in seeds])
    # the frame header's first 8 bytes (words 0, 1), then the page (from word 6)
    for j in (0, *range(FRAME_HEADER.size // 4, frame_words, 2)):
        s0 = (s0 + column(j) + s1) & mask
        s1 = (s1 + column(j + 1) + s0) & mask
    return list(zip(_from_lanes(s0, count), _from_lanes(s1, count)))


def _page_size_ok(size: int) -> bool:
    return 512 <= size <= 65536 and size & (size - 1) == 0


@dataclass(frozen=True)
class WalIndex:
    """What the wal-index header in the `-shm` file says about the WAL."""
    committed: int       # mxFrame: frames of committed transactions
    page_size: int
    big_endian: bool     # checksums of big-endian words
    salts: bytes         # the generation it describes (the WAL header's salt bytes)


def read_index(shm_path: str) -> WalIndex | None:
    """The wal-index header the last process left, when it is whole: its two copies agree and its
    checksum holds. None without one (no file, truncated by SQLite's first opener, torn)."""
    try:
        with open(shm_path, "rb") as shm:
            raw = shm.read(2 * INDEX_HEADER.size)
    except FileNotFoundError:
        return None
    if len(raw) < 2 * INDEX_HEADER.size or raw[:INDEX_HEADER.size] != raw[INDEX_HEADER.size:]:
        return None
    version, _, _, is_init, big_endian, page_code, committed, _, _, _, salts, sum0, sum1 = \
        INDEX_HEADER.unpack(raw[:INDEX_HEADER.size])
    page_size = 65536 if page_code == 1 else page_code
    if version != WAL_VERSION or not is_init or not _page_size_ok(page_size) \
            or checksum(raw[:INDEX_HEADER.size - 8], _NATIVE_BIG) != (sum0, sum1):
        return None
    return WalIndex(committed, page_size, bool(big_endian), salts)


def database_page_size(db_path: str) -> int | None:
    """The page size in the database file's header, if it has one."""
    try:
        with open(db_path, "rb") as db:
            header = db.read(18)
    except FileNotFoundError:
        return None
    if len(header) < 18 or not header.startswith(DATABASE_MAGIC):
        return None
    size = int.from_bytes(header[16:18], "big")
    size = 65536 if size == 1 else size
    return size if _page_size_ok(size) else None


@dataclass(frozen=True)
class Damage:
    """Committed transactions in a WAL that SQLite's recovery will not replay."""
    size: int                  # bytes of the WAL
    frames: int                # its whole frames (0 when its page size is unknown)
    replayed: int              # frames SQLite replays: up to the last commit frame before `first_bad`
    first_bad: int             # the first frame SQLite rejects (1 when the WAL header is damaged)
    lost: tuple[int, ...]      # commit frames after it known to be committed
    header_damaged: bool
    generation: bytes          # the salts of the WAL's current generation (b"" when unknown)

    def describe(self) -> str:
        if self.header_damaged and not self.frames:
            return (f"the WAL header is damaged and the page size is unknown: SQLite ignores the whole "
                    f"WAL ({self.size} bytes; acknowledged events may be lost)")
        lost = f"at least {len(self.lost)} committed transaction(s)"
        if self.header_damaged:
            among = f", {lost} among them" if self.lost else ""
            return (f"the WAL header is damaged: SQLite ignores all {self.frames} frames of the WAL{among} "
                    "(acknowledged events may be lost)")
        return (f"the WAL is damaged at frame {self.first_bad} of {self.frames}: SQLite replays frames "
                f"1-{self.replayed} and drops {lost} after them (acknowledged events may be lost)")


@dataclass(frozen=True)
class _Layout:
    page_size: int
    big_endian: bool
    salts: bytes | None        # None: unknown, taken from the first intact frame
    header_ok: bool


def _layout(header: bytes, index: WalIndex | None, db_path: str) -> _Layout | None:
    """How to read the frames: from the WAL header when SQLite accepts it, else from the wal-index,
    else the database's page size (checksums in this host's byte order, as SQLite writes them)."""
    magic, _, page_size, _, _, _, sum0, sum1 = HEADER.unpack(header)
    big_endian = bool(magic & 1)
    if magic & ~1 == WAL_MAGIC and _page_size_ok(page_size) \
            and checksum(header[:24], big_endian) == (sum0, sum1):
        return _Layout(page_size, big_endian, header[16:24], True)
    if index is not None:
        return _Layout(index.page_size, index.big_endian, index.salts, False)
    page_size = database_page_size(db_path)
    return _Layout(page_size, _NATIVE_BIG, None, False) if page_size else None


@dataclass(frozen=True)
class Frame:
    number: int          # from 1
    page: int            # the database page it holds
    commit: int          # the database size in pages after its transaction, on a commit frame; else 0
    ours: bool           # salts of the WAL's current generation
    intact: bool         # its checksum, continued from the one stored in the frame before, holds
    data: memoryview     # the page

    @property
    def valid(self) -> bool:
        return self.ours and self.intact


class _Frames:
    """The whole frames of a WAL in order, each checked as SQLite's recovery checks it, except that
    a frame's checksum continues from the one stored in the frame before it (which is what
    recovery computed, as long as every frame before was valid). `generation`: the salts of the
    WAL's current generation (known once iterated, when the layout did not say)."""

    def __init__(self, wal, size: int, header: bytes, layout: _Layout):
        self._wal, self._header, self._layout = wal, header, layout
        self.frame_size = FRAME_HEADER.size + layout.page_size
        self.count = (size - HEADER.size) // self.frame_size
        self.generation = layout.salts

    def __iter__(self):
        size, previous = self.frame_size, HEADER.unpack(self._header)[6:8]
        self._wal.seek(HEADER.size)
        for start in range(0, self.count, BATCH_FRAMES):
            count = min(BATCH_FRAMES, self.count - start)
            batch = self._wal.read(count * size)
            if len(batch) < count * size:
                return   # truncated meanwhile: SQLite will not see these frames either
            headers = [FRAME_HEADER.unpack_from(batch, i * size) for i in range(count)]
            salts = [batch[i * size + 8:i * size + 16] for i in range(count)]
            seeds = [previous] + [h[4:6] for h in headers[:-1]]
            previous = headers[-1][4:6]
            sums = None
            if self.generation is None or self.generation in salts:   # else earlier generations' only
                sums = _frame_checksums(batch, count, self._layout.page_size, self._layout.big_endian, seeds)
            view = memoryview(batch)
            for i, (page, commit, _, _, sum0, sum1) in enumerate(headers):
                intact = sums is not None and page != 0 and sums[i] == (sum0, sum1)
                if self.generation is None and intact:
                    self.generation = salts[i]   # the earliest intact frame's: a generation starts at the front
                yield Frame(start + i + 1, page, commit, salts[i] == self.generation, intact,
                            view[i * size + FRAME_HEADER.size:(i + 1) * size])


def _open_frames(wal, size: int, db_path: str, index: WalIndex | None) -> tuple[_Frames | None, bool]:
    """The frames of an open WAL file of `size` bytes (more than its header), and whether its
    header is sound; None for the frames when no page size can be found for a damaged header."""
    header = wal.read(HEADER.size)
    layout = _layout(header, index, db_path)
    if layout is None:
        return None, False
    return _Frames(wal, size, header, layout), layout.header_ok


def scan(db_path: str) -> Damage | None:
    """Read the WAL of the database at db_path (and its wal-index) as SQLite's recovery will;
    None when recovery will replay every committed transaction in it.

    Call it before any connection to the database is opened, with every writer held off: a
    connection's recovery rebuilds the wal-index, and a writer may overwrite or reset the WAL.
    """
    try:
        wal = open(db_path + "-wal", "rb")
    except FileNotFoundError:
        return None
    with wal:
        size = os.fstat(wal.fileno()).st_size
        if size <= HEADER.size:
            return None   # SQLite reads a WAL only when it holds more than its header
        index = read_index(db_path + "-shm")
        frames, header_ok = _open_frames(wal, size, db_path, index)
        if frames is None:
            return Damage(size, 0, 0, 1, (), True, b"")
        if not frames.count:
            return None   # no whole frame: nothing SQLite could replay
        replayed, first_bad, lost = 0, (0 if header_ok else 1), []
        index_names_a_commit = False   # the frame the wal-index counts as the last committed one is one
        for frame in frames:
            if first_bad:
                if frame.valid and frame.commit:
                    lost.append(frame.number)
            elif not frame.valid:
                first_bad = frame.number
            elif frame.commit:
                replayed = frame.number
            if index is not None and frame.number == index.committed:
                index_names_a_commit = frame.ours and frame.commit != 0
    if index is not None and index.salts == frames.generation and index.committed > replayed \
            and index_names_a_commit and index.committed not in lost:
        lost.append(index.committed)
    if header_ok and not lost:
        return None
    return Damage(size, frames.count, replayed, first_bad, tuple(sorted(lost)), not header_ok,
                  frames.generation or b"")


def replay(db_path: str, wal_path: str, out_path: str, everything: bool) -> int:
    """Write out_path: the database at db_path with the WAL at wal_path merged into it, as a
    checkpoint merges it (each frame's page written in frame order, the file cut to the size its
    last commit gives). `everything` False: the frames SQLite's recovery replays (what it kept);
    True: every valid frame up to the last valid commit frame (what was committed, less the
    damaged frames: a page whose last version was in one of those keeps its version before).
    Returns the number of the last commit frame merged (0: none). For getting back what a damaged
    WAL lost, from copies of the two files (store/salvage.py)."""
    shutil.copyfile(db_path, out_path)
    with open(wal_path, "rb") as wal, open(out_path, "r+b") as out:
        size = os.fstat(wal.fileno()).st_size
        frames, header_ok = _open_frames(wal, size, db_path, None) if size > HEADER.size else (None, False)
        if frames is None:
            return 0
        page_size, transaction, last_commit, database_pages = frames.frame_size - FRAME_HEADER.size, [], 0, 0
        for frame in frames:
            if not (frame.valid and header_ok) and not everything:
                break   # recovery stops at the first frame that is not valid (at once after a damaged header)
            if not frame.valid:
                continue
            transaction.append((frame.page, bytes(frame.data)))
            if frame.commit:
                for page, data in transaction:
                    out.seek((page - 1) * page_size)
                    out.write(data)
                transaction, last_commit, database_pages = [], frame.number, frame.commit
        if last_commit:
            out.truncate(database_pages * page_size)
    return last_commit
