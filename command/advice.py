"""Tuning advice from measured figures: what to change, said in the operator's words.

`advise(view)` reads a view (command/observe.py) and returns sentences, most urgent first. Each
rule names the figures it rests on, so an operator can check it; a rule that lacks a figure
(no rates yet, no dispatcher) stays silent rather than guess.
"""
from __future__ import annotations

import math

BUSY = 0.9              # handlers this busy have no spare capacity
IDLE = 0.25             # handlers this busy could be fewer
GROWING = 1.10          # arrivals this much above completions: the queue grows
AT_LIMIT = 0.9          # an endpoint this close to its limit is the bottleneck
HOT_KEY_SHARE = 0.3     # one conversation holding this share of the waiting events is hot


def _pct(share: float) -> str:
    return f"{share * 100:.0f} %"


def advise(view: dict) -> list[str]:
    """Sentences for the operator, most urgent first; empty when nothing needs changing."""
    queue = view.get("queue") or {}
    running = [d for d in view.get("dispatchers", []) if d.get("state") == "running" and not d.get("stale")]
    advice = []
    advice += _no_dispatcher(queue, running)
    for dispatcher in running:
        advice += _degraded(dispatcher)
    limited = [e for d in running for e in _endpoints_at_limit(d)]
    advice += [f"rate limiter at its {e['endpoint']} limit ({e['calls_per_s']:.0f} of "
               f"{e['limit_per_s']:.0f} calls/s, {e['queued']} queued): more handlers will not help"
               for e in limited]
    if not limited:
        advice += _pool_size(queue, running)
    advice += _hot_key(queue)
    advice += _throttled(running)
    if queue.get("dead"):
        advice.append(f"{queue['dead']} dead letters: see `frontdesk dead-letters list`, then retry or drop them")
    return advice


def _no_dispatcher(queue: dict, running: list[dict]) -> list[str]:
    if running or not queue.get("pending"):
        return []
    return [f"{queue['pending']} events pending (oldest {queue.get('oldest_pending_s', 0):.0f} s) "
            "and no dispatcher publishing a status: start one (`frontdesk run` or `frontdesk dispatcher`)"]


def _degraded(dispatcher: dict) -> list[str]:
    advice = []
    if dispatcher.get("degraded"):
        advice.append(f"handler pool degraded ({dispatcher['degraded']}): read the handler's log lines; "
                      "more handlers will not help")
    limiter = dispatcher.get("ratelimiter") or {}
    if limiter.get("degraded"):
        advice.append(f"rate limiter degraded ({limiter['degraded']})")
    return advice


def _endpoints_at_limit(dispatcher: dict) -> list[dict]:
    endpoints = (dispatcher.get("ratelimiter") or {}).get("endpoints", [])
    return [e for e in endpoints if e.get("limit_per_s") and
            (e["calls_per_s"] >= AT_LIMIT * e["limit_per_s"] or e.get("queued", 0) >= e["limit_per_s"])]


def _pool_size(queue: dict, running: list[dict]) -> list[str]:
    """Too few handlers (busy, queue growing) or clearly too many (idle, nothing waiting)."""
    arrivals, completions = queue.get("arrivals_per_s"), queue.get("completions_per_s")
    handlers = [h for d in running for h in d["handlers"] if h.get("state") == "ready"]
    if arrivals is None or not handlers:
        return []
    busy = sum(h["busy_share"] for h in handlers) / len(handlers)
    count = len(handlers)
    autoscaled = any(d.get("autoscale") for d in running)
    if busy >= BUSY and (arrivals > GROWING * completions or queue.get("oldest_pending_s", 0) > 5):
        if completions > 0:
            wanted = math.ceil(count * max(arrivals, completions * GROWING) / completions)
        else:
            wanted = count + 1
        growth = arrivals - completions
        grows = f"the queue grows {growth:.0f} events/s" if growth > 0 else \
            f"the oldest event waits {queue.get('oldest_pending_s', 0):.0f} s"
        how = "raise handlers_max" if autoscaled else f"frontdesk scale {wanted}"
        return [f"handlers {_pct(busy)} busy and {grows}: about {wanted} handlers would keep up ({how})"]
    # idle because nothing arrives says nothing about the pool's size: judge it under traffic only
    if count > 1 and completions > 0 and busy <= IDLE and not queue.get("pending") and not autoscaled:
        wanted = max(1, math.ceil(count * busy / 0.7))
        if wanted < count:
            return [f"handlers {_pct(busy)} busy with nothing waiting: {wanted} would do "
                    f"(frontdesk scale {wanted})"]
    return []


def _hot_key(queue: dict) -> list[str]:
    busiest = queue.get("busiest_key")
    if not busiest or busiest["share"] < HOT_KEY_SHARE:
        return []
    return [f"one conversation ({busiest['key']}) holds {_pct(busiest['share'])} of the waiting events "
            f"({busiest['events']}): they go one at a time, in order, so more handlers will not drain it "
            "faster (hot key; a slow handler step for it is the thing to fix)"]


def _throttled(running: list[dict]) -> list[str]:
    advice = []
    for dispatcher in running:
        for e in (dispatcher.get("ratelimiter") or {}).get("endpoints", []):
            if e.get("429s_per_s"):
                advice.append(f"LINE answers 429 on {e['endpoint']} ({e['429s_per_s']:.1f}/s): lower its "
                              f"rate_limits entry (now {e['limit_per_s']:g}/s) or ask LINE for a higher limit")
    return advice
