"""The sandbox's Messaging API area by area, driven by the official SDK (line-bot-sdk v3) where it
is installed: stateful round trips (rich menus, chats, statistics, webhook settings, coupons) and
LINE's validation errors over plain HTTP."""
from __future__ import annotations

import datetime
import hashlib
import http.server
import json
import struct
import threading
import time
import zlib

import pytest

from frontdesk.protocol.events import signature_ok
from frontdesk.sandbox.webhooks import BOT_USER_ID, EventFactory, group_id, room_id, user_id, user_source
from tests.helpers import free_port, wait_until
from tests.sandbox_harness import AUTH, SECRET, TOKEN, api_session, running_sandbox

TEXT = [{"type": "text", "text": "hello"}]
U1, U2, U3 = user_id(1), user_id(2), user_id(3)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    # rich menu batches are 3 an hour on LINE: raised, so each test may run some
    with running_sandbox(tmp_path_factory.mktemp("api"), listen=f"127.0.0.1:{free_port()}",
                         sandbox_rate_limits="richmenu_batch=100/s") as running:
        yield running


@pytest.fixture
def api(sandbox):
    with api_session(sandbox.url, timeout=10) as call:
        yield call


@pytest.fixture
def line(sandbox):
    """The official SDK's MessagingApi and MessagingApiBlob, pointed at the sandbox."""
    messaging = pytest.importorskip("linebot.v3.messaging")
    client = messaging.ApiClient(messaging.Configuration(host=sandbox.url, access_token=TOKEN))
    yield messaging, messaging.MessagingApi(client), messaging.MessagingApiBlob(client)
    client.close()


def png(width: int, height: int) -> bytes:
    """A valid one-colour PNG of this size (what LINE's image check reads is the IHDR)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + b"\x80\x80\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def rich_menu(m, name="menu"):
    return m.RichMenuRequest(size=m.RichMenuSize(width=2500, height=843), selected=False, name=name,
                             chat_bar_text="Tap", areas=[m.RichMenuArea(
                                 bounds=m.RichMenuBounds(x=0, y=0, width=1250, height=843),
                                 action=m.PostbackAction(data="a=1"))])


def error_of(exc) -> tuple[int, dict]:
    return exc.status, json.loads(exc.body)


# --- rich menus

def test_rich_menu_life_cycle_through_the_sdk(line):
    m, bot, blob = line
    menu_id = bot.create_rich_menu(rich_menu(m)).rich_menu_id
    assert menu_id.startswith("richmenu-")
    assert bot.get_rich_menu(menu_id).chat_bar_text == "Tap"
    assert menu_id in [r.rich_menu_id for r in bot.get_rich_menu_list().richmenus]
    # no image yet: it cannot be applied
    with pytest.raises(m.ApiException) as refused:
        bot.set_default_rich_menu(menu_id)
    assert error_of(refused.value) == (400, {"message": "must upload richmenu image before applying it to user"})
    image = png(2500, 843)
    blob.set_rich_menu_image(menu_id, image, _headers={"Content-Type": "image/png"})
    assert bytes(blob.get_rich_menu_image(menu_id)) == image
    with pytest.raises(m.ApiException) as twice:
        blob.set_rich_menu_image(menu_id, image, _headers={"Content-Type": "image/png"})
    assert error_of(twice.value)[0] == 400
    # default, per user, in bulk
    bot.set_default_rich_menu(menu_id)
    assert bot.get_default_rich_menu_id().rich_menu_id == menu_id
    bot.link_rich_menu_id_to_user(U1, menu_id)
    assert bot.get_rich_menu_id_of_user(U1).rich_menu_id == menu_id
    bot.link_rich_menu_id_to_users(m.RichMenuBulkLinkRequest(rich_menu_id=menu_id, user_ids=[U2, U3]))
    assert bot.get_rich_menu_id_of_user(U3).rich_menu_id == menu_id
    bot.unlink_rich_menu_id_from_users(m.RichMenuBulkUnlinkRequest(user_ids=[U3]))
    bot.unlink_rich_menu_id_from_user(U2)
    for user in (U2, U3):
        with pytest.raises(m.ApiException) as none:
            bot.get_rich_menu_id_of_user(user)
        assert none.value.status == 404
    # aliases
    bot.create_rich_menu_alias(m.CreateRichMenuAliasRequest(rich_menu_alias_id="life-cycle", rich_menu_id=menu_id))
    assert bot.get_rich_menu_alias("life-cycle").rich_menu_id == menu_id
    with pytest.raises(m.ApiException) as conflict:
        bot.create_rich_menu_alias(m.CreateRichMenuAliasRequest(rich_menu_alias_id="life-cycle",
                                                                rich_menu_id=menu_id))
    assert error_of(conflict.value) == (400, {"message": "conflict richmenu alias id"})
    assert "life-cycle" in [a.rich_menu_alias_id for a in bot.get_rich_menu_alias_list().aliases]
    # deleting the menu takes its default, links and aliases with it
    bot.delete_rich_menu(menu_id)
    for call in (lambda: bot.get_rich_menu(menu_id), bot.get_default_rich_menu_id,
                 lambda: bot.get_rich_menu_id_of_user(U1), lambda: bot.get_rich_menu_alias("life-cycle")):
        with pytest.raises(m.ApiException) as gone:
            call()
        assert gone.value.status == 404


def test_rich_menu_alias_update_and_cancel_default(line):
    m, bot, blob = line
    first, second = (bot.create_rich_menu(rich_menu(m, name)).rich_menu_id for name in ("first", "second"))
    for menu_id in (first, second):
        blob.set_rich_menu_image(menu_id, png(2500, 843), _headers={"Content-Type": "image/png"})
    bot.create_rich_menu_alias(m.CreateRichMenuAliasRequest(rich_menu_alias_id="switch", rich_menu_id=first))
    bot.update_rich_menu_alias("switch", m.UpdateRichMenuAliasRequest(rich_menu_id=second))
    assert bot.get_rich_menu_alias("switch").rich_menu_id == second
    bot.delete_rich_menu_alias("switch")
    bot.set_default_rich_menu(first)
    bot.cancel_default_rich_menu()
    with pytest.raises(m.ApiException) as none:
        bot.get_default_rich_menu_id()
    assert none.value.status == 404


def test_rich_menu_batch_moves_links_and_reports_progress(line, api):
    m, bot, blob = line
    old, new = (bot.create_rich_menu(rich_menu(m, name)).rich_menu_id for name in ("old", "new"))
    for menu_id in (old, new):
        blob.set_rich_menu_image(menu_id, png(2500, 843), _headers={"Content-Type": "image/png"})
    users = [user_id(n) for n in range(500, 505)]
    bot.link_rich_menu_id_to_users(m.RichMenuBulkLinkRequest(rich_menu_id=old, user_ids=users))
    batch = {"operations": [{"type": "link", "from": old, "to": new}]}
    assert api("POST", "/v2/bot/richmenu/validate/batch", json=batch).status_code == 200
    accepted = api("POST", "/v2/bot/richmenu/batch", json=batch)
    assert accepted.status_code == 202
    assert {bot.get_rich_menu_id_of_user(u).rich_menu_id for u in users} == {new}
    request_id = accepted.headers["X-Line-Request-Id"]
    phases = []
    wait_until(lambda: phases.append(bot.get_rich_menu_batch_progress(request_id).phase.value)
               or phases[-1] == "succeeded", timeout=10, message="batch succeeded")
    assert set(phases) <= {"ongoing", "succeeded"} and phases == sorted(phases)
    unknown = api("POST", "/v2/bot/richmenu/batch", json={"operations": [{"type": "link", "from": "richmenu-x",
                                                                         "to": new}]})
    assert unknown.status_code == 400 and unknown.json()["details"][0]["property"] == "operations[0].from"


@pytest.mark.parametrize("change, prop, message", [
    ({"size": {"width": 700, "height": 843}}, "size.width", "must be between 800 and 2500"),
    ({"size": {"width": 2500, "height": 2000}}, "size", "width / height must be at least 1.45"),
    ({"chatBarText": "x" * 15}, "chatBarText", "Length must be between 0 and 14"),
    ({"selected": None}, "selected", "must be specified"),
    ({"areas": [{"bounds": {"x": 2000, "y": 0, "width": 1000, "height": 843}, "action": {"type": "message"}}]},
     "areas[0].bounds", "must be inside the rich menu"),
    ({"areas": [{"bounds": {"x": 0, "y": 0, "width": 10, "height": 10}, "action": {"type": "jump"}}]},
     "areas[0].action.type", "Must be one of the following values"),
])
def test_rich_menu_validation_names_the_property(api, change, prop, message):
    menu = {"size": {"width": 2500, "height": 843}, "selected": False, "name": "n", "chatBarText": "Tap",
            "areas": [], **change}
    for path in ("/v2/bot/richmenu/validate", "/v2/bot/richmenu"):
        answer = api("POST", path, json={k: v for k, v in menu.items() if v is not None})
        assert answer.status_code == 400
        [detail] = answer.json()["details"]
        assert detail["property"] == prop and detail["message"].startswith(message)


def test_rich_menu_image_must_match_the_menu_size_and_type(api):
    menu_id = api("POST", "/v2/bot/richmenu", json={"size": {"width": 2500, "height": 843}, "selected": False,
                                                    "name": "n", "chatBarText": "Tap", "areas": []}).json()["richMenuId"]
    wrong_size = api("POST", f"/v2/bot/richmenu/{menu_id}/content", data=png(800, 270),
                     headers={"Content-Type": "image/png"})
    assert wrong_size.status_code == 400 and "2500x843" in wrong_size.json()["message"]
    wrong_type = api("POST", f"/v2/bot/richmenu/{menu_id}/content", data=b"GIF89a",
                     headers={"Content-Type": "image/gif"})
    assert wrong_type.status_code == 415
    assert api("GET", f"/v2/bot/richmenu/{menu_id}/content").status_code == 404


# --- users and chats

def test_followers_are_paged_as_line_pages_them(line):
    m, bot, _ = line
    first = bot.get_followers()
    assert len(first.user_ids) == 300 and first.next
    everyone = list(first.user_ids)
    start = first.next
    while start:
        page = bot.get_followers(start=start, limit=1000)
        everyone += page.user_ids
        start = page.next
    assert len(everyone) == len(set(everyone)) == 1000 and everyone[:2] == [user_id(0), user_id(1)]
    with pytest.raises(m.ApiException) as bad:
        bot.get_followers(start="not-a-token")
    assert bad.value.status == 400


def test_group_and_room_members_counts_and_leaving(line, api):
    m, bot, _ = line
    group = group_id(77)
    count = bot.get_group_member_count(group).count
    members = list(bot.get_group_members_ids(group).member_ids)
    page = bot.get_group_members_ids(group)
    while page.next:
        page = bot.get_group_members_ids(group, start=page.next)
        members += page.member_ids
    assert 2 <= count == len(members) == len(set(members))
    assert bot.get_group_summary(group).group_name == f"Group-{group[-4:]}"
    room = room_id(77)
    assert bot.get_room_member_count(room).count == len(bot.get_room_members_ids(room).member_ids)
    bot.leave_group(group)
    bot.leave_room(room)
    for call in (lambda: bot.get_group_summary(group), lambda: bot.get_group_member_count(group),
                 lambda: bot.leave_group(group), lambda: bot.get_room_members_ids(room),
                 lambda: bot.get_group_member_profile(group, U1)):
        with pytest.raises(m.ApiException) as gone:
            call()
        assert gone.value.status == 404
    assert api("GET", f"/v2/bot/group/{room}/summary").status_code == 404   # a room id is no group


# --- statistics and quota

def test_statistics_and_quota_count_what_was_sent(line, api):
    m, bot, _ = line
    today = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=9)).strftime("%Y%m%d")
    before = {kind: getattr(bot, f"get_number_of_sent_{kind}_messages")(today).success or 0
              for kind in ("push", "multicast")}
    usage = bot.get_message_quota_consumption().total_usage
    bot.push_message(m.PushMessageRequest(to=U1, messages=[m.TextMessage(text="a"), m.TextMessage(text="b")],
                                          custom_aggregation_units=["spring_sale"]))
    bot.multicast(m.MulticastRequest(to=[U1, U2, U3], messages=[m.TextMessage(text="c")]))
    push = bot.get_number_of_sent_push_messages(today)
    assert push.status == "ready" and push.success == before["push"] + 1   # one request, one recipient
    assert bot.get_number_of_sent_multicast_messages(today).success == before["multicast"] + 3
    assert bot.get_message_quota_consumption().total_usage == usage + 4
    assert "spring_sale" in bot.get_aggregation_unit_name_list().custom_aggregation_units
    assert bot.get_aggregation_unit_usage().num_of_custom_aggregation_units >= 1
    tomorrow = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=33)).strftime("%Y%m%d")
    assert bot.get_number_of_sent_reply_messages(tomorrow).status == "unready"
    bad = api("GET", "/v2/bot/message/delivery/push", params={"date": "2024-01-01"})
    assert bad.status_code == 400 and bad.json()["details"][0]["property"] == "date"
    units = api("POST", "/v2/bot/message/push", json={"to": U1, "messages": TEXT,
                                                      "customAggregationUnits": ["a", "b"]})
    assert units.status_code == 400 and units.json()["details"][0]["property"] == "customAggregationUnits"


def test_push_by_phone_number_is_recorded_and_counted(line, sandbox):
    m, bot, _ = line
    today = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=9)).strftime("%Y%m%d")
    before = bot.get_pnp_message_statistics(today).success or 0
    phone = hashlib.sha256(b"+818000001234").hexdigest()
    bot.push_messages_by_phone(m.PnpMessagesRequest(to=phone, messages=[m.TextMessage(text="order shipped")]))
    assert bot.get_pnp_message_statistics(today).success == before + 1
    assert sandbox.deliveries()[-1]["endpoint"] == "pnp" and sandbox.deliveries()[-1]["to"] == [phone]


# --- the channel

class _Receiver(http.server.BaseHTTPRequestHandler):
    """Answers 200 and keeps what it got, as a bot's webhook would."""
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((body, self.headers["X-Line-Signature"]))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_endpoint_set_get_and_test_really_posts(line, api):
    m, bot, _ = line
    assert bot.get_webhook_endpoint().endpoint.endswith("/callback")
    server = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/callback"
        bot.set_webhook_endpoint(m.SetWebhookEndpointRequest(endpoint=url))
        assert bot.get_webhook_endpoint().to_dict() == {"endpoint": url, "active": True}
        result = bot.test_webhook_endpoint(m.TestWebhookEndpointRequest())
        assert (result.success, result.status_code, result.reason) == (True, 200, "OK")
        [(body, signature)] = _Receiver.received
        assert json.loads(body) == {"destination": BOT_USER_ID, "events": []}
        assert signature_ok(SECRET.encode(), body, signature)
    finally:
        server.shutdown()
        server.server_close()
    nobody = bot.test_webhook_endpoint(m.TestWebhookEndpointRequest(endpoint=f"http://127.0.0.1:{free_port()}/x"))
    assert nobody.success is False and nobody.reason == "COULD_NOT_CONNECT"
    plain = api("PUT", "/v2/bot/channel/webhook/endpoint", json={"endpoint": "http://example.com/callback"})
    assert plain.status_code == 400 and plain.json()["details"][0]["property"] == "endpoint"


def test_link_token_read_receipts_and_loading(line, api):
    m, bot, _ = line
    token = bot.issue_link_token(U1).link_token
    assert len(token) >= 20 and token != bot.issue_link_token(U1).link_token
    bot.mark_messages_as_read(m.MarkMessagesAsReadRequest(chat=m.ChatReference(user_id=U1)))
    bot.mark_messages_as_read_by_token(m.MarkMessagesAsReadByTokenRequest(mark_as_read_token="token-1"))
    bot.show_loading_animation(m.ShowLoadingAnimationRequest(chat_id=U1, loading_seconds=10))
    unread = api("POST", "/v2/bot/message/markAsRead", json={"chat": {"userId": "nobody"}})
    assert unread.status_code == 400 and unread.json()["details"] == [
        {"message": "must be a user ID (U followed by 32 hex digits)", "property": "chat.userId"}]
    assert api("POST", "/v2/bot/user/nobody/linkToken").status_code == 400


def test_content_preview_of_images_and_videos_only(line):
    m, _, blob = line
    factory = EventFactory(SECRET)
    image = factory.event("image", user_source(U1))["message"]["id"]
    assert len(bytes(blob.get_message_content_preview(image))) > 0
    text = factory.event("text", user_source(U1))["message"]["id"]
    with pytest.raises(m.ApiException) as none:
        blob.get_message_content_preview(text)
    assert none.value.status == 404
    assert blob.get_message_content_transcoding_by_message_id(image).status == "succeeded"


# --- coupons and membership

def test_coupon_life_cycle(line, api):
    m, bot, _ = line
    now = int(time.time())
    request = m.CouponCreateRequest(
        title="10% off", start_timestamp=now - 60, end_timestamp=now + 3600, max_use_count_per_ticket=1,
        visibility="PUBLIC", timezone="ASIA_TOKYO", acquisition_condition=m.NormalAcquisitionConditionRequest(),
        reward=m.CouponDiscountRewardRequest(price_info=m.DiscountFixedPriceInfoRequest(fixed_amount=100)))
    coupon_id = bot.create_coupon(request).coupon_id
    assert bot.get_coupon_detail(coupon_id).status == "RUNNING"
    assert coupon_id in [c.coupon_id for c in bot.list_coupon(status=["RUNNING"]).items]
    sent = bot.push_message(m.PushMessageRequest(to=U1, messages=[m.CouponMessage(coupon_id=coupon_id,
                                                                                   delivery_tag="spring")]))
    assert len(sent.sent_messages) == 1   # LINE's coupon message is accepted, as a reply is
    bot.close_coupon(coupon_id)
    assert bot.get_coupon_detail(coupon_id).status == "CLOSED"
    assert coupon_id not in [c.coupon_id for c in bot.list_coupon(status=["RUNNING"]).items]
    with pytest.raises(m.ApiException) as closed:
        bot.close_coupon(coupon_id)
    assert closed.value.status == 410
    bad = api("POST", "/v2/bot/coupon", json={"title": "", "startTimestamp": now, "endTimestamp": now - 1,
                                              "maxUseCountPerTicket": 1, "visibility": "SECRET",
                                              "timezone": "ASIA_TOKYO", "acquisitionCondition": {"type": "normal"}})
    assert bad.status_code == 400
    assert {d["property"] for d in bad.json()["details"]} == {"title", "endTimestamp", "visibility"}


def test_membership_plans_subscriptions_and_members(line):
    m, bot, _ = line
    plans = bot.get_membership_list().memberships
    assert [p.membership_id for p in plans] == [1, 2]
    gold = bot.get_joined_membership_users(1, limit=1000).user_ids
    assert len(gold) == plans[0].member_count and gold[0] == user_id(0)
    subscription = bot.get_membership_subscription(user_id(0)).subscriptions[0]
    assert subscription.membership.membership_id == 1 and subscription.user.membership_no == 1
    with pytest.raises(m.ApiException) as none:
        bot.get_membership_subscription(user_id(2))   # the third plan's share: no plan
    assert none.value.status == 404
    with pytest.raises(m.ApiException) as unknown:
        bot.get_joined_membership_users(99)
    assert unknown.value.status == 404


def test_a_channel_has_at_most_1000_aggregation_unit_names():
    """In-process (falcon's test client): 1,000 pushes in a fraction of a second."""
    testing = pytest.importorskip("falcon.testing")
    from frontdesk.protocol import config
    from frontdesk.sandbox.app import create_app
    client = testing.TestClient(create_app(config.load(environ={}), SECRET, TOKEN), headers=AUTH)

    def push(unit: str):
        return client.simulate_post("/v2/bot/message/push",
                                    json={"to": U1, "messages": TEXT, "customAggregationUnits": [unit]})
    assert all(push(f"unit_{n}").status_code == 200 for n in range(1000))
    refused = push("one_too_many")
    assert refused.status_code == 400 and refused.json["details"][0]["property"] == "customAggregationUnits[0]"
    assert push("unit_7").status_code == 200    # a name already in use is fine
    listed = client.simulate_get("/v2/bot/message/aggregation/list", params={"limit": "100"}).json
    assert len(listed["customAggregationUnits"]) == 100 and listed["next"]


def test_bad_webhook_urls_and_oversize_images_are_400_and_413_not_500(api):
    for url in ("http://127.0.0.1:99999/callback", "ftp://127.0.0.1/x", "https://"):
        answer = api("PUT", "/v2/bot/channel/webhook/endpoint", json={"endpoint": url})
        assert answer.status_code == 400 and answer.json()["details"][0]["property"] == "endpoint", url
    menu_id = api("POST", "/v2/bot/richmenu", json={"size": {"width": 2500, "height": 843}, "selected": False,
                                                    "name": "n", "chatBarText": "Tap", "areas": []}).json()["richMenuId"]
    chunks = (b"\0" * 65536 for _ in range(17))   # chunked: no Content-Length to refuse it by
    big = api("POST", f"/v2/bot/richmenu/{menu_id}/content", data=chunks, headers={"Content-Type": "image/png"})
    assert big.status_code == 413
    assert api("GET", f"/v2/bot/room/{group_id(1)}/member/{U1}").status_code == 404   # a group id is no room
