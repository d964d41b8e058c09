"""Continuous batching: one worker thread owns the model and decodes one batch that requests join and leave at
any decode step.

Each loop iteration: drop cancelled requests, admit waiting requests that fit the free cache rows (their text
is encoded and they start at their own step 0, `Decoding.add`), run one decode step for every image in the
batch, turn finished requests into images, and paint progressive frames while their share of the worker's
time stays under `frame_budget`. A newcomer therefore starts decoding at the next step, never after the
running batch ends (tests/serve check `admitted_step - arrival_step <= 1`).

VQGAN decodes run in this same thread, between steps. On a 2-core CPU a second thread doing them made both
threads fight for the same cores (see docs/serving.md for the measurement); one thread keeps the timing
predictable, and the ETA model below counts the decodes in its measured seconds per step.

The images are made by the same `Pipeline` calls as offline generation (`pipe.jobs`, `Decoding`,
`pipe.decode_images` on one request's images at once), so a served image is byte-identical to
`pipe(prompt, num_images=n, seed=seed)`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import replace

import torch

from crayonbox.errors import CrayonboxError
from crayonbox.model_folder import ModelInfo
from crayonbox.pipeline import Pipeline
from crayonbox.sample import ImageJob, SamplingSettings
from crayonbox.serve.backend import SchedulerConfig as SchedulerConfig  # its home is backend.py
from crayonbox.serve.backend import SchedulerLike
from crayonbox.serve.limits import Refused
from crayonbox.serve.metrics import STEP_BUCKETS, PortableHistogram
from crayonbox.serve.tickets import Done, Event, Failed, Frame, Queued, Result, Started, Ticket, Work

log = logging.getLogger("crayonbox.serve")
MIN_REQUEST_IMAGES = 9  # the batch must hold at least one full 3×3 request


class Scheduler(SchedulerLike):
    """Owns `pipe` in one worker thread. `submit` from any thread; events come through each ticket's sink."""

    down = ""  # why the worker is gone: never, for a thread of this process (a WorkerProcess may say why)
    restart_eta_s: float | None = None  # until a gone worker serves again (a WorkerProcess's, while restarting)

    def __init__(self, pipe: Pipeline, config: SchedulerConfig | None = None, clock=time.monotonic):
        self.pipe, self.config, self.clock = pipe, config or SchedulerConfig(), clock
        cfg = pipe.config
        self.image_length = cfg.image_length
        self.capacity_rows = cache_rows(pipe, self.config)
        if self.capacity_rows < 2 * MIN_REQUEST_IMAGES:
            raise CrayonboxError(f"the decode batch holds {self.capacity_rows} cache rows, fewer than the "
                                 f"{2 * MIN_REQUEST_IMAGES} a 9-image request needs: raise --max-batch or "
                                 "--max-cache-mib")
        self.frame_every = self.config.frame_every or max(1, self.image_length // 8)
        self.decoding = pipe.new_decoding(self.capacity_rows)
        self._cond = threading.Condition()
        self._waiting: deque[Ticket] = deque()
        self._running: list[Ticket] = []
        self._accepting = True
        self._stopping = False
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        # measurements (written by the worker, read by anyone)
        self.steps_done = 0
        self.images_done = 0
        self.worker_errors = 0
        self.step_s_full = 0.0  # seconds between step starts with a (nearly) full batch: the ETA model's rate
        self.paint_s_per_image = 0.0  # VQGAN decode seconds per finished image
        self.tokens_per_s = 0.0  # image tokens per second, recent
        self.step_seconds = PortableHistogram("crayonbox_decode_step_seconds",
                                              "one decode step of the whole batch", STEP_BUCKETS)
        self._frame_time = 0.0
        self._busy_time = 0.0
        self._last_step_start: float | None = None

    # ------------------------------------------------------------------ life cycle
    @property
    def info(self) -> ModelInfo:  # type: ignore[override]  # read-only in SchedulerLike
        return self.pipe.info

    def start(self) -> Scheduler:
        """Warm up (first timings for the ETA model) and start the worker thread."""
        self._warmup()
        self._thread = threading.Thread(target=self._run, name="crayonbox-scheduler", daemon=True)
        self._thread.start()
        return self

    def drain(self) -> None:
        """Stop accepting work; what was accepted goes on."""
        with self._cond:
            self._accepting = False

    @property
    def draining(self) -> bool:
        """True once shutdown began: new work is refused."""
        return not self._accepting

    def close(self, grace_s: float = 60.0) -> None:
        """Graceful shutdown: refuse new work, let accepted work finish for up to `grace_s`, then fail what is
        left with a 503 its client can act on, and stop the worker."""
        self.drain()
        with self._cond:
            self._cond.wait_for(lambda: not self._waiting and not self._running, timeout=grace_s)
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # ------------------------------------------------------------------ requests
    def submit(self, work: Work, sink: Callable[[Event], None], ticket_id: str | None = None) -> Ticket:
        """Queue `work`, or raise `Refused(503)` at once when it could not finish within the deadline.
        `ticket_id`: the caller's id for it (the worker process passes the web side's); default r1, r2, …"""
        with self._cond:
            if not self._accepting:
                raise Refused(503, "the server is shutting down; try again shortly", retry_after_s=10)
            queued = sum(t.work.n for t in self._waiting)
            limit = self.config.max_queue_images
            if queued + work.n > limit:
                # Come back when half the queue has drained, not when one request's room frees: everyone
                # refused now gets the same advice, and a herd retrying every second costs the worker's
                # cores for nothing (DALL·E mini's bots retried every 5 s).
                wait = self._time_until_queue_fits(min(limit - work.n, limit // 2))
                raise Refused(503, f"too much traffic: {queued} images already waiting (limit {limit}); try "
                              f"again in about {wait:.0f} s", retry_after_s=wait)
            _, finish = self._forecast(work)
            if finish > self.config.deadline_s:
                late = finish - self.config.deadline_s
                raise Refused(503, f"too much traffic: this request would take about {finish:.0f} s, over "
                              f"the {self.config.deadline_s:.0f} s deadline; try again in about {late:.0f} s",
                              retry_after_s=late)
            ticket = Ticket(ticket_id or f"r{next(self._ids)}", work, sink, self.clock(), self.steps_done)
            self._waiting.append(ticket)
            self._cond.notify_all()
            return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Withdraw a request (its client went away): out of the queue now, out of the batch next step."""
        with self._cond:
            if ticket.state == "queued" and ticket in self._waiting:
                self._waiting.remove(ticket)
                ticket.state = "cancelled"
            elif ticket.state in ("admitting", "decoding"):
                ticket.cancel_requested = True
            self._cond.notify_all()

    def progress(self, ticket: Ticket) -> Queued | None:
        """Where a waiting request stands (None once it is decoding or done)."""
        with self._cond:
            if ticket.state != "queued" or ticket not in self._waiting:
                return None
            ahead = list(itertools.takewhile(lambda t: t is not ticket, self._waiting))
            start, finish = self._forecast(ticket.work, ahead)
            return Queued(len(ahead), sum(t.work.n for t in ahead), start, finish)

    def estimate(self, n: int = MIN_REQUEST_IMAGES) -> tuple[float, float]:
        """(seconds to start, seconds to finish) for a new request of `n` images at default settings."""
        with self._cond:
            return self._forecast(Work("", n, 0, self.pipe.defaults))

    @property
    def queue_images(self) -> int:
        """Images accepted but not yet decoding."""
        return sum(t.work.n for t in list(self._waiting))

    @property
    def queue_requests(self) -> int:
        """Requests accepted but not yet decoding."""
        return len(self._waiting)

    @property
    def batch_images(self) -> int:
        """Images being decoded."""
        return sum(t.work.n for t in list(self._running))

    @property
    def batch_rows(self) -> int:
        """KV-cache rows in use."""
        return sum(t.work.rows for t in list(self._running))

    # ------------------------------------------------------------------ the ETA model
    def _forecast(self, work: Work, ahead: list[Ticket] | None = None) -> tuple[float, float]:
        """Simulate FIFO admission over cache rows: each row is free at some time (now, or when the image on
        it finishes); a request starts when its rows are free and holds them for image_length steps. Exact for
        a constant step time, which a full batch (the only case where refusals happen) has."""
        full = self.image_length * self.step_s_full
        releases = [0.0] * (self.capacity_rows - sum(t.work.rows for t in self._running))
        for t in self._running:
            left = self.image_length - (self.steps_done - (t.admitted_step or 0))
            releases += [max(left, 0) * self.step_s_full] * t.work.rows
        heapq.heapify(releases)
        start = 0.0
        for w in [t.work for t in (self._waiting if ahead is None else ahead)] + [work]:
            start = max(start, max(heapq.heappop(releases) for _ in range(w.rows)))
            for _ in range(w.rows):
                heapq.heappush(releases, start + full)
        return start, start + full + work.n * self.paint_s_per_image

    def _time_until_queue_fits(self, images: int) -> float:
        """Seconds until at most `images` images are still waiting to start."""
        waiting = list(self._waiting)
        for i, t in enumerate(waiting):
            if sum(w.work.n for w in waiting[i:]) <= images:
                return self._forecast(t.work, waiting[:i])[0] if i else 0.0
        return self._forecast(waiting[-1].work, waiting[:-1])[0] if waiting else 0.0

    # ------------------------------------------------------------------ the worker
    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    self._fail_all(503, "the server shut down before this request finished")
                    return
                if not self._running and not self._waiting:
                    self._last_step_start = None
                    self._cond.wait(timeout=0.5)
                    continue
            try:
                self._iterate()
            except Exception as e:  # a bug must fail the requests it touched, not kill the server
                self.worker_errors += 1
                log.error("scheduler step failed:\n%s", traceback.format_exc())
                with self._cond:
                    for t in list(self._running):
                        self._finish_ticket(t, "failed", Failed(500, f"internal error while decoding: {e}"))
                self.decoding = self.pipe.new_decoding(self.capacity_rows)

    def _iterate(self) -> None:
        self._remove_cancelled()
        self._admit()
        if not self.decoding.jobs:
            return
        began = self.clock()
        images = self.decoding.active_images
        full_batch = self.decoding.rows_in_use >= 0.75 * self.capacity_rows
        finished = self.decoding.step()
        self.steps_done += 1
        self.step_seconds.observe(self.clock() - began)
        self._complete(finished)
        if self._last_step_start is not None:
            # the whole previous iteration (admissions, step, VQGAN decodes, frames): the real rate
            interval = began - self._last_step_start
            self._busy_time += interval
            self.tokens_per_s = 0.9 * self.tokens_per_s + 0.1 * images / max(interval, 1e-9)
            if full_batch:
                self.step_s_full = 0.9 * self.step_s_full + 0.1 * interval
        self._last_step_start = began
        self._paint_frames()

    def _remove_cancelled(self) -> None:
        with self._cond:
            gone = [t for t in self._running if t.cancel_requested]
            for t in gone:
                self._running.remove(t)
                t.state = "cancelled"
        for t in gone:
            self.decoding.remove([i for i, job in enumerate(self.decoding.jobs) if job.tag[0] is t])

    def _admit(self) -> None:
        """Move waiting requests (first come, first served) into the batch while their rows fit."""
        while True:
            with self._cond:
                if not self._waiting or self._waiting[0].work.rows > self.decoding.free_rows:
                    return
                # it stays at the head of the queue until it is in the batch, so that `close` never sees
                # a moment where an accepted request is in neither list
                ticket = self._waiting[0]
                ticket.state = "admitting"
            w = ticket.work
            try:
                made, encodings = self.pipe.jobs(w.prompt, w.n, w.seed, w.settings)
                jobs: list[ImageJob[tuple[Ticket, int]]] = [replace(job, tag=(ticket, i)) for i, job in enumerate(made)]
                self.decoding.add(jobs)
            except Exception as e:  # settings the sampler rejects (422), or a bug (500): this request only
                user_error = isinstance(e, CrayonboxError)
                log.error("admitting %s failed", ticket.id, exc_info=not user_error)
                with self._cond:
                    self._waiting.popleft()
                    message = str(e) if user_error else f"internal error: {e}"
                    self._finish_ticket(ticket, "failed", Failed(422 if user_error else 500, message))
                continue
            with self._cond:
                self._waiting.popleft()
                ticket.jobs, ticket.encoding = jobs, encodings[0]
                ticket.admitted_step, ticket.started_at = self.steps_done, self.clock()
                ticket.state = "decoding"
                self._running.append(ticket)
            ticket.emit(Started(self.steps_done))

    def _complete(self, finished: list[ImageJob[tuple[Ticket, int]]]) -> None:
        """Requests whose images all finished at this step (they joined together, so they end together)."""
        tickets = {id(job.tag[0]): job.tag[0] for job in finished}
        for ticket in tickets.values():
            began = self.clock()
            tokens = torch.tensor([job.tokens for job in ticket.jobs], dtype=torch.long)
            images = self.pipe.decode_images(tokens)  # one call per request: the same batch as offline
            self.paint_s_per_image = 0.8 * self.paint_s_per_image + 0.2 * (self.clock() - began) / len(images)
            now = self.clock()
            assert ticket.started_at is not None and ticket.encoding is not None
            result = Result(images, tokens, ticket.encoding, self.pipe.tokenizer.unconditional(),
                            [job.seed for job in ticket.jobs], ticket.work.settings,
                            queued_s=ticket.started_at - ticket.accepted_at,
                            decoding_s=now - ticket.started_at)
            self.images_done += len(images)
            with self._cond:
                self._finish_ticket(ticket, "done", Done(result))

    def _paint_frames(self) -> None:
        """Progressive frames, every `frame_every` tokens, while they use under `frame_budget` of the time."""
        decay = 0.98  # a window of ~50 steps, so the budget follows the current load
        self._frame_time *= decay
        self._busy_time *= decay
        for ticket in list(self._running):
            done = self.steps_done - (ticket.admitted_step or 0)
            if not ticket.work.frames or done % self.frame_every or done >= self.image_length:
                continue
            if self._frame_time > self.config.frame_budget * self._busy_time:
                continue  # over budget: skip this frame, the next one may fit
            began = self.clock()
            partial = torch.stack([self.decoding.partial_tokens(job) for job in ticket.jobs])
            ticket.emit(Frame(done, self.pipe.decode_images(partial)))
            self._frame_time += self.clock() - began

    def _finish_ticket(self, ticket: Ticket, state: str, event: Event) -> None:
        # called with self._cond held
        if ticket in self._running:
            self._running.remove(ticket)
        ticket.state, ticket.finished_at = state, self.clock()
        ticket.emit(event)
        self._cond.notify_all()

    def _fail_all(self, status: int, message: str) -> None:
        # called with self._cond held, from the worker as it stops
        for ticket in list(self._waiting) + list(self._running):
            if ticket in self._waiting:
                self._waiting.remove(ticket)
            self._finish_ticket(ticket, "failed", Failed(status, message, retry_after_s=10))
        self.decoding = self.pipe.new_decoding(self.capacity_rows)

    def _warmup(self) -> None:
        """Time a full batch for a few steps and one VQGAN decode: the ETA model's first rates."""
        images = self.capacity_rows // 2
        settings = self.pipe.defaults if self.pipe.defaults.condition_scale != 1 else SamplingSettings(2.0)
        jobs, _ = self.pipe.jobs("", images, 0, settings)
        self.decoding.add(jobs)
        self.decoding.step()  # untimed: first-call allocations
        began = self.clock()
        for _ in range(self.config.warmup_steps):
            self.decoding.step()
        step_s = (self.clock() - began) / max(self.config.warmup_steps, 1)
        self.decoding.remove(list(range(len(self.decoding.jobs))))
        sample = torch.zeros(min(images, MIN_REQUEST_IMAGES), self.image_length, dtype=torch.long)
        self.pipe.decode_images(sample[:1])
        began = self.clock()
        self.pipe.decode_images(sample)
        self.paint_s_per_image = (self.clock() - began) / len(sample)
        # a full batch finishes `images` images every image_length steps: spread their decodes over the steps
        self.step_s_full = step_s + self.paint_s_per_image * images / self.image_length


def cache_rows(pipe: Pipeline, config: SchedulerConfig) -> int:
    """KV-cache rows the decode batch gets: two per image, capped by the memory bound if one is set."""
    rows = 2 * config.max_batch_images
    if config.max_cache_mib > 0:
        rows = min(rows, int(config.max_cache_mib * 2**20 // cache_bytes_per_row(pipe)))
    return rows


def cache_bytes_per_row(pipe: Pipeline) -> int:
    """Bytes one cache row holds: self-attention K and V over the image positions, cross-attention K and V
    over the text positions, in every decoder layer, plus the text mask."""
    cfg = pipe.config
    element = torch.empty((), dtype=pipe.dtype).element_size()
    per_layer = 2 * cfg.heads * cfg.head_dim * (cfg.image_length + cfg.text_length) * element
    return cfg.decoder_layers * per_layer + cfg.text_length
