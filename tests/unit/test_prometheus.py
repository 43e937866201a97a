"""Prometheus text, written once (protocol/prometheus.py): escaping, numbers, families and
histograms, the receiver's live registry, and the status page's families from a store sample."""
from __future__ import annotations

import math
import threading

import pytest

from frontdesk.protocol.process import HANDLING_BUCKETS_S
from frontdesk.observe import Sample
from frontdesk.protocol.prometheus import Exposition, Registry, escape_label, labels_text, number
from frontdesk.statuspage import metrics_text
from tests.prometheus_text import parse_families


@pytest.mark.parametrize("value, text", [
    ("plain", "plain"),
    ('say "hi"', 'say \\"hi\\"'),
    ("back\\slash", "back\\\\slash"),
    ("two\nlines", "two\\nlines"),
    (7, "7"),
])
def test_label_values_are_escaped_as_the_format_says(value, text):
    assert escape_label(value) == text


@pytest.mark.parametrize("value, text", [
    (3, "3"),
    (2**60 + 1, "1152921504606846977"),      # exact: no trip through a float
    (2.0, "2"),
    (0.005, "0.005"),
    (3.5, "3.5"),
    (math.inf, "+Inf"),
    (-math.inf, "-Inf"),
    (math.nan, "NaN"),
])
def test_numbers_are_written_exactly_and_infinities_by_name(value, text):
    assert number(value) == text


def test_labels_are_written_in_the_order_given_and_none_means_no_braces():
    assert labels_text({}) == ""
    assert labels_text({"b": "2", "a": 'x"y'}) == '{b="2",a="x\\"y"}'


def test_a_family_leaves_out_samples_without_a_value_and_escapes_its_help():
    out = Exposition()
    out.family("m", "gauge", "first\nsecond \\ third", [({"k": "a"}, 1), ({"k": "b"}, None), ({}, 2.5)])
    assert out.text() == ('# HELP m first\\nsecond \\\\ third\n# TYPE m gauge\nm{k="a"} 1\nm 2.5\n')


def test_a_histogram_is_cumulative_with_le_last_and_sum_and_count_per_series():
    out = Exposition()
    out.histogram("h", "help", (0.1, 1.0), [({"p": "x"}, [1, 2, 3], 4.5), ({}, [0, 0, 0], 0)])
    assert out.lines[2:] == [
        'h_bucket{p="x",le="0.1"} 1', 'h_bucket{p="x",le="1"} 3', 'h_bucket{p="x",le="+Inf"} 6',
        'h_sum{p="x"} 4.5', 'h_count{p="x"} 6',
        'h_bucket{le="0.1"} 0', 'h_bucket{le="1"} 0', 'h_bucket{le="+Inf"} 0', "h_sum 0", "h_count 0"]


def test_a_registry_writes_its_metrics_in_the_order_they_were_made():
    registry = Registry()
    requests = registry.counter("r_total", "requests", ("route", "status"))
    plain = registry.counter("p_total", "plain")
    latency = registry.histogram("l_seconds", "latency", (0.01, 0.1))
    registry.gauge("g", "gauge", lambda: None)
    registry.gauge("lg", "labelled gauge", lambda: [(("a",), 1), (("b",), 2)], labelnames=("k",))
    requests.inc("/callback", "200")
    requests.inc("/callback", "200")
    requests.inc("/callback", "401")
    latency.observe(0.01)       # on a bound: counted in that bucket (le means "less or equal")
    latency.observe(0.5)
    families = parse_families(registry.render())
    assert list(families) == ["r_total", "p_total", "l_seconds", "g", "lg"]
    assert families["r_total"] == ['r_total{route="/callback",status="200"} 2', 'r_total{route="/callback",status="401"} 1']
    assert families["p_total"] == ["p_total 0"]        # a counter without labels shows its zero
    assert families["l_seconds"][:3] == ['l_seconds_bucket{le="0.01"} 1', 'l_seconds_bucket{le="0.1"} 1',
                                         'l_seconds_bucket{le="+Inf"} 2']
    assert families["g"] == []                          # a gauge with nothing to say says nothing
    assert families["lg"] == ['lg{k="a"} 1', 'lg{k="b"} 2']
    assert requests.value("/callback", "200") == 2


def test_counters_count_every_increment_from_many_threads():
    registry = Registry()
    counter = registry.counter("c_total", "c")
    threads = [threading.Thread(target=lambda: [counter.inc() for _ in range(1000)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.value() == 4000


def test_metrics_text_carries_counters_histograms_and_exact_big_counts():
    counts = [0] * (len(HANDLING_BUCKETS_S) + 1)
    counts[1] = 1_234_567
    handler = {"name": "handler-1", "pid": 7, "state": "ready", "in_flight": 2, "handled": 1_234_567,
               "busy_s": 12.5, "handling_s": 2000.0, "handling_counts": counts, "restarts": 1}
    gone = {"name": "handler-2", "pid": None, "state": "waiting_restart", "in_flight": 0, "handled": 0}
    doc = {"pid": 1, "state": "running", "updated_at": 100.0, "handlers_target": 2, "handlers": [handler, gone],
           "e2e_counts": counts, "e2e_s": 30.0, "degraded": None,
           "ratelimiter": {"restarts": 0, "limits_per_s": {"reply": 2000.0},
                           "stats": {"calls": {"reply": {"200": 10, "429": 2}}, "batches": 3,
                                     "queues": {"reply": {"queued": 4}}}}}
    stale = {**doc, "updated_at": 10.0}
    sample = Sample(101.0, {"pending": 5, "in_flight": 2, "done": 9, "dead": 1, "oldest_pending_s": 3.5},
                    {"dispatcher:h:1": doc, "dispatcher:h:2": stale, "run:h:3": {"updated_at": 100.0}})
    families = parse_families(metrics_text(sample))
    assert 'frontdesk_store_events{state="dead"} 1' in families["frontdesk_store_events"]
    assert families["frontdesk_store_oldest_pending_seconds"] == ["frontdesk_store_oldest_pending_seconds 3.5"]
    assert families["frontdesk_dispatcher_up"] == ['frontdesk_dispatcher_up{dispatcher="dispatcher:h:1"} 1']
    assert families["frontdesk_handler_events_total"] == [
        'frontdesk_handler_events_total{dispatcher="dispatcher:h:1",handler="handler-1"} 1234567']
    handling = families["frontdesk_handler_handling_seconds"]
    assert 'frontdesk_handler_handling_seconds_bucket{dispatcher="dispatcher:h:1",handler="handler-1",le="0.001"} 0' \
        in handling
    assert handling[-1] == 'frontdesk_handler_handling_seconds_count{dispatcher="dispatcher:h:1",handler="handler-1"} 1234567'
    assert 'frontdesk_api_calls_total{dispatcher="dispatcher:h:1",endpoint="reply",status="429"} 2' \
        in families["frontdesk_api_calls_total"]
    assert families["frontdesk_api_queued_calls"] == [
        'frontdesk_api_queued_calls{dispatcher="dispatcher:h:1",endpoint="reply"} 4']
