"""The shared rate budget's arithmetic (ratelimiter/shared_budget.py), in-process: a slice's
tokens and their expiry, and how much an endpoint asks to lease."""
from __future__ import annotations

import pytest

from frontdesk.ratelimiter.shared_budget import LATE_S, EndpointBudget, Slice


def test_a_slice_spends_its_tokens_at_the_rate_and_expires_those_left_too_late():
    piece = Slice(start=100.0, rate=200.0, tokens=20)
    assert piece.due() == 100.0
    piece.used = 4
    assert piece.due() == pytest.approx(100.02)                  # token i at start + i/rate
    assert piece.skip_late(100.02 + LATE_S) == 0                 # late, but within LATE_S
    assert piece.skip_late(100.05 + LATE_S) == 6 and piece.used == 10
    assert piece.skip_late(200.0) == 10 and piece.used == 20     # the slice has passed


def test_an_endpoint_asks_for_what_it_will_send_in_a_slice_and_no_more_than_a_slice():
    budget = EndpointBudget("reply", 2000.0)                      # a slice: 100 ms, 200 tokens
    assert budget.wanted(0, now=10.0) == 0                        # idle: reserves nothing
    assert budget.wanted(1, now=10.0) == 1                        # a lone call: one token
    budget.sent_since_ask = 30                                    # then 30 calls in 0.1 s: 300/s
    assert budget.wanted(1, now=10.1) == 15                       # pace (half-weighted) x 100 ms
    assert budget.wanted(5000, now=10.2) == 200                   # a backlog: a whole slice
    budget.slices.append(Slice(0.0, 2000.0, 100))
    assert budget.wanted(60, now=10.3) == 0                       # leased tokens count first
    budget.slices.append(Slice(0.05, 2000.0, 100))
    assert budget.wanted(5000, now=10.4) == 0                     # one slice ahead at most
    hourly = EndpointBudget("broadcast", 60 / 3600)
    assert hourly.wanted(3, now=10.0) == 1                        # a slice is at least one call
