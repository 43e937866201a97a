"""Settings: flag > environment > file > default; clear errors naming the key, never a secret;
contradictory combinations refused naming both keys; a renamed key still read, with a warning."""
import logging

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


# --- combinations (CEILINGS) ---------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    ({"handler_outbound_max_bytes": 100, "max_frame_bytes": 1000},
     "max_frame_bytes=1000 (from command line) is above handler_outbound_max_bytes=100 (from command line): "
     "the dispatcher must be able to hold one whole frame"),
    ({"max_body_bytes": 2 << 20, "max_frame_bytes": 2 << 20},
     "max_body_bytes=2097152 (from command line) is above max_frame_bytes=2097152 - 1024 (from command line)"),
    ({"content_max_bytes": 20_000_000},
     "content_max_bytes=20000000 (from command line) is above max_frame_bytes=16777216 - 1024 (from default)"),
    ({"handlers_min": 5, "handlers_max": 4},
     "handlers_min=5 (from command line) is above handlers_max=4 (from command line)"),
    ({"retry_backoff_s": 30},
     "retry_backoff_s=30.0 (from command line) is above retry_backoff_max_s=300.0 (from default)"),
])
def test_a_contradictory_combination_is_refused_naming_both_keys(flags, message):
    if "retry_backoff_s" in flags:
        flags = {**flags, "retry_backoff_s": 301}
        message = message.replace("30.0", "301.0")
    with pytest.raises(ConfigError) as caught:
        load(flags, environ={})
    assert message in str(caught.value)


@pytest.mark.parametrize("flags", [
    {"handler_outbound_max_bytes": 4096, "max_frame_bytes": 4096},
    {"max_body_bytes": (2 << 20) - 1024, "max_frame_bytes": 2 << 20},
    {"content_max_bytes": (16 << 20) - 1024},
    {"handlers_min": 4, "handlers_max": 4},
    {"retry_backoff_s": 300},
])
def test_a_combination_at_its_ceiling_is_accepted(flags):
    settings = load(flags, environ={})
    assert all(getattr(settings, name) == int(value) for name, value in flags.items())


def test_the_defaults_keep_every_ceiling():
    settings = load(environ={})
    for ceiling in config.CEILINGS:
        assert getattr(settings, ceiling.low) <= getattr(settings, ceiling.high) - ceiling.room, ceiling
        assert settings.source(ceiling.low) == "default"


def test_payload_limits_left_at_their_defaults_follow_a_smaller_frame():
    settings = load({"max_frame_bytes": 1 << 17}, environ={})
    assert settings.max_body_bytes == settings.content_max_bytes == (1 << 17) - 1024
    assert settings.source("max_body_bytes") == "default, lowered to max_frame_bytes - 1024"


def test_a_given_payload_limit_does_not_follow_the_frame():
    with pytest.raises(ConfigError, match=r"max_body_bytes=1048576 \(from environment FRONTDESK_MAX_BODY_BYTES\)"):
        load({"max_frame_bytes": 1 << 17}, environ={"FRONTDESK_MAX_BODY_BYTES": str(1 << 20)})


def test_a_frame_too_small_for_any_payload_is_refused_even_for_defaults():
    with pytest.raises(ConfigError, match=r"max_body_bytes=1048576 \(from default\) is above max_frame_bytes=1000"):
        load({"max_frame_bytes": 1000}, environ={})


def test_the_first_broken_ceiling_is_named_when_several_are():
    with pytest.raises(ConfigError, match="^handlers_min=9"):
        load({"handlers_min": 9, "handlers_max": 2, "retry_backoff_s": 999}, environ={})


# --- a renamed key -------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["flag", "environment", "file"])
def test_a_renamed_key_still_sets_the_new_one_and_is_reported(tmp_path, where):
    flags, environ, path = {}, {}, None
    if where == "flag":
        flags = {"receiver_channel_timeout_s": "7"}
    elif where == "environment":
        environ = {"FRONTDESK_RECEIVER_CHANNEL_TIMEOUT_S": "7"}
    else:
        path = write(tmp_path, "receiver_channel_timeout_s = 7\n")
    settings = load(flags, environ=environ, config_file=path)
    assert settings.receiver_idle_timeout_s == 7
    assert [old for old, _ in settings.deprecations] == ["receiver_channel_timeout_s"]
    assert not hasattr(settings, "receiver_channel_timeout_s")


def test_the_new_key_wins_over_the_old_one_under_the_same_source():
    settings = load(environ={"FRONTDESK_RECEIVER_CHANNEL_TIMEOUT_S": "7", "FRONTDESK_RECEIVER_IDLE_TIMEOUT_S": "9"})
    assert settings.receiver_idle_timeout_s == 9 and settings.deprecations == ()


def test_an_old_key_given_higher_up_beats_a_new_key_lower_down(tmp_path):
    path = write(tmp_path, "receiver_idle_timeout_s = 9\n")
    settings = load(environ={"FRONTDESK_RECEIVER_CHANNEL_TIMEOUT_S": "7"}, config_file=path)
    assert settings.receiver_idle_timeout_s == 7


def test_a_child_given_both_names_reads_the_new_one_and_warns_of_nothing():
    parent = load({"receiver_channel_timeout_s": "7"}, environ={})
    child = load(environ={"FRONTDESK_RECEIVER_CHANNEL_TIMEOUT_S": "3", **parent.to_environ()})
    assert child.receiver_idle_timeout_s == 7 and child.deprecations == ()


def test_the_warning_names_the_new_key(caplog):
    settings = load(environ={"FRONTDESK_RECEIVER_CHANNEL_TIMEOUT_S": "7"})
    with caplog.at_level(logging.WARNING, logger="frontdesk.config"):
        settings.log_deprecations()
    assert caplog.messages == ["event=setting_renamed old=receiver_channel_timeout_s new=receiver_idle_timeout_s "
                               "source='environment FRONTDESK_RECEIVER_CHANNEL_TIMEOUT_S'"]


def test_every_renamed_key_points_at_a_knob_and_is_none_itself():
    assert set(config.RENAMED.values()) <= set(config.KNOBS_BY_NAME)
    assert not set(config.RENAMED) & set(config.KNOBS_BY_NAME)


# --- typed attributes ----------------------------------------------------------------------------

def test_every_knob_is_a_declared_attribute_of_its_type():
    declared = config.Settings.__annotations__
    assert set(config.KNOBS_BY_NAME) <= set(declared)
    settings = load(environ={})
    for knob in config.KNOBS:
        value = getattr(settings, knob.name)
        if knob.type in (str, int, float, bool):
            assert declared[knob.name] == knob.type.__name__ and type(value) is knob.type, knob.name
