"""`frontdesk --help` and every subcommand's --help work as real commands."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from frontdesk.cli import COMMANDS


def frontdesk(*args):
    return subprocess.run([sys.executable, "-m", "frontdesk", *args], capture_output=True, text=True,
                          timeout=30)


def test_top_level_help_lists_the_public_subcommands():
    done = frontdesk("--help")
    assert done.returncode == 0
    for name in ("run", "receiver", "dispatcher", "sandbox", "bench", "check-handler", "status"):
        assert name in done.stdout


@pytest.mark.parametrize("name", list(COMMANDS))
def test_subcommand_help(name):
    done = frontdesk(name, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: frontdesk {name}")
    assert "--set KEY=VALUE" in done.stdout


def test_console_script_is_installed():
    script = shutil.which("frontdesk", path=str(Path(sys.executable).parent))
    assert script, "the frontdesk console script is not installed next to this interpreter"
    done = subprocess.run([script, "check-handler", "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "-- CMD [ARGS...]" in done.stdout


def test_output_into_a_closed_pipe_is_no_traceback():
    """`frontdesk config | head`: the reader is gone before the output is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "frontdesk", "config", "--markdown"],
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=30)
    finally:
        os.close(write_end)
    assert done.returncode == 1 and done.stderr == ""


def test_readme_configuration_reference_is_the_commands_output():
    table = frontdesk("config", "--markdown").stdout.strip()
    assert table and table in (Path(__file__).resolve().parent.parent / "README.md").read_text()
