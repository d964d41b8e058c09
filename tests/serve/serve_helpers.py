"""Serving test helpers: apps with test-friendly limits, a live uvicorn server on a free loopback port, and
hooks that hold or slow the scheduler's worker so that timing-dependent behaviour is deterministic."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

from crayonbox.pipeline import Pipeline
from crayonbox.serve.app import ServeConfig, create_app
from crayonbox.serve.limits import RateLimitConfig
from crayonbox.serve.scheduler import Scheduler, SchedulerConfig


def make_app(pipe: Pipeline, rate: RateLimitConfig | None = None, **scheduler_options):
    """An app whose rate limit does not get in the way unless a test asks for one."""
    rate = rate or RateLimitConfig(requests_per_minute=10_000, burst=1_000, max_in_flight=100)
    return create_app(pipe, ServeConfig(SchedulerConfig(**scheduler_options), rate, shutdown_grace_s=5))


def png_pixels(b64: str) -> bytes:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB").tobytes()


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Gate:
    """Holds the scheduler's worker before each iteration while closed: requests pile up in the queue."""

    def __init__(self, scheduler: Scheduler):
        self.open_event = threading.Event()
        original = scheduler._iterate

        def gated() -> None:
            self.open_event.wait()
            original()

        scheduler._iterate = gated

    def open(self) -> None:
        self.open_event.set()


def slow_steps(scheduler: Scheduler, seconds: float, on_step=None) -> None:
    """Make every decode step take at least `seconds` (so a request lasts long enough to interrupt), and call
    `on_step(steps_done)` after each."""
    decoding = scheduler.decoding
    original = decoding.step

    def step():
        finished = original()
        time.sleep(seconds)
        if on_step:
            on_step(scheduler.steps_done + 1)
        return finished

    decoding.step = step


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app) -> Iterator[str]:
    """Run `app` on uvicorn in a thread on a free loopback port; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
