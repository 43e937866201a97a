"""The sandbox serves LINE's Messaging API: at least 90 % of the operations of messaging-api.yml
(tests/data/messaging-api-operations.txt, derived from its paths), and every one it serves answers
in LINE's shape (no 405, no 500, errors as {"message", "details"?}, a UUID request id); and every
operation of channel-access-token.yml (tests/data/channel-access-token-operations.txt), errors as
LINE's {"error", "error_description"?} (or its {"message"} for an unknown signing key)."""
from __future__ import annotations

import pathlib
import re
import uuid

import pytest
import requests

from frontdesk.sandbox.app import served_operations
from frontdesk.sandbox.webhooks import group_id, room_id, user_id
from tests.helpers import free_port
from tests.sandbox_harness import AUTH, running_sandbox

OPERATIONS_FILE = pathlib.Path(__file__).parent / "data" / "messaging-api-operations.txt"
TOKEN_OPERATIONS_FILE = pathlib.Path(__file__).parent / "data" / "channel-access-token-operations.txt"
UUID_FORM = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
SAMPLE_PATH_VALUES = {"userId": user_id(1), "groupId": group_id(1), "roomId": room_id(1),
                      "richMenuId": "richmenu-" + "0" * 32, "richMenuAliasId": "alias-1", "messageId": "1001",
                      "membershipId": "1", "couponId": "COUPON0000000001"}


def line_operations(listed: pathlib.Path = OPERATIONS_FILE) -> list[tuple[str, str, str]]:
    """(method, path, operationId) of every operation LINE publishes (in the Messaging API)."""
    lines = listed.read_text().splitlines()
    return [tuple(line.split()) for line in lines if line and not line.startswith("#")]


def _served(method: str, path: str, served: set[tuple[str, str]]) -> bool:
    """A served template matches the path segment by segment, a {field} matching any segment."""
    segments = path.strip("/").split("/")
    for served_method, template in served:
        parts = template.strip("/").split("/")
        if served_method == method and len(parts) == len(segments) and all(
                part.startswith("{") or part == segment for part, segment in zip(parts, segments)):
            return True
    return False


def test_the_operation_list_is_lines_messaging_api():
    operations = line_operations()
    assert len(operations) == 73 and len({op[2] for op in operations}) == 73
    assert ("POST", "/v2/bot/message/reply", "replyMessage") in operations


def test_at_least_90_percent_of_lines_operations_are_served():
    served = served_operations()
    missing = [op for op in line_operations() if not _served(op[0], op[1], served)]
    coverage = 1 - len(missing) / len(line_operations())
    assert coverage >= 0.9, f"{coverage:.0%} served; missing: {missing}"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    # the webhook test posts to the receiver address: a free port, so it reaches no one
    with running_sandbox(tmp_path_factory.mktemp("coverage"), listen=f"127.0.0.1:{free_port()}") as running:
        yield running


@pytest.mark.parametrize("method, path, operation", line_operations(), ids=lambda v: v if "/" not in v else "")
def test_every_operation_answers_in_lines_shape(sandbox, method, path, operation):
    url = sandbox.url + re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PATH_VALUES[m.group(1)], path)
    body = {} if method in ("POST", "PUT") else None
    answer = requests.request(method, url, json=body, headers=AUTH, timeout=10,
                              params={"date": "20240101", "requestId": str(uuid.uuid4())})
    assert answer.status_code not in (405, 500), (operation, answer.status_code, answer.text)
    assert UUID_FORM.fullmatch(answer.headers["X-Line-Request-Id"])
    if answer.status_code >= 400:
        error = answer.json()
        assert isinstance(error["message"], str) and error["message"]
        assert set(error) <= {"message", "details", "sentMessages"}
        for detail in error.get("details", []):
            assert set(detail) == {"message", "property"}


def test_every_operation_of_the_channel_access_token_api_is_served():
    served = served_operations()
    operations = line_operations(TOKEN_OPERATIONS_FILE)
    assert len(operations) == 8
    assert [op for op in operations if not _served(op[0], op[1], served)] == []


@pytest.mark.parametrize("method, path, operation", line_operations(TOKEN_OPERATIONS_FILE),
                         ids=lambda v: v if "/" not in v else "")
def test_every_token_operation_refuses_an_empty_request_in_lines_shape(sandbox, method, path, operation):
    answer = requests.request(method, sandbox.url + path, timeout=10,
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 400, (operation, answer.status_code, answer.text)
    assert UUID_FORM.fullmatch(answer.headers["X-Line-Request-Id"])
    error = answer.json()
    assert error["error"] == "invalid_request" and set(error) <= {"error", "error_description"}
