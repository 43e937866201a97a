"""The endpoint table (protocol/line_endpoints.py) in-process: what it declares, what derives from
it (validation, request building, journaling, rate rows, the SDK, SPEC.md's table), and that a
new method is one entry (docs/adding-an-api-method.md)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from frontdesk.handlers.sdk import Api, with_table_methods
from frontdesk.protocol import config
from frontdesk.protocol.line_endpoints import (API_METHODS, LIMITS, METHODS, OTHER_ROWS, RETRY_KEY_ENDPOINTS, TABLE,
                                               ApiMethod, ArgsError, EndpointTable, Journal, RateRow, endpoint_name,
                                               limits_text, string)
from frontdesk.ratelimiter.buckets import Scheduler
from frontdesk.ratelimiter.calls import parse_call
from frontdesk.ratelimiter.line_api import build_request

REPO = Path(__file__).resolve().parents[2]
SPEC = (REPO / "protocol" / "SPEC.md").read_text(encoding="utf-8")
LINE_OPERATIONS = {tuple(line.split()[:2]) for line in
                   (REPO / "tests" / "data" / "messaging-api-operations.txt").read_text().splitlines()
                   if line and not line.startswith("#")}
TEXT = [{"type": "text", "text": "hi"}]
LEAVE_GROUP = ApiMethod("leave_group", "POST /v2/bot/group/{groupId}/leave", Journal.ONCE)


# --- what the table declares ------------------------------------------------------------------------
@pytest.mark.parametrize("method, path, name", [
    ("POST", "/v2/bot/message/reply", "reply"),
    ("POST", "/v2/bot/message/multicast", "multicast"),
    ("POST", "/v2/bot/message/narrowcast", "narrowcast"),
    ("GET", "/v2/bot/message/reply", "default"),          # another method on a message path
    ("GET", "/v2/bot/profile/U1", "profile"),
    ("GET", "/v2/bot/profile/U1/extra", "default"),
    ("GET", "/v2/bot/message/123/content", "content"),
    ("GET", "/v2/bot/message/123/content/preview", "default"),
    ("POST", "/v2/bot/richmenu", "richmenu_create"),
    ("DELETE", "/v2/bot/richmenu/richmenu-1", "richmenu_delete"),
    ("GET", "/v2/bot/richmenu/richmenu-1", "default"),
    ("DELETE", "/v2/bot/richmenu/alias/a", "richmenu_alias_delete"),
    ("POST", "/v2/bot/richmenu/batch", "richmenu_batch"),
    ("POST", "/v2/bot/channel/webhook/test", "webhook_test"),
    ("GET", "/v2/bot/message/quota", "default"),
])
def test_each_request_counts_against_lines_row_for_it(method, path, name):
    assert endpoint_name(method, path) == name


def test_a_literal_segment_wins_over_a_field_of_the_same_length():
    table = EndpointTable(METHODS, (RateRow("one", "GET", "/v2/bot/x/{id}", (1, 1.0)),
                                    RateRow("literal", "GET", "/v2/bot/x/list", (2, 1.0))))
    assert table.endpoint_name("GET", "/v2/bot/x/list") == "literal"
    assert table.endpoint_name("GET", "/v2/bot/x/7") == "one"


def test_the_rows_keep_lines_figures_in_the_order_of_the_settings_default():
    assert list(LIMITS) == ["reply", "push", "multicast", "broadcast", "narrowcast", "profile", "content",
                            "loading", "richmenu_create", "richmenu_delete", "richmenu_alias_delete", "richmenu_batch",
                            "webhook_test", "default"]
    assert LIMITS["multicast"] == (200, 1.0) and LIMITS["broadcast"] == (60, 3600.0)
    assert LIMITS["richmenu_batch"] == (3, 3600.0) and LIMITS["default"] == (2000, 1.0)
    assert limits_text().startswith("reply=2000/s,push=2000/s,multicast=200/s,broadcast=60/h")


def test_every_request_the_table_names_is_one_of_lines_operations():
    requests = [(m.http_method, m.path) for m in METHODS if m.request] + [(r.http_method, r.path) for r in OTHER_ROWS]
    assert [request for request in requests if request not in LINE_OPERATIONS] == []


def test_the_retry_key_rows_are_the_methods_whose_rule_is_a_retry_key():
    assert RETRY_KEY_ENDPOINTS == {"push", "multicast", "broadcast", "narrowcast"}
    assert RETRY_KEY_ENDPOINTS == {m.name for m in METHODS if m.journal is Journal.RETRY_KEY}
    assert TABLE.takes_retry_key("POST", "push") and not TABLE.takes_retry_key("GET", "push")
    assert not TABLE.takes_retry_key("POST", "reply")


@pytest.mark.parametrize("method, args, journaled", [
    ("reply", {}, True), ("push", {}, True), ("multicast", {}, True), ("broadcast", {}, True),
    ("narrowcast", {}, True), ("profile", {}, False), ("content", {}, False),
    ("call", {"method": "GET"}, False), ("call", {"method": "POST"}, True), ("call", {"method": "DELETE"}, True),
    ("user_get", {}, False), ("user_set_data", {}, False), ("teleport", {}, False),
])
def test_calls_with_effects_are_journaled_and_reads_are_not(method, args, journaled):
    assert TABLE.journaled(method, args) is journaled


def test_only_a_reply_carries_a_single_use_token():
    assert [m.name for m in METHODS if TABLE.uses_reply_token(m.name)] == ["reply"]
    assert not TABLE.uses_reply_token("recovered")


def test_the_dispatchers_list_is_the_tables_and_a_method_has_one_name():
    assert API_METHODS == {"reply", "push", "multicast", "broadcast", "narrowcast", "profile", "content", "loading",
                           "quota", "quota_consumption", "webhook_endpoint", "group_member_count",
                           "room_member_count", "mark_as_read", "call", "user_get", "user_set_data"}
    with pytest.raises(ValueError, match="one name"):
        EndpointTable(METHODS + (ApiMethod("push", None, Journal.ONCE),))


def test_the_rate_limiter_has_a_bucket_per_row_at_lines_figure_unless_set():
    settings = config.load({"rate_limits": "push=1000/s"}, environ={})
    scheduler = Scheduler(settings.rate_limits, clock=lambda: 0.0)
    for name, (count, period) in LIMITS.items():
        expected = 1000.0 if name == "push" else count / period
        assert scheduler.queue_for(name).bucket.rate == pytest.approx(expected)
    assert scheduler.queue_for("richmenu_batch").bucket.rate == pytest.approx(3 / 3600)


# --- the checks and the requests built from the table ----------------------------------------------
@pytest.mark.parametrize("method, args, expected", [
    ("push", {"to": "U1", "messages": []}, "push: `messages` must be a list of 1 to 5"),
    ("push", {"to": "U1", "messages": ["text"]}, "push: every entry of `messages` must be a message object"),
    ("push", {"messages": TEXT}, "push: `to` must be a non-empty string"),
    ("reply", {"messages": TEXT}, "reply: `replyToken` must be a non-empty string"),
    ("multicast", {"to": [], "messages": TEXT}, "multicast: `to` must be a list of 1 to 500"),
    ("multicast", {"to": ["U1", ""], "messages": TEXT}, "multicast: `to` must be a list of 1 to 500"),
    ("broadcast", {"messages": TEXT * 6}, "broadcast: `messages` must be a list of 1 to 5"),
    ("profile", {"userId": "a/b"}, "profile: `userId` is not a valid id"),
    ("profile", {"userId": "U" * 201}, "profile: `userId` is not a valid id"),
    ("profile", {}, "profile: `userId` must be a non-empty string"),
    ("content", {"messageId": 5}, "content: `messageId` must be a non-empty string"),
    ("call", {"method": "PATCH", "path": "/v2/bot/info"}, "call: `method` must be one of"),
    ("call", {"method": "GET", "path": "/v1/../x"}, "call: `path` must start with /v2/"),
    ("call", {"method": "GET"}, "call: `path` must be a non-empty string"),
    ("call", {"method": "GET", "path": "/v2/bot/info", "query": "a=1"}, "call: `query` must be a map"),
    ("teleport", {}, "unknown API method 'teleport'"),
    ("user_get", {}, "unknown API method 'user_get'"),      # the store's: no LINE request
])
def test_bad_arguments_get_an_error_naming_them(method, args, expected):
    with pytest.raises(ArgsError) as refused:
        build_request(method, args, None)
    assert expected in str(refused.value)


@pytest.mark.parametrize("method, args, expected", [
    ("user_get", {}, "user_get: `userId` must be a non-empty string"),
    ("user_set_data", {"userId": "U1", "data": 3}, "user_set_data: `data` must be a map"),
    ("user_set_data", {"data": {}}, "user_set_data: `userId` must be a non-empty string"),
])
def test_the_store_methods_args_are_checked_by_their_entries(method, args, expected):
    with pytest.raises(ArgsError, match=re.escape(expected)):
        TABLE.method(method).check(args)


def test_a_message_method_sends_its_args_as_the_body_with_a_retry_key_only_where_line_takes_one():
    push = build_request("push", {"to": "U1", "messages": TEXT, "notificationDisabled": True}, "key")
    assert (push.method, push.path, push.endpoint, push.retry_key) == ("POST", "/v2/bot/message/push", "push", "key")
    assert push.body == {"to": "U1", "messages": TEXT, "notificationDisabled": True}
    reply = build_request("reply", {"replyToken": "t", "messages": TEXT}, "key")
    assert reply.retry_key is None and reply.endpoint == "reply"


def test_a_read_puts_its_id_into_the_path_and_sends_no_body():
    profile = build_request("profile", {"userId": "U 1"}, "key")
    assert (profile.method, profile.path, profile.body, profile.retry_key) == ("GET", "/v2/bot/profile/U%201", None,
                                                                               None)
    content = build_request("content", {"messageId": "42"}, None)
    assert content.path == "/v2/bot/message/42/content" and content.data_api and content.endpoint == "content"


def test_a_generic_call_gets_a_retry_key_only_as_a_post_to_a_retry_key_row():
    post = build_request("call", {"method": "POST", "path": "/v2/bot/message/push", "body": {}}, "key")
    assert post.retry_key == "key" and post.endpoint == "push"
    assert build_request("call", {"method": "POST", "path": "/v2/bot/richmenu", "body": {}}, "key").retry_key is None
    batch = build_request("call", {"method": "POST", "path": "/v2/bot/richmenu/batch", "body": {}}, None)
    assert batch.endpoint == "richmenu_batch"


# --- a new method is one entry ------------------------------------------------------------------------
def test_adding_a_method_is_one_entry_validation_requests_journal_buckets_and_the_sdk_follow():
    table = EndpointTable(METHODS + (LEAVE_GROUP,))
    assert "leave_group" in table.names and "leave_group" not in API_METHODS
    call = parse_call([{"event_id": "ev", "call_no": 1, "method": "leave_group", "context": {}},
                       {"groupId": "C1"}], table)
    assert call.fingerprint is not None                   # journaled: it has effects
    assert table.journaled("leave_group", {"groupId": "C1"})
    request = build_request("leave_group", {"groupId": "C1"}, "key", table)
    assert (request.method, request.path, request.body, request.retry_key) == \
        ("POST", "/v2/bot/group/C1/leave", {}, None)      # the id goes into the path; no retry key at LINE
    assert table.endpoint_name("POST", "/v2/bot/group/C1/leave") == "default"
    with pytest.raises(ArgsError, match="leave_group: `groupId` must be a non-empty string"):
        build_request("leave_group", {}, None, table)

    class TableApi(Api):
        pass
    with_table_methods(TableApi, table)
    session = RecordingSession()
    TableApi(session, "ev").leave_group(groupId="C1")
    assert session.calls == [("leave_group", ["ev", {"groupId": "C1"}])]


def test_a_new_method_with_a_limit_gets_a_row_of_its_own():
    table = EndpointTable(METHODS + (ApiMethod("mark_read", "POST /v2/bot/chat/markAsRead", Journal.ONCE,
                                               (100, 1.0), checks=(string("markAsReadToken"),)),))
    assert table.limits["mark_read"] == (100, 1.0) and list(table.limits)[-1] == "default"
    assert table.endpoint_name("POST", "/v2/bot/chat/markAsRead") == "mark_read"
    assert build_request("mark_read", {"markAsReadToken": "t"}, None, table).body == {"markAsReadToken": "t"}


# --- the SDK ------------------------------------------------------------------------------------------
class RecordingSession:
    """The SDK's session as Api sees it: what it was asked to call."""

    def __init__(self):
        self.calls: list[tuple[str, list]] = []

    def call(self, method: str, params: list):
        self.calls.append((method, params))
        return {}


SDK_SAMPLES = {   # one call of each shorthand
    "reply": lambda api: api.reply("token", "hi"),
    "push": lambda api: api.push("U1", "hi"),
    "multicast": lambda api: api.multicast(["U1"], "hi"),
    "broadcast": lambda api: api.broadcast("hi"),
    "narrowcast": lambda api: api.narrowcast({"messages": TEXT}),
    "profile": lambda api: api.profile("U1"),
    "content": lambda api: api.content("1"),
    "show_loading_animation": lambda api: api.show_loading_animation(chatId="U1", loadingSeconds=20),
    "quota": lambda api: api.quota(),
    "quota_consumption": lambda api: api.quota_consumption(),
    "webhook_endpoint": lambda api: api.webhook_endpoint(),
    "group_member_count": lambda api: api.group_member_count(groupId="C1"),
    "room_member_count": lambda api: api.room_member_count(roomId="R1"),
    "mark_as_read": lambda api: api.mark_as_read(markAsReadToken="t"),
    "call": lambda api: api.call("GET", "/v2/bot/info"),
    "user_get": lambda api: api.user_get("U1"),
    "user_set_data": lambda api: api.user_set_data("U1", {}),
}


def test_the_sdk_has_a_method_for_every_entry_of_the_table_and_each_calls_its_entry():
    assert set(SDK_SAMPLES) == {m.sdk for m in METHODS}
    for method in METHODS:
        session = RecordingSession()
        SDK_SAMPLES[method.sdk](Api(session, "ev"))
        assert [name for name, _ in session.calls] == [method.name]


def test_the_sdks_public_methods_are_the_tables_and_its_two_helpers():
    public = {name for name in dir(Api) if not name.startswith("_")}
    assert public == {m.sdk for m in METHODS} | {"call_method", "progress"}


# --- SPEC.md's table ----------------------------------------------------------------------------------
def spec_rows() -> list[list[str]]:
    """The rows of section 8's table of methods, cell by cell."""
    table = SPEC[SPEC.index("| method | LINE request |"):]
    lines = table[:table.index("\n\n")].splitlines()[2:]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


def spec_request(method: ApiMethod) -> str:
    if method.request is None:
        return "the one its args name" if method.journal is Journal.BY_REQUEST else "none: frontdesk's store"
    return f"`{method.request}`" + (" (data host)" if method.data_api else "")


def test_the_specs_table_of_methods_is_the_endpoint_tables():
    rows = spec_rows()
    assert [row[0].strip("`") for row in rows] == [m.name for m in METHODS]
    for row, method in zip(rows, METHODS):
        assert row[1] == spec_request(method), method.name
        assert row[2] == method.journal.value, method.name
        for name in method.path_fields:
            assert f'"{name}"' in row[3], (method.name, name)


def test_the_spec_explains_each_journal_rule_it_uses():
    legend = SPEC[SPEC.index("The journal column says"):SPEC.index("## 9.")]
    for rule in {m.journal for m in METHODS} | {Journal.ONCE}:
        assert f"**{rule.value}**" in legend
