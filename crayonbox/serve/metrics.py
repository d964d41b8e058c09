"""Prometheus metrics through `prometheus_client`: one `CollectorRegistry` per app, so two apps in one process
(tests, embedding) never share or clash over series.

Request outcomes and latencies are prometheus_client counters and histograms, updated by the web layer. The
scheduler's state is read at scrape time by a collector, so gauges are never stale and counts kept elsewhere
(decode steps, worker errors) are exposed without copying them. The decode-step histogram may live in the model
worker's process: it is a `PortableHistogram`, whose state crosses the pipe and is exposed by the same
collector (prometheus_client's own multiprocess mode needs a shared directory and an environment variable).

Measured against the hand-written exposition this replaced: a scrape renders in ~0.46 ms instead of ~0.05 ms and
a labelled `inc` takes ~1.9 µs instead of ~1.0 µs. At one scrape every few seconds and one `inc` per request that
is noise, and the library brings the standard format (escaping, `_created` series, the current content type).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
STEP_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2)
CALL_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 1)


class PortableHistogram:
    """Observations counted into `le` buckets, plus their sum, whose whole state is two plain values
    (`state()` / `load()`): the model worker's process keeps one and the web side mirrors it. Thread-safe."""

    def __init__(self, name: str, help: str, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.name, self.help = name, help
        self.bounds = tuple(sorted(buckets)) + (math.inf,)
        self._counts = [0] * len(self.bounds)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """Record one observation (e.g. a decode step's duration in seconds)."""
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

    def family(self) -> HistogramMetricFamily:
        """The histogram as prometheus_client exposes it: cumulative buckets, then the sum."""
        counts, total = self.state()
        buckets, running = [], 0
        for bound, count in zip(self.bounds, counts, strict=True):
            running += count
            buckets.append(("+Inf" if math.isinf(bound) else repr(float(bound)), running))
        return HistogramMetricFamily(self.name, self.help, buckets=buckets, sum_value=total)


class SchedulerCollector(Collector):
    """The scheduler's batch state, read when /metrics is scraped."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        s = self.scheduler
        for name, help_, value in [
            ("crayonbox_queue_images", "images waiting to start", s.queue_images),
            ("crayonbox_queue_requests", "requests waiting to start", s.queue_requests),
            ("crayonbox_batch_images", "images being decoded", s.batch_images),
            ("crayonbox_batch_rows", "KV-cache rows in use", s.batch_rows),
            ("crayonbox_batch_capacity_rows", "KV-cache rows in all", s.capacity_rows),
            ("crayonbox_tokens_per_second", "image tokens decoded per second, recent", s.tokens_per_s),
            ("crayonbox_seconds_per_step_full_batch", "the ETA model's seconds per decode step", s.step_s_full),
        ]:
            yield GaugeMetricFamily(name, help_, value=value)
        yield CounterMetricFamily("crayonbox_decode_steps", "decode steps run", value=s.steps_done)
        yield CounterMetricFamily("crayonbox_worker_errors", "decode iterations that failed", value=s.worker_errors)
        yield s.step_seconds.family()
        if hasattr(s, "call_seconds"):  # the model worker runs in its own process: how long the web side waits
            yield s.call_seconds.family()


class ServeMetrics:
    """What /metrics exposes: request outcomes and latencies counted by the web layer, batch state read from
    the scheduler at scrape time."""

    def __init__(self, scheduler):
        r = self.registry = CollectorRegistry()
        # prometheus_client adds the `_total` suffix of counters itself
        self.requests = Counter("crayonbox_requests", "generate requests by endpoint and HTTP status",
                                ("endpoint", "code"), registry=r)
        self.images = Counter("crayonbox_images", "images served", registry=r)
        self.bodies_refused = Counter("crayonbox_bodies_refused", "requests refused before any handler: body "
                                      "over the size limit (413) or not sent within the body timeout (408)",
                                      ("code",), registry=r)
        self.cancelled = Counter("crayonbox_cancelled", "requests cancelled by a disconnect", registry=r)
        self.latency = Histogram("crayonbox_request_seconds", "acceptance to images, served requests",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("crayonbox_queue_wait_seconds", "acceptance to the first decode step",
                                    buckets=LATENCY_BUCKETS, registry=r)
        r.register(SchedulerCollector(scheduler))

    def render(self) -> bytes:
        """The whole exposition, ready to serve as `CONTENT_TYPE`."""
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value by its exposed name (e.g. `crayonbox_requests_total`); 0 if absent."""
        return self.registry.get_sample_value(name, labels) or 0.0
