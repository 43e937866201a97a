"""`frontdesk --help`, the console script and a closed output pipe, as real commands (each
subcommand's --help and the README's configuration table in-process: tests/unit/test_cli.py)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

def frontdesk(*args):
    return subprocess.run([sys.executable, "-m", "frontdesk", *args], capture_output=True, text=True,
                          timeout=30)


def test_top_level_help_lists_the_public_subcommands():
    done = frontdesk("--help")
    assert done.returncode == 0
    for name in ("run", "receiver", "dispatcher", "sandbox", "bench", "check-handler", "status"):
        assert name in done.stdout


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
