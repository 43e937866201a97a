"""The month's messages in words (status, top, the status page) and on /metrics (command/quota_view.py)."""
from __future__ import annotations

from frontdesk.quota_view import quota_lines, quota_metrics
from frontdesk.protocol.prometheus import Exposition
from tests.prometheus_text import parse_families

QUOTA = {"month": "2026-12", "sent": {"reply": 40, "push": 12, "multicast": 5}, "counted": 17,
         "line": {"quota": 100, "used": 15, "checked_at": 1.0, "error": None}, "budget": 20, "used": 17,
         "remaining": 3, "warning": True, "warning_limit": "push_budget",
         "webhook": {"ok": False, "endpoint": "https://old.example.com/cb", "active": True,
                     "problem": "the webhook endpoint is https://old.example.com/cb, not public_url x", "checked_at": 1.0},
         "reply_expired": {"push": 2, "dead_letter": 1}}


def test_the_lines_say_both_counts_the_limits_the_warning_and_the_webhook():
    lines = quota_lines(QUOTA)
    assert lines[0] == ("messages 2026-12 (JST): 17 billed by frontdesk's count, 15 by LINE's; "
                        "LINE's quota 100, push_budget 20: 3 left")
    assert lines[1].startswith("WARNING: 17 messages used") and "push_budget" in lines[1]
    assert lines[2] == ("sent: reply 40, push 12, multicast 5, narrowcast 0, broadcast 0; "
                        "expired replies: 2 pushed, 1 dead-lettered")
    assert lines[3].startswith("WEBHOOK: the webhook endpoint is https://old.example.com/cb")
    assert quota_lines(None) == []    # a rate limiter from before the count


def test_the_metrics_carry_each_kind_the_remaining_and_the_checks():
    out = Exposition()
    quota_metrics(out, {"d1": QUOTA, "d2": None})
    families = parse_families(out.text())
    assert 'frontdesk_messages_sent_total{dispatcher="d1",kind="push"} 12' in families["frontdesk_messages_sent_total"]
    assert families["frontdesk_message_quota_remaining"] == ['frontdesk_message_quota_remaining{dispatcher="d1"} 3']
    assert families["frontdesk_message_quota_warning"] == ['frontdesk_message_quota_warning{dispatcher="d1"} 1']
    assert families["frontdesk_webhook_check_ok"] == ['frontdesk_webhook_check_ok{dispatcher="d1"} 0']
    assert 'frontdesk_replies_expired_total{dispatcher="d1",action="dead_letter"} 1' in \
        families["frontdesk_replies_expired_total"]
