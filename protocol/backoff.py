"""The one backoff rule of every retry in frontdesk: the first delay, doubling with each attempt
in a row, up to a cap. Used for a nacked event's next delivery (the store), an API call's next
attempt (the rate limiter) and a crashed process's restart (the supervisors)."""
from __future__ import annotations


def doubling_delay(first_s: float, attempt: int, max_s: float) -> float:
    """The delay before retry number `attempt` (1 for the first retry): `first_s`, doubled for each
    attempt after the first, never above `max_s`. An attempt below 1 counts as the first."""
    doublings = min(max(attempt - 1, 0), 64)   # past 64 every cap is reached; and no float overflow
    return min(first_s * 2 ** doublings, max_s)
