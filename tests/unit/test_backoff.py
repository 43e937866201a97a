"""The one backoff rule (protocol/backoff.py)."""
from frontdesk.protocol.backoff import doubling_delay


def test_the_first_retry_waits_the_first_delay_and_each_next_one_twice_as_long():
    assert [doubling_delay(0.1, n, 30.0) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.8]


def test_the_delay_never_passes_its_cap():
    assert doubling_delay(1.0, 20, 300.0) == 300.0
    assert doubling_delay(1.0, 10_000, 5.0) == 5.0


def test_an_attempt_below_one_counts_as_the_first():
    assert doubling_delay(0.5, 0, 10.0) == 0.5
    assert doubling_delay(0.5, -3, 10.0) == 0.5
