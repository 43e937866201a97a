"""How much one read from a pipe or a socket asks for: 64 KiB, under glibc's mmap threshold.

CPython allocates the whole size a read asks for, then shrinks the result to what came. Above
glibc's mmap threshold (128 KiB to begin with) that allocation is a fresh mapping, shrunk in place
and unmapped, and a block freed after shrinking does not raise the threshold: a process can pay
a map, a remap and an unmap on every read for its whole life. The echo handler did, reading 1 MiB
at a time; asyncio's transports ask for 256 KiB. A 300-byte read costs ~15 µs of CPU asked as
256 KiB in a fresh process, ~1 µs asked as 64 KiB (docs/benchmarks.md, "Reads under the mmap
threshold"). A Linux pipe holds 64 KiB unless widened, so a bigger read seldom gets more; a reader
that got a full READ_SIZE reads again.
"""
READ_SIZE = 64 * 1024


def read_small(transport) -> None:
    """Make an asyncio transport read at most READ_SIZE at a time. `max_size` (256 KiB) is
    asyncio's own attribute, not public API: tests/unit/test_reads.py pins that it is honoured."""
    transport.max_size = READ_SIZE
