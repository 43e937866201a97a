"""MongoDB URLs shown in logs and output: passwords masked, whatever the URL (no server needed)."""
from __future__ import annotations

import pytest

from frontdesk.store import StoreError, open_store
from frontdesk.store.mongo_url import redact_url


@pytest.mark.parametrize("url, shown", [
    ("mongodb://u:secret@h1:27017,h2:27017/db?replicaSet=rs0", "mongodb://u:***@h1:27017,h2:27017/db?replicaSet=rs0"),
    ("mongodb://u:secret@h1,h2,h3", "mongodb://u:***@h1,h2,h3"),
    ("mongodb://u:p%40ss@h1?replicaSet=rs0", "mongodb://u:***@h1?replicaSet=rs0"),
    ("mongodb+srv://u:secret@cluster.example/db", "mongodb+srv://u:***@cluster.example/db"),
    ("mongodb://u:secret@[::1]:27017/db", "mongodb://u:***@[::1]:27017/db"),
    ("mongodb://user@h1/db", "mongodb://user@h1/db"),
    ("mongodb://h1:27017/db", "mongodb://h1:27017/db"),
    ("mongodb://h1/db?tlsCertificateKeyFilePassword=secret&replicaSet=rs0",
     "mongodb://h1/db?tlsCertificateKeyFilePassword=***&replicaSet=rs0"),
    ("mongodb://h1/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:secret",
     "mongodb://h1/?authMechanism=MONGODB-AWS&authMechanismProperties=***"),
    ("mongodb://u:secret@h1:notaport,h2/db", "mongodb://u:***@h1:notaport,h2/db"),
    ("not a url", "not a url"),
])
def test_redact_url_masks_the_password_and_secret_options(url, shown):
    assert redact_url(url) == shown


def test_a_replica_set_url_with_a_password_is_a_clear_store_error_not_a_crash():
    """urlsplit(...).port raised ValueError on several hosts: every process died with a traceback."""
    url = "mongodb://u:secret@127.0.0.1:1,127.0.0.1:2/db?replicaSet=rs0&serverSelectionTimeoutMS=200"
    with pytest.raises(StoreError) as raised:
        open_store(url)
    message = str(raised.value)
    assert "cannot reach MongoDB" in message and "u:***@127.0.0.1:1,127.0.0.1:2" in message
    assert "secret" not in message


def test_a_malformed_host_list_is_a_clear_store_error():
    with pytest.raises(StoreError, match="bad MongoDB URL") as raised:
        open_store("mongodb://u:secret@:bad:/db")
    assert "secret" not in str(raised.value)
