"""The `frontdesk` command's configuration errors and warnings, as a user sees them on stderr
(the settings' rules themselves: tests/unit/test_config.py)."""
import subprocess
import sys


def run_cli(*args, env_extra=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "frontdesk", *args], capture_output=True, text=True,
                          timeout=30, cwd=cwd, env={"PATH": "/usr/bin:/bin", **(env_extra or {})})


def test_cli_unknown_set_key_and_bad_value_are_clear(tmp_path):
    done = run_cli("check-handler", "--set", "no_such=1", "--", "true", cwd=tmp_path)
    assert done.returncode == 2 and "unknown setting 'no_such'" in done.stderr
    done = run_cli("check-handler", "--set", "handlers", "--", "true", cwd=tmp_path)
    assert done.returncode == 2 and "expected KEY=VALUE" in done.stderr
    done = run_cli("check-handler", "--set", "max_frame_bytes=tiny", "--", "true", cwd=tmp_path)
    assert done.returncode == 2 and "max_frame_bytes (from command line): invalid value 'tiny'" in done.stderr
    assert "Traceback" not in done.stderr
