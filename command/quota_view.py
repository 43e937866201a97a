"""The month's messages and the webhook check of a rate limiter (ratelimiter/quota_watch.py), in
words: the same lines in `frontdesk status`, `frontdesk top` and the status page."""
from __future__ import annotations

import time

KIND_ORDER = ("reply", "push", "multicast", "narrowcast", "broadcast")


def quota_lines(quota) -> list[str]:
    """A rate limiter's `quota` stats as lines; problems start with an upper-case word."""
    if not isinstance(quota, dict):
        return []
    line = quota.get("line") or {}
    used_by_line = "not read yet" if line.get("used") is None else f"{line['used']:,}"
    limits = []
    if line.get("quota") is not None:
        limits.append(f"LINE's quota {line['quota']:,}")
    if quota.get("budget"):
        limits.append(f"push_budget {quota['budget']:,}")
    left = f"{quota['remaining']:,} left" if quota.get("remaining") is not None else "no limit"
    lines = [f"messages {quota.get('month')} (JST): {quota.get('counted', 0):,} billed by frontdesk's count, "
             f"{used_by_line} by LINE's; {', '.join(limits) or 'no quota set'}: {left}"]
    if quota.get("warning"):
        lines.append(f"WARNING: {quota.get('used', 0):,} messages used, past the warning share of "
                     f"{quota.get('warning_limit')}")
    sent = quota.get("sent") or {}
    expired = quota.get("reply_expired") or {}
    lines.append("sent: " + ", ".join(f"{kind} {sent.get(kind, 0):,}" for kind in KIND_ORDER)
                 + f"; expired replies: {expired.get('push', 0)} pushed, {expired.get('dead_letter', 0)} dead-lettered")
    if line.get("error"):
        lines.append(f"LINE's figures: cannot read ({line['error']})")
    webhook = quota.get("webhook")
    if isinstance(webhook, dict):
        checked = time.strftime("%H:%M:%S", time.localtime(webhook.get("checked_at") or 0))
        lines.append(f"webhook: OK, {webhook.get('endpoint')} (checked {checked})" if webhook.get("ok")
                     else f"WEBHOOK: {webhook.get('problem')} (checked {checked})")
    return lines


def quota_metrics(out, quotas: dict) -> None:
    """The month's messages on /metrics (`out`: protocol/prometheus.py Exposition), per dispatcher's
    rate limiter. Every rate limiter on one store reports the store's month count: take `max` over
    `dispatcher`, not `sum`."""
    quotas = {name: quota for name, quota in quotas.items() if isinstance(quota, dict)}
    out.family("frontdesk_messages_sent_total", "counter",
               "Messages sent this quota month (Japan time) as LINE counts them: recipients per request, a "
               "group push once per member; replies are free; broadcast and narrowcast count 0 (LINE's "
               "figure has them). Starts over each month.",
               [({"dispatcher": name, "kind": kind}, (quota.get("sent") or {}).get(kind, 0))
                for name, quota in quotas.items() for kind in KIND_ORDER])
    out.family("frontdesk_message_quota_remaining", "gauge",
               "Messages left this month: the lower of LINE's quota and push_budget, less the higher of LINE's "
               "consumption and frontdesk's count (absent: no limit).",
               [({"dispatcher": name}, quota["remaining"]) for name, quota in quotas.items()
                if quota.get("remaining") is not None])
    out.family("frontdesk_message_quota_warning", "gauge", "1 once quota_warning_share of the month's limit is used.",
               [({"dispatcher": name}, 1 if quota.get("warning") else 0) for name, quota in quotas.items()])
    out.family("frontdesk_message_quota_line_used", "gauge", "LINE's own consumption figure, as last read.",
               [({"dispatcher": name}, (quota.get("line") or {}).get("used")) for name, quota in quotas.items()
                if (quota.get("line") or {}).get("used") is not None])
    out.family("frontdesk_replies_expired_total", "counter",
               "Replies whose token was too old, by what reply_expiry did (push, dead_letter).",
               [({"dispatcher": name, "action": action}, (quota.get("reply_expired") or {}).get(action, 0))
                for name, quota in quotas.items() for action in ("push", "dead_letter")])
    out.family("frontdesk_webhook_check_ok", "gauge",
               "1 when the last check found the channel's webhook on and at public_url, 0 when not.",
               [({"dispatcher": name}, 1 if quota["webhook"].get("ok") else 0) for name, quota in quotas.items()
                if isinstance(quota.get("webhook"), dict)])
