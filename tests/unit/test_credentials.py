"""How secrets reach a child (protocol/credentials.py, protocol/config.py): sealed descriptors,
read once or handed on unread, and environments that carry none. In-process, milliseconds each."""
from __future__ import annotations

import os
import stat

import pytest

from frontdesk.cli import _flags, build_parser
from frontdesk.protocol.config import ConfigError, load
from frontdesk.protocol.credentials import SealedSecrets, seal, without_secrets

SECRET, TOKEN = "the-channel-secret", "the-access-token"


def closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


@pytest.fixture
def descriptors():
    """Descriptors a test opens, closed after it if still open."""
    opened: list[int] = []
    yield opened
    for fd in opened:
        if not closed(fd):
            os.close(fd)


def test_a_sealed_secret_is_an_unchangeable_file_that_nobody_may_open_again(descriptors):
    fd = seal("channel_secret", SECRET)
    descriptors.append(fd)
    assert os.pread(fd, 100, 0) == SECRET.encode()
    assert stat.S_IMODE(os.fstat(fd).st_mode) == 0   # /proc/<pid>/fd/N: EACCES for its own user
    assert not os.get_inheritable(fd)
    with pytest.raises(PermissionError):
        os.pwrite(fd, b"forged", 0)


def test_a_child_reads_its_secret_from_the_descriptor_and_closes_it(descriptors):
    fd = seal("channel_secret", SECRET + "\n")
    descriptors.append(fd)
    settings = load(environ={"LINE_CHANNEL_SECRET_FD": str(fd)}, config_file=os.devnull)
    assert settings.channel_secret == SECRET
    assert settings.source("channel_secret") == "environment LINE_CHANNEL_SECRET_FD"
    assert closed(fd)


def test_a_secret_kept_unread_stays_a_descriptor_and_is_handed_on_as_it_is(descriptors):
    fd = seal("channel_access_token", TOKEN)
    os.set_inheritable(fd, True)   # as a child inherits it
    descriptors.append(fd)
    settings = load(environ={"LINE_CHANNEL_ACCESS_TOKEN_FD": str(fd)}, config_file=os.devnull,
                    unread_secrets=("channel_access_token",))
    assert settings.channel_access_token == "" and settings.secret_descriptor("channel_access_token") == fd
    assert not os.get_inheritable(fd)   # only a child it is handed to gets it
    settings.require_secrets("channel_access_token")
    assert settings.holds_secrets() and settings.public()["channel_access_token"] == "<set>"
    given = SealedSecrets(settings, ["channel_access_token"]).for_child("channel_access_token")
    assert given.environ == {"LINE_CHANNEL_ACCESS_TOKEN_FD": str(fd)} and given.pass_fds == (fd,)
    assert os.pread(fd, 100, 0) == TOKEN.encode()


def test_secrets_held_as_values_are_sealed_once_and_each_child_gets_only_those_it_is_given(descriptors):
    settings = load(environ={"LINE_CHANNEL_SECRET": SECRET, "LINE_CHANNEL_ACCESS_TOKEN": TOKEN},
                    config_file=os.devnull)
    sealed = SealedSecrets(settings, ["channel_secret", "channel_access_token"])
    receiver, receiver_again = sealed.for_child("channel_secret"), sealed.for_child("channel_secret")
    descriptors.extend(receiver.pass_fds + sealed.for_child("channel_access_token").pass_fds)
    assert receiver == receiver_again   # a restart inherits the same descriptor
    assert set(receiver.environ) == {"LINE_CHANNEL_SECRET_FD"}
    assert os.pread(receiver.pass_fds[0], 100, 0) == SECRET.encode()
    assert sealed.for_child().environ == {} and sealed.for_child().pass_fds == ()
    nothing = SealedSecrets(load(environ={}, config_file=os.devnull), ["channel_secret"])
    assert nothing.for_child("channel_secret").pass_fds == ()


def test_a_childs_environment_carries_no_secret_nor_a_way_to_one():
    environ = {"LINE_CHANNEL_SECRET": SECRET, "LINE_CHANNEL_SECRET_FILE": "/etc/s", "LINE_CHANNEL_SECRET_FD": "5",
               "LINE_CHANNEL_ACCESS_TOKEN": TOKEN, "LINE_CHANNEL_ACCESS_TOKEN_FILE": "/etc/t",
               "LINE_CHANNEL_ACCESS_TOKEN_FD": "6", "CREDENTIALS_DIRECTORY": "/run/credentials/x",
               "PATH": "/usr/bin", "MY_BOT_SETTING": "x"}
    assert without_secrets(environ) == {"PATH": "/usr/bin", "MY_BOT_SETTING": "x"}


def test_settings_for_a_child_leave_out_the_secrets_and_the_file_they_may_have_come_from(tmp_path):
    config = tmp_path / "frontdesk.toml"
    config.write_text(f'channel_secret = "{SECRET}"\nlisten = "127.0.0.1:9000"\n')
    settings = load(environ={"LINE_CHANNEL_ACCESS_TOKEN": TOKEN}, config_file=str(config))
    assert settings.channel_secret == SECRET
    environ = settings.to_environ()
    assert not {SECRET, TOKEN} & set(environ.values())
    child = load(environ=environ)   # FRONTDESK_CONFIG points nowhere: the file is not read again
    assert (child.channel_secret, child.channel_access_token, child.listen) == ("", "", "127.0.0.1:9000")
    assert settings.secrets_environ() == {"LINE_CHANNEL_SECRET": SECRET, "LINE_CHANNEL_ACCESS_TOKEN": TOKEN}


@pytest.mark.parametrize("value, problem", [
    ("seven", "is not the number of a descriptor"),
    ("1", "is not the number of a descriptor"),   # standard output
    ("4095", "descriptor 4095 is not open"),
])
def test_a_bad_descriptor_number_is_a_clear_error(value, problem):
    with pytest.raises(ConfigError, match=f"environment LINE_CHANNEL_SECRET_FD: .*{problem}"):
        load(environ={"LINE_CHANNEL_SECRET_FD": value}, config_file=os.devnull)


def test_a_descriptor_that_cannot_be_read_again_is_a_clear_error_without_its_contents(descriptors):
    read_end, write_end = os.pipe()
    descriptors.extend([read_end, write_end])
    os.write(write_end, SECRET.encode())
    with pytest.raises(ConfigError, match="LINE_CHANNEL_SECRET_FD: cannot read descriptor .* not a pipe") as caught:
        load(environ={"LINE_CHANNEL_SECRET_FD": str(read_end)}, config_file=os.devnull)
    assert SECRET not in str(caught.value)


def test_a_secret_on_the_command_line_is_refused_naming_the_ways_that_keep_it_private():
    args = build_parser().parse_args(["receiver", "--set", f"channel_secret={SECRET}"])
    with pytest.raises(ConfigError) as caught:
        _flags(args)
    text = str(caught.value)
    assert "visible to every user" in text and "LINE_CHANNEL_SECRET_FILE" in text and SECRET not in text
