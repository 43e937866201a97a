"""The command line in-process: every subcommand's --help, `--set` for known, renamed and secret
keys, and the README's configuration table as `frontdesk config --markdown` prints it."""
from __future__ import annotations

from pathlib import Path

import pytest

from frontdesk.cli import COMMANDS, _flags, build_parser
from frontdesk.protocol.config import ConfigError, markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([name, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: frontdesk {name}") and "--set KEY=VALUE" in out


def test_set_takes_any_key_and_a_renamed_one_under_its_old_name():
    args = build_parser().parse_args(["config", "--set", "handlers=3", "--set", "receiver_channel_timeout_s=7",
                                      "--listen", "127.0.0.1:1"])
    assert _flags(args) == {"listen": "127.0.0.1:1", "handlers": "3", "receiver_channel_timeout_s": "7"}


@pytest.mark.parametrize("item, message", [
    ("no_such=1", "--set: unknown setting 'no_such'"),
    ("handlers", "--set 'handlers': expected KEY=VALUE"),
    ("channel_secret=s3cr3t", "--set channel_secret: a secret on the command line is visible to every user"),
])
def test_set_refuses_unknown_keys_missing_values_and_secrets(item, message):
    args = build_parser().parse_args(["config", "--set", item])
    with pytest.raises(ConfigError) as refused:
        _flags(args)
    assert str(refused.value).startswith(message) and "s3cr3t" not in str(refused.value)


def test_readme_configuration_reference_is_the_commands_output():
    assert markdown_table() in README.read_text()
