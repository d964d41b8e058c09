"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand: three metric kinds
and a renderer are ~100 lines, less than a dependency.

Counters and histograms are updated from the scheduler thread and the web threads, so each metric has a lock.
Gauges are read at scrape time from a callback, so they are never stale.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
STEP_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2)
CALL_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 1)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    """A monotonically increasing count, optionally split by labels (e.g. outcome="ok")."""

    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...] = ()):
        self.name, self.help, self.labelnames = name, help, labelnames
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Add `amount` to the series named by `labels`."""
        key = tuple(str(labels[n]) for n in self.labelnames)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        """The current count of one series (0 if never incremented)."""
        return self._values.get(tuple(str(labels[n]) for n in self.labelnames), 0.0)

    def samples(self) -> list[str]:
        """Exposition lines, one per label set."""
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(zip(self.labelnames, key, strict=True))} {_number(v)}"
                for key, v in items]


class Gauge:
    """A value read from `read()` at scrape time. `kind="counter"` for a count kept elsewhere (e.g. the
    scheduler's decode steps), exposed without copying it."""

    def __init__(self, name: str, help: str, read: Callable[[], float], kind: str = "gauge"):
        self.name, self.help, self.read, self.kind = name, help, read, kind

    def samples(self) -> list[str]:
        """The one exposition line, read now."""
        return [f"{self.name} {_number(self.read())}"]


class Histogram:
    """Observations counted into cumulative `le` buckets, plus their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.name, self.help = name, help
        self.bounds = tuple(sorted(buckets)) + (math.inf,)
        self._counts = [0] * len(self.bounds)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """Record one observation (e.g. a request's latency in seconds)."""
        with self._lock:
            self._sum += value
            for i, bound in enumerate(self.bounds):
                if value <= bound:
                    self._counts[i] += 1
                    break

    def state(self) -> tuple[list[int], float]:
        """(per-bucket counts, sum): what `load` takes, to mirror a histogram kept in another process."""
        with self._lock:
            return list(self._counts), self._sum

    def load(self, counts: list[int], total: float) -> None:
        """Replace the observations with another copy's `state()`."""
        with self._lock:
            self._counts, self._sum = list(counts), total

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self._counts)

    def samples(self) -> list[str]:
        """Cumulative `_bucket` lines, then `_sum` and `_count`."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        lines, running = [], 0
        for bound, count in zip(self.bounds, counts, strict=True):
            running += count
            lines.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {running}')
        lines += [f"{self.name}_sum {_number(total)}", f"{self.name}_count {running}"]
        return lines


class Registry:
    """The metrics one server exposes, rendered in registration order."""

    def __init__(self):
        self._metrics: list[Counter | Gauge | Histogram] = []

    def add(self, metric):
        """Register a metric and return it."""
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        """The whole exposition, ready to serve as `CONTENT_TYPE`."""
        lines: list[str] = []
        for m in self._metrics:
            lines += [f"# HELP {m.name} {_escape(m.help)}", f"# TYPE {m.name} {m.kind}", *m.samples()]
        return "\n".join(lines) + "\n"


class ServeMetrics:
    """What /metrics exposes: request outcomes and latencies counted by the web layer, batch state read from
    the scheduler at scrape time."""

    def __init__(self, scheduler):
        s, r = scheduler, Registry()
        self.registry = r
        self.requests = r.add(Counter("crayonbox_requests_total",
                                      "generate requests by endpoint and HTTP status", ("endpoint", "code")))
        self.images = r.add(Counter("crayonbox_images_total", "images served"))
        self.bodies_refused = r.add(Counter("crayonbox_bodies_refused_total",
                                            "requests refused before any handler: body over the size limit "
                                            "(413) or not sent within the body timeout (408)", ("code",)))
        self.cancelled = r.add(Counter("crayonbox_cancelled_total", "requests cancelled by a disconnect"))
        self.latency = r.add(Histogram("crayonbox_request_seconds", "acceptance to images, served requests"))
        self.queue_wait = r.add(Histogram("crayonbox_queue_wait_seconds",
                                          "acceptance to the first decode step"))
        r.add(s.step_seconds)
        if hasattr(s, "call_seconds"):  # the model worker runs in its own process: how long the web side waits
            r.add(s.call_seconds)
        for name, help_, read in [
            ("crayonbox_queue_images", "images waiting to start", lambda: s.queue_images),
            ("crayonbox_queue_requests", "requests waiting to start", lambda: s.queue_requests),
            ("crayonbox_batch_images", "images being decoded", lambda: s.batch_images),
            ("crayonbox_batch_rows", "KV-cache rows in use", lambda: s.batch_rows),
            ("crayonbox_batch_capacity_rows", "KV-cache rows in all", lambda: s.capacity_rows),
            ("crayonbox_tokens_per_second", "image tokens decoded per second, recent",
             lambda: s.tokens_per_s),
            ("crayonbox_seconds_per_step_full_batch", "the ETA model's seconds per decode step",
             lambda: s.step_s_full),
        ]:
            r.add(Gauge(name, help_, read))
        r.add(Gauge("crayonbox_decode_steps_total", "decode steps run", lambda: s.steps_done, kind="counter"))
        r.add(Gauge("crayonbox_worker_errors_total", "decode iterations that failed", lambda: s.worker_errors,
                    kind="counter"))
