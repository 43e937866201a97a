"""Settings: flag > environment > file > default; clear errors naming the key, never a secret."""
import subprocess
import sys

import pytest

from frontdesk.protocol import config
from frontdesk.protocol.config import ConfigError, load


def write(tmp_path, text: str) -> str:
    path = tmp_path / "frontdesk.toml"
    path.write_text(text)
    return str(path)


def test_precedence_flag_over_env_over_file_over_default(tmp_path):
    path = write(tmp_path, 'handlers = 3\nlisten = "127.0.0.1:9000"\nstore = "sqlite:///file.db"\n')
    env = {"FRONTDESK_HANDLERS": "5", "FRONTDESK_LISTEN": "127.0.0.1:9100"}
    settings = load({"handlers": "7"}, environ=env, config_file=path)
    assert (settings.handlers, settings.source("handlers")) == (7, "command line")
    assert (settings.listen, settings.source("listen")) == ("127.0.0.1:9100", "environment FRONTDESK_LISTEN")
    assert (settings.store, settings.source("store")) == ("sqlite:///file.db", path)
    assert (settings.max_attempts, settings.source("max_attempts")) == (5, "default")


def test_config_file_from_environment_and_frontdesk_table(tmp_path):
    path = write(tmp_path, '[frontdesk]\nbatching = false\nrate_limits = {reply = "10/s"}\n')
    settings = load(environ={"FRONTDESK_CONFIG": path})
    assert settings.batching is False
    assert settings.rate_limits == {"reply": (10.0, 1.0)}


@pytest.mark.parametrize("text, message", [
    ('no_such_knob = 1\n', "unknown setting(s): no_such_knob"),
    ('handlers = "many"\n', "handlers (from {path}): invalid value 'many'"),
    ('handlers = 2.5\n', "handlers (from {path}): invalid value 2.5: expected a whole number"),
    ('handlers = -1\n', "handlers (from {path}): must be at least 0"),
    ('batching = "perhaps"\n', "batching (from {path}): invalid value 'perhaps': expected true or false"),
    ('rate_limits = 5\n', "rate_limits (from {path}): invalid value 5: expected a string"),
    ('rate_limits = "reply=fast"\n', "is not ENDPOINT=COUNT/s|m|h"),
    ('store = 5\n', "store (from {path}): invalid value 5: expected a string, got int"),
    ('handlers = \n', "is not valid TOML"),
])
def test_bad_file_values_name_the_key_and_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(environ={}, config_file=path)
    assert message.format(path=path) in str(caught.value)


def test_missing_explicit_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(environ={}, config_file=str(tmp_path / "absent.toml"))


def test_wrong_type_from_environment():
    with pytest.raises(ConfigError, match=r"event_deadline_s \(from environment FRONTDESK_EVENT_DEADLINE_S\)"):
        load(environ={"FRONTDESK_EVENT_DEADLINE_S": "soon"})


def test_unknown_flag():
    with pytest.raises(ConfigError, match="unknown setting"):
        load({"bogus": 1}, environ={})


def test_missing_secrets_are_named_without_values():
    settings = load(environ={"LINE_CHANNEL_SECRET": "s3cr3t-value"})
    with pytest.raises(ConfigError) as caught:
        settings.require_secrets("channel_secret", "channel_access_token")
    text = str(caught.value)
    assert "channel_access_token (env LINE_CHANNEL_ACCESS_TOKEN)" in text
    assert "channel_secret" not in text and "s3cr3t-value" not in text


def test_secret_never_in_error_text_or_public_view(tmp_path):
    path = write(tmp_path, 'channel_access_token = 123456789\n')  # wrong type: a number
    with pytest.raises(ConfigError) as caught:
        load(environ={}, config_file=path)
    assert "channel_access_token" in str(caught.value) and "123456789" not in str(caught.value)
    settings = load(environ={"LINE_CHANNEL_ACCESS_TOKEN": "tok-abc"})
    assert settings.public()["channel_access_token"] == "<set>"
    assert "tok-abc" not in repr(settings.public())


def test_to_environ_round_trips_every_knob():
    settings = load({"rate_limits": "reply=10/s,broadcast=60/h", "batching": "false"}, environ={})
    again = load(environ=settings.to_environ())
    for knob in config.KNOBS:
        assert getattr(again, knob.name) == getattr(settings, knob.name), knob.name


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
