"""A handler that looks for frontdesk's secrets where a curious bot running as frontdesk's own user could.

On each event it reads /proc/<pid>/environ, cmdline and mem of every process of the `frontdesk
run` it belongs to (its grandparent and all that one's descendants), takes what descriptors of
theirs it can (pidfd_getfd) and reads those of in-memory files, searches it all for the
secrets, writes what it read and found to $FD_TEST_REPORT (JSON) and replies "scanned". The
values to search for come from the file $FD_TEST_NEEDLES ({name: value}), for the test's sake;
the handler's own memory therefore holds them and is searched too, as proof that the search
finds what is there.
"""
from __future__ import annotations

import ctypes
import json
import os

from frontdesk import Bot

CHUNK = 1 << 20
SYS_PIDFD_OPEN, SYS_PIDFD_GETFD = 434, 438   # the same on every architecture
syscall = ctypes.CDLL(None, use_errno=True).syscall
bot = Bot("snoop", max_in_flight=1)


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _descendants(top: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(_parent(int(entry)), []).append(int(entry))
            except (OSError, ValueError):
                continue   # gone meanwhile
    found, queue = [top], [top]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _memory(pid: int):
    """Every readable mapping of the process, in chunks; nothing when /proc denies it."""
    maps = _read(f"/proc/{pid}/maps")
    if maps is None:
        return
    try:
        mem = open(f"/proc/{pid}/mem", "rb", buffering=0)
    except OSError:
        return
    with mem:
        for line in maps.decode().splitlines():
            fields = line.split()
            if not fields[1].startswith("r") or fields[-1] in ("[vvar]", "[vsyscall]"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            for at in range(start, end, CHUNK):
                try:
                    mem.seek(at)
                    yield mem.read(min(CHUNK, end - at))
                except (OSError, ValueError, OverflowError):
                    break


def _descriptors(pid: int) -> tuple[int, list[bytes]]:
    """(how many descriptors of the process we could take, the contents of its in-memory files)."""
    pidfd = syscall(SYS_PIDFD_OPEN, pid, 0)
    if pidfd < 0:
        return 0, []
    taken, contents = 0, []
    try:
        for number in range(256):
            fd = syscall(SYS_PIDFD_GETFD, pidfd, number, 0)
            if fd < 0:
                continue
            taken += 1
            try:
                if os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:"):
                    contents.append(os.pread(fd, 65536, 0))
            except OSError:
                pass
            finally:
                os.close(fd)
    finally:
        os.close(pidfd)
    return taken, contents


def _role(cmdline: bytes) -> str:
    words = [w.decode(errors="replace") for w in cmdline.split(b"\0") if w]
    if "-m" in words and words.index("-m") + 1 < len(words):
        module = words[words.index("-m") + 1]
        if module == "frontdesk":
            return words[words.index("-m") + 2] if words.index("-m") + 2 < len(words) else "frontdesk"
        return module.removeprefix("frontdesk.")
    return " ".join(words[:2])


def examine(pid: int, needles: dict[str, bytes]) -> dict:
    """What could be read of one process and which secrets were in it."""
    cmdline = _read(f"/proc/{pid}/cmdline")
    environ = _read(f"/proc/{pid}/environ")
    found, scanned, tail = set(), 0, b""
    longest = max(len(n) for n in needles.values())
    for chunk in _memory(pid):
        scanned += len(chunk)
        window = tail + chunk
        found |= {f"mem:{name}" for name, needle in needles.items() if needle in window}
        tail = window[-(longest - 1):]
    taken, files = _descriptors(pid)
    for where, text in (("cmdline", cmdline), ("environ", environ), *(("fd", data) for data in files)):
        found |= {f"{where}:{name}" for name, needle in needles.items() if text and needle in text}
    return {"pid": pid, "role": _role(cmdline or b""), "environ_read": environ is not None,
            "mem_bytes_read": scanned, "descriptors_taken": taken, "found": sorted(found)}


@bot.on_message("text")
def scan(event, api):
    with open(os.environ["FD_TEST_NEEDLES"]) as f:
        needles = {name: value.encode() for name, value in json.load(f).items()}
    me = os.getpid()
    top = _parent(_parent(me))   # handler -> dispatcher -> frontdesk run
    report = {"self": examine(me, needles),
              "processes": [examine(pid, needles) for pid in _descendants(top) if pid != me]}
    partial = os.environ["FD_TEST_REPORT"] + ".part"
    with open(partial, "w") as f:
        json.dump(report, f)
    os.replace(partial, os.environ["FD_TEST_REPORT"])
    api.reply(event.reply_token, [{"type": "text", "text": "scanned"}])


if __name__ == "__main__":
    bot.run()
