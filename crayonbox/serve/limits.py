"""Who may ask for how much: refusals with a status and a `Retry-After`, and a per-client rate limit.

The 2022 demo answered "Too much traffic, please try again" and bots retried every 5 s. Here every refusal
is immediate and says when to come back, so a well-behaved client never burns a request on a timeout.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


class Refused(Exception):
    """Work the server will not take now: `status` 429 (this client is over its rate) or 503 (the server
    is full, the expected wait is past the deadline, or it is shutting down). `retry_after_s` None: no time
    can honestly be promised (the model worker is down for good), so no `Retry-After` is sent."""

    def __init__(self, status: int, message: str, retry_after_s: float | None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> str:
        """The `Retry-After` header value: whole seconds, at least 1 ("" when there is no time to promise)."""
        return "" if self.retry_after_s is None else str(max(1, math.ceil(self.retry_after_s)))


@dataclass
class RateLimitConfig:
    """Per-client limits. A client is its API key when it sends one, else its IP address."""

    requests_per_minute: float = 30.0  # sustained rate (token bucket refill)
    burst: int = 10  # requests a quiet client may send back to back
    max_in_flight: int = 2  # accepted requests not yet answered, per client


@dataclass
class _Bucket:
    tokens: float
    updated: float
    in_flight: int = 0


class RateLimiter:
    """Token bucket plus an in-flight cap per client. Thread-safe; `clock` is injectable for tests."""

    def __init__(self, config: RateLimitConfig, clock=time.monotonic):
        self.config = config
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, client: str) -> None:
        """Count one request for `client` or raise `Refused(429)` saying when it may try again. A request
        that gets through must be paired with one `release(client)` when it is answered."""
        cfg = self.config
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(client) or _Bucket(tokens=float(cfg.burst), updated=now)
            self._buckets[client] = bucket
            refill = cfg.requests_per_minute / 60.0
            bucket.tokens = min(float(cfg.burst), bucket.tokens + (now - bucket.updated) * refill)
            bucket.updated = now
            if bucket.in_flight >= cfg.max_in_flight:
                raise Refused(429, f"this client already has {bucket.in_flight} request(s) running (limit "
                              f"{cfg.max_in_flight}); wait for one to finish", retry_after_s=1.0)
            if bucket.tokens < 1.0:
                wait = (1.0 - bucket.tokens) / refill if refill > 0 else 60.0
                raise Refused(429, f"rate limit: at most {cfg.requests_per_minute:g} requests per minute "
                              f"(bursts of {cfg.burst}); try again in {math.ceil(wait)} s",
                              retry_after_s=wait)
            bucket.tokens -= 1.0
            bucket.in_flight += 1
            self._forget_idle(now)

    def release(self, client: str) -> None:
        """The request `acquire` let through has been answered (or failed, or was cancelled)."""
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is not None and bucket.in_flight > 0:
                bucket.in_flight -= 1

    def _forget_idle(self, now: float) -> None:
        # A bucket that is idle and full again carries no state: drop it so memory stays bounded under
        # many distinct clients. Only swept when the table grows, to keep acquire O(1) on average.
        if len(self._buckets) < 4096:
            return
        full_after = self.config.burst * 60.0 / max(self.config.requests_per_minute, 1e-9)
        self._buckets = {c: b for c, b in self._buckets.items()
                         if b.in_flight or now - b.updated < full_after}
