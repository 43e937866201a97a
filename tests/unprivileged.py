"""frontdesk as an unprivileged user, the way a systemd unit runs it, from a test run as root.

Root may read any process, so what a handler can see of frontdesk must be tried as someone else.
Run as root (as CI is), the tests use `nobody`, which needs an interpreter it can execute; CI's
virtual environment lives in a private temporary folder and its python under /root/.pyenv, so
`Unprivileged` builds one in a folder that user can read: the interpreter's prefix (without its
site-packages and test suite) and the environment's site-packages hard-linked (copied across file
systems), frontdesk's rooms laid out as setup.cfg maps them, and the tests package. Run as
anyone else, the tests are unprivileged already and use this interpreter as it is.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from tests.test_layout import REPO, package_folders

USER = "nobody"
# left out of the interpreter's copy: not needed to run frontdesk, and most of its size
PREFIX_LEFT_OUT = ("site-packages", "test", "config-*", "idlelib", "tkinter", "turtledemo", "ensurepip")
IMPORT_CHECK = ("import frontdesk.cli, frontdesk.receiver.server, frontdesk.dispatcher.arbiter, "
                "frontdesk.ratelimiter.limiter, frontdesk.statuspage, tests.handlers")


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:   # another file system, or links not allowed: a copy reads the same
        shutil.copy2(source, target)


def _tree(source: Path, target: Path, *left_out: str) -> None:
    shutil.copytree(source, target, symlinks=True, copy_function=_link_or_copy, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("node_modules", ".hypothesis", *left_out))


class Unprivileged:
    """A user without privileges, a folder it owns, and an interpreter it can run frontdesk with."""

    def __init__(self):
        self.as_root = os.geteuid() == 0
        entry = pwd.getpwnam(USER) if self.as_root else pwd.getpwuid(os.geteuid())
        self.uid, self.gid, self.name = entry.pw_uid, entry.pw_gid, entry.pw_name
        self.root = Path(tempfile.mkdtemp(prefix="frontdesk-unprivileged-"))
        os.chmod(self.root, 0o755)
        self.folder = self.root / "home"          # the user's own: the store, logs, reports
        self.folder.mkdir()
        os.chown(self.folder, self.uid, self.gid)
        self.python = sys.executable
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
        try:
            if self.as_root and self._import_error():
                self._build_interpreter()
                problem = self._import_error()
                if problem:
                    raise RuntimeError(f"{USER} cannot run frontdesk with the interpreter built for it: {problem}")
        except BaseException:
            self.close()
            raise

    def popen(self, argv: list[str], env: dict[str, str], **kwargs) -> subprocess.Popen:
        """Start argv as the user in its folder, with the interpreter's environment under `env`."""
        switch = {"user": self.uid, "group": self.gid, "extra_groups": []} if self.as_root else {}
        return subprocess.Popen(argv, env={**self.env, **env}, cwd=self.folder, **switch, **kwargs)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _import_error(self) -> str:
        """Why the user cannot import frontdesk with self.python ("" when it can)."""
        try:
            check = self.popen([self.python, "-c", IMPORT_CHECK], {}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:   # e.g. the interpreter's folder is closed to the user
            return str(exc)
        _, stderr = check.communicate(timeout=120)
        return "" if check.returncode == 0 else stderr.decode(errors="replace").strip() or f"exit {check.returncode}"

    def _build_interpreter(self) -> None:
        prefix, code, packages = self.root / "python", self.root / "code", self.root / "packages"
        (prefix / "bin").mkdir(parents=True)
        (prefix / "lib").mkdir()
        _link_or_copy(os.path.realpath(sys.executable), str(prefix / "bin" / "python3"))
        for library in (Path(sys.base_prefix) / "lib").glob("libpython*"):   # a shared build's
            _link_or_copy(str(library), str(prefix / "lib" / library.name))
        stdlib = Path(sysconfig.get_path("stdlib"))
        _tree(stdlib, prefix / stdlib.relative_to(sys.base_prefix), *PREFIX_LEFT_OUT)
        for site in {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}:
            _tree(Path(site), packages, "frontdesk*", "__editable__*")
        for package, folder in package_folders().items():   # frontdesk as installed, from this checkout
            _tree(folder, code.joinpath(*package.split(".")))
        _tree(REPO / "tests", code / "tests", "data")
        self.python = str(prefix / "bin" / "python3")
        self.env.update({"PYTHONHOME": str(prefix), "LD_LIBRARY_PATH": str(prefix / "lib"),
                         "PYTHONPATH": f"{code}{os.pathsep}{packages}"})
