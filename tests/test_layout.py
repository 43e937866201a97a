"""The installed layout: one import name, every room inside it, and a bot folder that shadows our
room names (its own `handlers/`, `protocol.py`, `store.py`) still runs on frontdesk.

The rooms are top-level folders of the repository mapped onto `frontdesk.*` by setup.cfg's
package_dir (README, "Layout"); these tests build and install the real wheel and run the real
`frontdesk` console script.
"""
from __future__ import annotations

import configparser
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import requests

from frontdesk.demo import accepting
from frontdesk.protocol.config import SANDBOX_CHANNEL_SECRET
from frontdesk.sandbox.webhooks import EventFactory, post_webhook, user_id, user_source
from tests.helpers import free_port, wait_until

REPO = Path(__file__).resolve().parents[1]
FRONTDESK = Path(sys.executable).parent / "frontdesk"   # the console script of this environment


def package_folders() -> dict[str, Path]:
    """frontdesk.* package name -> repository folder, as setup.cfg maps them."""
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    mapping = {}
    for line in parser["options"]["package_dir"].strip().splitlines():
        name, _, folder = (part.strip() for part in line.partition("="))
        mapping[name] = REPO / folder
    return mapping


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel `pip install .` builds (built once for this module)."""
    folder = tmp_path_factory.mktemp("wheel")
    # built from a copy: pip builds in the source tree, and a stale build/ there could hide a
    # file missing from setup.cfg (and the checkout stays clean)
    source = tmp_path_factory.mktemp("source") / "frontdesk"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "build", "node_modules", "__pycache__", "*.egg-info", ".hypothesis", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(folder), str(source)], check=True, capture_output=True, timeout=180)
    (built,) = folder.glob("frontdesk-*.whl")
    return built


def test_the_wheel_holds_one_import_name_and_every_room(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"frontdesk"}, top
    assert len(dist_info) == 1
    # every Python file of every room is in it, where setup.cfg maps it: a new sub-package
    # left out of setup.cfg's `packages` would be missing here
    expected = set()
    for package, folder in package_folders().items():
        for source in folder.rglob("*.py"):
            if "node_modules" in source.parts:
                continue
            relative = source.relative_to(folder)
            inner = [p for p in package_folders() if p.startswith(package + ".")]
            if any(source.is_relative_to(package_folders()[p]) for p in inner):
                continue   # a mapped sub-package of its own
            expected.add("/".join(package.split(".") + list(relative.parts)))
    assert expected - set(names) == set()
    assert {"frontdesk/py.typed", "frontdesk/protocol/SPEC.md",
            "frontdesk/handlers/examples/echo.js"} <= set(names)


def test_pip_install_leaves_only_frontdesk_in_a_fresh_environment(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                    "--quiet", "--no-deps", str(wheel)], check=True, capture_output=True, timeout=120)
    (site,) = venv.glob("lib/python*/site-packages")
    top = {p.name for p in site.iterdir() if p.name != "__pycache__"}
    assert {t for t in top if not t.endswith(".dist-info")} == {"frontdesk"}, top
    # every module imports from the installed copy alone, with no checkout on the path
    # (dependencies come from this environment, after the fresh install on PYTHONPATH)
    modules = sorted(
        ".".join(path.relative_to(site).with_suffix("").parts).removesuffix(".__init__")
        for path in (site / "frontdesk").rglob("*.py")
        if path.name != "__main__.py" and path.parent.name != "examples")
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    module = importlib.import_module(name)\n"
            f"    assert module.__file__.startswith({str(site)!r}), module.__file__\n"
            "import frontdesk\n"
            "print(frontdesk.__version__, frontdesk.Bot.__module__, frontdesk.Nack.__name__)\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    assert done.stdout.split() == [parser["metadata"]["version"], "frontdesk.handlers.sdk", "Nack"]


    # static analysis (mypy) resolves every frontdesk.* import in the installed package
    mypy = subprocess.run([sys.executable, "-m", "mypy", "--python-executable", str(venv / "bin" / "python"),
                           "--no-incremental", "--follow-imports=silent", "-p", "frontdesk"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    unresolved = [line for line in mypy.stdout.splitlines()
                  if "[import-not-found]" in line and 'module named "frontdesk' in line]
    assert unresolved == [], "\n".join(unresolved)
    analysed = len(list((site / "frontdesk").rglob("*.py")))
    assert f"checked {analysed} source files" in mypy.stdout, mypy.stdout[-500:]


def test_python_dash_m_frontdesk_is_the_command(tmp_path):
    module = subprocess.run([sys.executable, "-m", "frontdesk", "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=30)
    script = subprocess.run([str(FRONTDESK), "--help"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=30)
    assert module.returncode == script.returncode == 0, module.stderr + script.stderr
    assert module.stdout == script.stdout
    assert module.stdout.startswith("usage: frontdesk ")


# --- a bot folder whose own modules carry our room names ---------------------------------------

BOT_FILES = {
    "handlers/__init__.py": '"""The bot\'s own handlers package."""\n',
    "handlers/replies.py": textwrap.dedent('''\
        def answer(text):
            return "mybot: " + text
        '''),
    "protocol.py": 'NAME = "the bot\'s own protocol module"\n',
    "store.py": 'NAME = "the bot\'s own store module"\n',
    "mybot.py": textwrap.dedent('''\
        """A bot written as the README shows, beside modules named like frontdesk's rooms."""
        import protocol
        import store
        from frontdesk import Bot
        from handlers.replies import answer

        assert protocol.NAME.startswith("the bot's own") and store.NAME.startswith("the bot's own")
        bot = Bot("mybot", max_in_flight=4)


        @bot.on_message("text")
        def on_text(event, api):
            api.reply(event.reply_token, answer(event.message.text))


        bot.run()
        '''),
}


@pytest.fixture
def bot_folder(tmp_path) -> Path:
    folder = tmp_path / "mybot"
    for name, text in BOT_FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    shutil.copy(REPO / ".gitignore", folder / ".gitignore")
    subprocess.run(["git", "init", "--quiet", str(folder)], check=True, timeout=30)
    return folder


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("FRONTDESK_", "LINE_"))}


def test_a_bot_with_its_own_handlers_protocol_and_store_passes_check_handler(bot_folder):
    done = subprocess.run([str(FRONTDESK), "check-handler", "--", sys.executable, "mybot.py"],
                          cwd=bot_folder, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and "PASS" in done.stdout


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_a_bot_with_its_own_handlers_protocol_and_store_runs_under_frontdesk_run(bot_folder):
    listen, sandbox_listen = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {**clean_env(), "FRONTDESK_LISTEN": listen, "FRONTDESK_SANDBOX_LISTEN": sandbox_listen,
           "FRONTDESK_ADMIN_LISTEN": f"127.0.0.1:{free_port()}"}
    log_path = bot_folder.parent / "run.log"
    with open(log_path, "wb") as log:
        run = subprocess.Popen([str(FRONTDESK), "run", "--sandbox", "--handler", f"{sys.executable} mybot.py",
                                "--handlers", "1"], cwd=bot_folder, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        factory = EventFactory(SANDBOX_CHANNEL_SECRET)
        users = [user_id(n) for n in range(3)]
        events = [factory.event("text", user_source(u), text=f"hello {n}") for n, u in enumerate(users)]
        body = factory.body(events)
        url = f"http://{listen}/callback"
        wait_until(lambda: run.poll() is not None or (accepting(listen) and accepting(sandbox_listen)),
                   timeout=60, interval=0.1, message="the receiver and the sandbox listening")
        assert post_webhook(url, SANDBOX_CHANNEL_SECRET, body) == 200
        assert run.poll() is None, log_path.read_text(errors="replace")

        def replies():
            answer = requests.get(f"http://{sandbox_listen}/sandbox/deliveries", timeout=5).json()
            return sorted(m["text"] for d in answer for m in d["messages"]) if len(answer) >= 3 else None

        assert wait_until(replies, timeout=60, interval=0.2) == [f"mybot: hello {n}" for n in range(3)]

        # every process says what it is: `ps` shows the role, the log names it
        status = subprocess.run([str(FRONTDESK), "status", "--json"], cwd=bot_folder, env=env,
                                capture_output=True, text=True, timeout=30)
        processes = json.loads(status.stdout)["processes"]
        (supervisor,) = [doc for name, doc in processes.items() if name.startswith("run:")]
        (dispatcher,) = [doc for name, doc in processes.items() if name.startswith("dispatcher:")]
        for role in ("receiver", "dispatcher", "sandbox", "statuspage"):
            assert f"-m frontdesk.{role}" in _cmdline(supervisor["services"][role]["pid"])
        assert "-m frontdesk.ratelimiter" in _cmdline(dispatcher["ratelimiter"]["pid"])
        assert "frontdesk run" in _cmdline(run.pid)
    finally:
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=60) == 0
    log_text = log_path.read_text(errors="replace")
    for logger in ("frontdesk.run", "frontdesk.receiver", "frontdesk.dispatcher", "frontdesk.ratelimiter",
                   "frontdesk.sandbox", "frontdesk.statuspage"):
        assert f" {logger}[" in log_text, logger
    # what the system left in the bot's folder is ignored by the .gitignore we ship
    assert (bot_folder / "frontdesk.db").exists()
    untracked = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=bot_folder,
                               capture_output=True, text=True, check=True, timeout=30).stdout.split("\n")
    assert sorted(line[3:] for line in untracked if line) == sorted([".gitignore", *BOT_FILES])


# --- arrows follow the data ----------------------------------------------------------------------

ALLOWED_ARROWS = {   # room -> the rooms it may import (README, "Layout")
    "frontdesk.protocol": set(),
    "frontdesk.store": {"frontdesk.protocol"},
    "frontdesk.receiver": {"frontdesk.protocol", "frontdesk.store"},
    "frontdesk.dispatcher": {"frontdesk.protocol", "frontdesk.store"},
    "frontdesk.ratelimiter": {"frontdesk.protocol", "frontdesk.store"},
    "frontdesk.handlers": {"frontdesk.protocol", "frontdesk"},   # examples use the public `from frontdesk import Bot`
    "frontdesk.sandbox": {"frontdesk.protocol"},
}


def imported_rooms(folder: Path) -> set[str]:
    """The frontdesk rooms imported anywhere under folder (`frontdesk` alone: the root package)."""
    import ast

    rooms = set()
    for source in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level \
                else [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            rooms.update(".".join(name.split(".")[:2]) for name in names
                         if name == "frontdesk" or name.startswith("frontdesk."))
    return rooms


@pytest.mark.parametrize("room", sorted(ALLOWED_ARROWS))
def test_a_room_imports_only_what_the_data_flow_allows(room):
    rooms = imported_rooms(package_folders()[room]) - {room}
    assert rooms <= ALLOWED_ARROWS[room], rooms - ALLOWED_ARROWS[room]


def test_nothing_but_the_command_imports_bench():
    for room, folder in package_folders().items():
        if room not in ("frontdesk", "frontdesk.bench"):
            assert "frontdesk.bench" not in imported_rooms(folder), room
