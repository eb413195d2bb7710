"""The server's numbers in Prometheus' text exposition format (version 0.0.4): counters, gauges and histograms.

Small on purpose (no client library): each metric renders its own `# HELP`, `# TYPE` and sample lines; label
values are escaped as the format requires. Everything is safe to update from any thread.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from typing import Callable, Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
RATE_WINDOW_S = 10.0  # tokens/s is measured over this trailing window


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    pairs = [f'{name}="{_escape(value)}"' for name, value in zip(names, values)]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))


class Counter:
    """A count that only goes up, optionally split by label values (e.g. requests by outcome)."""

    kind = "counter"

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.label_names = name, help, labels
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        with self._lock:
            return self._values.get(labels, 0.0)

    def samples(self) -> Iterable[str]:
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.label_names:
            items = [((), 0.0)]  # an unlabelled counter shows its zero
        for labels, value in items:
            yield f"{self.name}{_labels(self.label_names, labels)} {_number(value)}"


class Gauge:
    """A value read when the metrics are rendered (queue depth, rows decoding now); kind 'counter' for a total kept
    elsewhere that only grows (tokens decoded)."""

    def __init__(self, name: str, help: str, read: Callable[[], float], kind: str = "gauge"):
        self.name, self.help, self._read, self.kind = name, help, read, kind

    def samples(self) -> Iterable[str]:
        yield f"{self.name} {_number(self._read())}"


class Histogram:
    """Observations counted into cumulative buckets, with their sum and count (latencies)."""

    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: tuple[float, ...] = LATENCY_BUCKETS_S):
        self.name, self.help, self.buckets = name, help, tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sum += value

    @property
    def count(self) -> int:
        with self._lock:
            return sum(self._counts)

    def samples(self) -> Iterable[str]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        running = 0
        for bound, count in zip((*self.buckets, float("inf")), counts):
            running += count
            yield f'{self.name}_bucket{{le="{_number(bound)}"}} {running}'
        yield f"{self.name}_sum {_number(total)}"
        yield f"{self.name}_count {running}"


class Rate:
    """Events per second over a trailing window, from a monotonically growing total read on demand."""

    def __init__(self, total: Callable[[], float], window_s: float = RATE_WINDOW_S):
        self._total, self._window = total, window_s
        self._history: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        now, total = time.monotonic(), self._total()
        with self._lock:
            self._history.append((now, total))
            while len(self._history) > 2 and now - self._history[1][0] >= self._window:
                self._history.popleft()
            then, before = self._history[0]
        return (total - before) / (now - then) if now > then else 0.0


def render(metrics: Iterable[Counter | Gauge | Histogram]) -> str:
    """The exposition text for `metrics`, in order."""
    lines = []
    for metric in metrics:
        lines.append(f"# HELP {metric.name} {metric.help}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        lines.extend(metric.samples())
    return "\n".join(lines) + "\n"
