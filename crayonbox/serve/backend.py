"""What the web app needs from whatever decodes its requests: the scheduler's settings (`SchedulerConfig`) and
its surface (`SchedulerLike`), implemented by `Scheduler` (a thread in this process) and `WorkerProcess` (one
in a child process)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from crayonbox.model_folder import ModelInfo
from crayonbox.serve.metrics import PortableHistogram
from crayonbox.serve.tickets import Event, Queued, Ticket, Work


@dataclass
class SchedulerConfig:
    """How much the worker decodes at once and how much work it accepts."""

    max_batch_images: int = 18  # images decoded together (each takes 2 KV-cache rows, 1 at condition scale 1)
    max_cache_mib: float = 0.0  # memory bound on the KV cache; 0 = only max_batch_images bounds it
    max_queue_images: int = 72  # images accepted but not yet decoding
    deadline_s: float = 60.0  # refuse a request we expect to finish later than this after it arrives
    frame_every: int = 0  # progressive frame every this many tokens; 0 = image_length // 8 (8 frames)
    frame_budget: float = 0.25  # at most this share of the worker's time goes to progressive frames
    warmup_steps: int = 3  # timed full-batch steps at start, the ETA model's first estimate


class SchedulerLike(Protocol):
    """What the web app (serve/app.py, the `ServeMetrics` it builds, and serve/cli.py's signal handler through
    `app.state.scheduler`) needs from whatever decodes: a `Scheduler` thread in this process or a
    `WorkerProcess` driving one in a child process. Data members are read-only to the app; an implementation
    may hold them as attributes or compute them as properties."""

    info: ModelInfo  # tokenizer, configs and sampler defaults: what requests are checked against
    config: SchedulerConfig
    capacity_rows: int  # KV-cache rows in all
    step_seconds: PortableHistogram  # one decode step of the whole batch
    down: str  # why the decoder is gone ("" while it runs)
    restart_eta_s: float | None  # seconds until a gone decoder should serve again; None: no time to promise
    draining: bool  # new work is refused
    # gauges
    queue_images: int
    queue_requests: int
    batch_images: int
    batch_rows: int
    tokens_per_s: float
    step_s_full: float
    steps_done: int
    images_done: int
    worker_errors: int

    def start(self) -> SchedulerLike: ...

    def drain(self) -> None: ...

    def close(self, grace_s: float = 60.0) -> None: ...

    def submit(self, work: Work, sink: Callable[[Event], None]) -> Ticket: ...

    def cancel(self, ticket: Ticket) -> None: ...

    def progress(self, ticket: Ticket) -> Queued | None: ...
