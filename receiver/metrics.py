"""A tiny Prometheus text-format registry: labelled counters, histograms and callback gauges.

Just enough for `GET /metrics` without a dependency. Every update takes one lock, so metrics
are safe to touch from any thread (the receiver's loop, the store's writer callbacks).
"""
from __future__ import annotations

import bisect
import math
import threading
from typing import Callable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds; fine steps below 50 ms (the ack target) and coarse ones up to LINE's 2 s limit.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    def __init__(self, lock: threading.Lock, name: str, help: str, labelnames: tuple[str, ...]):
        self._lock, self.name, self.help, self.labelnames = lock, name, help, labelnames
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, *labelvalues: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[labelvalues] = self._values.get(labelvalues, 0.0) + amount

    def value(self, *labelvalues: str) -> float:
        with self._lock:
            return self._values.get(labelvalues, 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.labelnames:
            items = [((), 0.0)]
        lines += [f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in items]
        return lines


class Histogram:
    def __init__(self, lock: threading.Lock, name: str, help: str, buckets: tuple[float, ...]):
        self._lock, self.name, self.help = lock, name, help
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)  # the last slot is +Inf
        self._sum = 0.0

    def observe(self, value: float) -> None:
        slot = bisect.bisect_left(self.buckets, value)
        with self._lock:
            self._counts[slot] += 1
            self._sum += value

    def render(self) -> list[str]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, count in zip(self.buckets + (math.inf,), counts):
            cumulative += count
            lines.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {cumulative}')
        lines += [f"{self.name}_sum {_number(total)}", f"{self.name}_count {cumulative}"]
        return lines


class Gauge:
    """Values read when scraped (queue depths and the like); the callback must be cheap. Without
    labels it returns one number or None; with labels, a list of (label values, number)."""

    def __init__(self, name: str, help: str, read: Callable, labelnames: tuple[str, ...] = ()):
        self.name, self.help, self._read, self.labelnames = name, help, read, labelnames

    def render(self) -> list[str]:
        if self.labelnames:
            samples = self._read()
        else:
            value = self._read()
            samples = [] if value is None else [((), value)]
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        lines += [f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in samples]
        return lines


class Registry:
    def __init__(self):
        self._lock = threading.Lock()
        self._metrics: list = []

    def counter(self, name: str, help: str, labelnames: tuple[str, ...] = ()) -> Counter:
        return self._add(Counter(self._lock, name, help, labelnames))

    def histogram(self, name: str, help: str, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> Histogram:
        return self._add(Histogram(self._lock, name, help, buckets))

    def gauge(self, name: str, help: str, read: Callable, labelnames: tuple[str, ...] = ()) -> Gauge:
        return self._add(Gauge(name, help, read, labelnames))

    def _add(self, metric):
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        lines = []
        for metric in self._metrics:
            lines += metric.render()
        return "\n".join(lines) + "\n"
