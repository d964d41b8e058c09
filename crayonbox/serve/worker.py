"""The model worker in a process of its own: `crayonbox serve` runs the `Scheduler` there, so the web layer's
Python (HTTP parsing, validation, JSON, PNG, refusals) never holds the GIL that the decode loop needs.

Why: in one process, under 32 clients, the decode thread blocked on the GIL ~80 times a second and was on the
CPU for only 0.943–0.955 of the wall time (0.9995 without the web layer); in its own process 0.967–0.970.
docs/serving.md has the measurements.

    worker = WorkerProcess("path/to/model", SchedulerConfig(), dtype="auto", threads=1).start()
    app = create_app(worker, config)          # the web layer cannot tell it from an in-process Scheduler

`WorkerProcess` offers the `Scheduler`'s surface (submit, cancel, progress, drain, close and the gauges). One
duplex pipe, private to the server and its own child process, carries everything as JSON with an allow-list
of types (`wire.py`; nothing is unpickled): calls and their replies, and the tickets' events. A ticket's id is
chosen on this side before its work is sent, so no event can arrive for a ticket this side does not know. If
the worker dies, what it held fails with a 503 its client can act on, new work is refused with 503, and a new
worker is started: at once after a worker that had been serving, with a doubling back-off while new workers keep
dying within `restart_min_uptime_s` of starting (a crash loop), and never again after `max_quick_restarts` such
deaths in a row. `Retry-After` then says when the next attempt should be serving; once the server has given
up, the 503s carry no `Retry-After` (no time can be promised) and `/healthz` says "worker down" and why.
"""

from __future__ import annotations

import itertools
import logging
import math
import multiprocessing
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crayonbox.errors import CrayonboxError
from crayonbox.model_folder import ModelInfo
from crayonbox.serve.limits import Refused
from crayonbox.serve.metrics import CALL_BUCKETS, STEP_BUCKETS, PortableHistogram
from crayonbox.serve.scheduler import SchedulerConfig, SchedulerLike
from crayonbox.serve.tickets import Done, Event, Failed, Queued, Started, Ticket, Work
from crayonbox.serve.wire import Channel
from crayonbox.serve.worker_main import GAUGES, worker_main

log = logging.getLogger("crayonbox.serve")
STATS_MAX_AGE_S = 0.25  # gauges read within this long of each other share one call to the worker
MAX_RESTART_DELAY_S = 300.0  # the back-off between restarts of a crash-looping worker stops doubling here


class _Call:
    """A call to the worker waiting for its reply."""

    def __init__(self):
        self.done = threading.Event()
        self.ok, self.value = False, None


class _Gauge:
    """A read-only scheduler gauge of a WorkerProcess: the value in its latest stats snapshot."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, worker: WorkerProcess | None, owner: type | None = None) -> Any:
        return self if worker is None else worker._snapshot()[self.name]


class WorkerProcess(SchedulerLike):
    """A `Scheduler` in a child process, driven over a pipe. `info` is the model's `ModelInfo`."""

    def __init__(self, folder: str | Path, config: SchedulerConfig | None = None, dtype: str = "auto",
                 threads: int = 0, log_level: str = "warning", start_timeout_s: float = 900.0,
                 restart_min_uptime_s: float = 30.0, restart_backoff_s: float = 2.0, max_quick_restarts: int = 5,
                 device: str = "auto"):
        """A worker that dies is restarted. One that dies (or fails to load) within `restart_min_uptime_s` of
        starting is in a crash loop: the next attempt waits `restart_backoff_s`, doubling each time, and after
        `max_quick_restarts` such deaths in a row the server gives up on it (503 without `Retry-After`)."""
        self.folder, self.config = Path(folder), config or SchedulerConfig()
        self.dtype, self.threads, self.log_level, self.device = dtype, threads, log_level, device
        self.start_timeout_s, self.restart_min_uptime_s = start_timeout_s, restart_min_uptime_s
        self.restart_backoff_s, self.max_quick_restarts = restart_backoff_s, max_quick_restarts
        self.info = ModelInfo.from_folder(self.folder)  # fails fast, before a process starts
        self.capacity_rows = 0  # known once the worker is up
        self.step_seconds = PortableHistogram("crayonbox_decode_step_seconds",
                                              "one decode step of the whole batch",
                                              STEP_BUCKETS)  # a copy of the worker's, refreshed with the gauges
        # submit and progress block the event loop for one round trip: this says for how long
        self.call_seconds = PortableHistogram("crayonbox_worker_call_seconds", "round trip of a call to the "
                                              "model worker process (submit, progress, stats)", CALL_BUCKETS)
        self._tickets: dict[str, Ticket] = {}
        self._calls: dict[int, _Call] = {}
        self._lock = threading.Lock()  # _tickets, _calls, _accepting, _down
        self._ticket_ids, self._call_ids = itertools.count(1), itertools.count(1)
        self._accepting, self._down = True, ""  # _down: why the worker is gone, once it is
        self._stats: dict[str, Any] = {name: 0 for name in GAUGES}
        self._stats_at = float("-inf")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._reader: threading.Thread | None = None
        self._restarting: threading.Thread | None = None
        self._started_at, self._closing = 0.0, False
        self._stop = threading.Event()  # set by close: a restart waiting out its back-off gives up at once
        self._quick_crashes = 0  # deaths in a row, each within restart_min_uptime_s of starting
        self._restart_at: float | None = None  # monotonic time of the next restart attempt; None: none planned
        self._start_s = 0.0  # how long the last start took (spawn to ready), part of the restart ETA

    # ------------------------------------------------------------------ life cycle
    def start(self) -> WorkerProcess:
        """Start the worker, wait until it has loaded the model and warmed up. Idempotent."""
        if self._process is None:
            self._spawn()
        return self

    def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")  # fork would copy this process's threads' locks
        began = time.monotonic()
        end, child = context.Pipe(duplex=True)
        conn = Channel(end)
        process = context.Process(
            target=worker_main, name="crayonbox-worker", daemon=True,
            args=(child, str(self.folder), self.dtype, self.threads, self.config, self.log_level, self.device))
        process.start()
        child.close()
        try:
            if not conn.poll(self.start_timeout_s):
                raise CrayonboxError(f"the model worker did not start within {self.start_timeout_s:.0f} s")
            kind, payload = conn.recv()
        except (EOFError, OSError):
            process.join(timeout=10)
            raise CrayonboxError(f"the model worker exited (code {process.exitcode}) while loading "
                                 f"{self.folder}; its log is above") from None
        except CrayonboxError:
            process.kill()
            raise
        if kind == "error":
            process.join(timeout=10)
            raise CrayonboxError(payload)
        with self._lock:
            self._conn, self._process, self._started_at = conn, process, time.monotonic()
            self.capacity_rows, self._down, self._restart_at = payload["capacity_rows"], "", None
            self._start_s = self._started_at - began
        self._reader = threading.Thread(target=self._read_loop, args=(conn, process),
                                        name="crayonbox-worker-pipe", daemon=True)
        self._reader.start()

    def _crashed(self, why: str, quick: bool) -> None:
        """A worker died (`quick`: within restart_min_uptime_s of starting, or while starting): plan the next
        attempt, or give up after too many quick deaths in a row. Fails what the dead worker held."""
        self._quick_crashes = self._quick_crashes + 1 if quick else 0
        n = self._quick_crashes
        if n > self.max_quick_restarts:
            self._restart_at = None
            self._gone(f"{why}; not restarted: it died {n} times in a row, each within "
                       f"{self.restart_min_uptime_s:g} s of starting (see the log)")
            log.error("giving up on the model worker after %d quick deaths in a row: the server stays up but "
                      "refuses work until it is restarted", n)
            return
        delay = 0.0 if n == 0 else min(self.restart_backoff_s * 2 ** (n - 1), MAX_RESTART_DELAY_S)
        self._restart_at = time.monotonic() + delay
        self._gone(f"{why}; restarting" + (f" in {delay:g} s (quick death {n} of at most "
                                           f"{self.max_quick_restarts})" if n else ""))
        if threading.current_thread() is not self._restarting:
            self._restarting = threading.Thread(target=self._restart, args=(delay,),
                                                name="crayonbox-worker-restart", daemon=True)
            self._restarting.start()

    def _restart(self, delay: float) -> None:
        """Start a new worker after `delay`; while it waits and loads, work is refused with 503 (and the time
        until it should serve). A start that fails counts as a quick death and backs off in turn."""
        while not self._stop.wait(delay):
            log.warning("restarting the model worker")
            try:
                self._spawn()
            except CrayonboxError as e:
                log.error("the model worker could not be restarted: %s", e)
                self._crashed(f"could not be restarted: {e}", quick=True)
                if self._restart_at is None:
                    return  # gave up
                delay = max(0.0, self._restart_at - time.monotonic())
                continue
            log.warning("the model worker is back")
            return

    @property
    def restart_eta_s(self) -> float | None:
        """Seconds until a worker that died should serve again: the back-off left plus the last start's
        duration. None when no restart is planned (running, or given up on)."""
        restart_at = self._restart_at
        if restart_at is None:
            return None
        return max(0.0, restart_at - time.monotonic()) + self._start_s

    def _down_refusal(self) -> Refused:
        eta = self.restart_eta_s
        if eta is None:
            return Refused(503, f"the model worker is down ({self._down}); the server cannot serve until its "
                           "operator restarts it", retry_after_s=None)
        return Refused(503, f"the model worker is down ({self._down}); try again in about {math.ceil(eta)} s",
                       retry_after_s=eta)

    def drain(self) -> None:
        """Stop accepting work; what was accepted goes on. Only a flag: the server calls this from a signal
        handler, which may have interrupted this very thread inside a lock or a pipe write. Every submit
        passes here first, so the worker need not hear of it before `close`."""
        self._accepting = False

    @property
    def draining(self) -> bool:
        """True once shutdown began or the worker is gone: new work is refused."""
        return not self._accepting or bool(self._down)

    @property
    def down(self) -> str:
        """Why the worker process is gone ("" while it runs)."""
        return self._down

    def close(self, grace_s: float = 60.0) -> None:
        """Graceful shutdown, as `Scheduler.close`: accepted work may finish for `grace_s`, the rest fails
        with a 503; then the worker process exits."""
        self.drain()
        self._closing = True
        self._stop.set()
        if self._restarting is not None:
            self._restarting.join(timeout=self.start_timeout_s)
        if self._process is None:
            return
        self._send(("close", grace_s))
        if self._reader is not None:
            self._reader.join(timeout=grace_s + 30)
        if self._process is not None:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()

    # ------------------------------------------------------------------ requests
    def submit(self, work: Work, sink: Callable[[Event], None]) -> Ticket:
        """Queue `work` in the worker, or raise `Refused` (its own, or 503 when the worker is gone)."""
        with self._lock:
            if self._down:
                raise self._down_refusal()
            if not self._accepting:
                raise Refused(503, "the server is shutting down; try again shortly", retry_after_s=10)
            ticket = Ticket(f"r{next(self._ticket_ids)}", work, sink, time.monotonic(), 0)
            self._tickets[ticket.id] = ticket
        try:
            refusal = self._call("submit", ticket.id, work)
        except Refused:
            with self._lock:
                self._tickets.pop(ticket.id, None)
            raise
        if refusal is not None:
            with self._lock:
                self._tickets.pop(ticket.id, None)
            raise Refused(*refusal)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Withdraw a request (its client went away)."""
        with self._lock:
            if self._tickets.pop(ticket.id, None) is None:
                return
            ticket.state = "cancelled"
        self._send(("cancel", ticket.id))

    def progress(self, ticket: Ticket) -> Queued | None:
        """Where a waiting request stands (None once it is decoding or done)."""
        if ticket.state != "queued":
            return None
        try:
            return self._call("progress", ticket.id)
        except Refused:
            return None

    def estimate(self, n: int = 9) -> tuple[float, float]:
        """(seconds to start, seconds to finish) for a new request of `n` images at default settings."""
        start, finish = self._call("estimate", n)
        return start, finish

    # The scheduler's gauges (worker_main.GAUGES), read from the worker at most every STATS_MAX_AGE_S.
    queue_images: int = _Gauge()  # type: ignore[assignment]
    queue_requests: int = _Gauge()  # type: ignore[assignment]
    batch_images: int = _Gauge()  # type: ignore[assignment]
    batch_rows: int = _Gauge()  # type: ignore[assignment]
    tokens_per_s: float = _Gauge()  # type: ignore[assignment]
    step_s_full: float = _Gauge()  # type: ignore[assignment]
    steps_done: int = _Gauge()  # type: ignore[assignment]
    images_done: int = _Gauge()  # type: ignore[assignment]
    worker_errors: int = _Gauge()  # type: ignore[assignment]

    def _snapshot(self) -> dict[str, Any]:
        if time.monotonic() - self._stats_at > STATS_MAX_AGE_S and not self._down:
            try:
                stats = self._call("stats", timeout_s=5)
            except Refused:
                return self._stats
            self.step_seconds.load(*stats.pop("step_seconds"))
            self._stats, self._stats_at = stats, time.monotonic()
        return self._stats

    # ------------------------------------------------------------------ the pipe
    def _send(self, message: tuple) -> None:
        try:
            self._conn.send(message)
        except OSError:  # the worker is gone: the reader says so and fails what it held
            pass

    def _call(self, op: str, *args: Any, timeout_s: float = 30.0) -> Any:
        """Run `op` in the worker and return its value; a worker that is gone or silent is a 503."""
        call, number = _Call(), next(self._call_ids)
        with self._lock:
            if self._process is None:
                raise Refused(503, "the model worker has not started yet; try again shortly", 5)
            if self._down:
                raise self._down_refusal()
            self._calls[number] = call
        began = time.perf_counter()
        self._send(("call", number, op, args))
        answered = call.done.wait(timeout_s)
        self.call_seconds.observe(time.perf_counter() - began)
        if not answered:
            with self._lock:
                self._calls.pop(number, None)
            raise Refused(503, f"the model worker did not answer within {timeout_s:.0f} s", 10)
        if not call.ok:
            raise Refused(503, f"the model worker failed: {call.value}", 10)
        return call.value

    def _read_loop(self, conn: Channel, process: multiprocessing.process.BaseProcess) -> None:
        """Replies wake their callers; events go to their tickets. Ends when the worker closes the pipe."""
        try:
            while True:
                message = conn.recv()
                if message[0] == "reply":
                    _, number, ok, value = message
                    with self._lock:
                        call = self._calls.pop(number, None)
                    if call is not None:
                        call.ok, call.value = ok, value
                        call.done.set()
                elif message[0] == "event":
                    self._dispatch(message[1], message[2])
                elif message[0] == "closed":
                    self._gone("shut down")
                    return
        except (EOFError, OSError):
            process.join(timeout=5)
            why = f"exited with code {process.exitcode}"
            if self._closing:
                self._gone(why)
                return
            log.error("the model worker stopped unexpectedly (exit code %s)", process.exitcode)
            # one that dies soon after starting would likely die again: restarts back off, then stop
            self._crashed(why, quick=time.monotonic() - self._started_at < self.restart_min_uptime_s)
        finally:
            conn.close()

    def _dispatch(self, ticket_id: str, event: Event) -> None:
        with self._lock:
            ticket = self._tickets.get(ticket_id)
            if ticket is None:
                return  # cancelled here; the worker had not heard yet
            if isinstance(event, Started):
                ticket.state, ticket.admitted_step = "decoding", event.step
            elif isinstance(event, (Done, Failed)):
                ticket.state = "done" if isinstance(event, Done) else "failed"
                del self._tickets[ticket_id]
        ticket.emit(event)

    def _gone(self, why: str) -> None:
        """The worker is gone: fail what it held and every waiting call."""
        with self._lock:
            self._down = why
            tickets, self._tickets = list(self._tickets.values()), {}
            calls, self._calls = list(self._calls.values()), {}
        for call in calls:
            call.ok, call.value = False, f"the worker {why}"
            call.done.set()
        eta: float | None = self.restart_eta_s  # None once given up on: no Retry-After to promise
        again = "try again later" if eta is not None else "the server cannot serve until its operator restarts it"
        if self._closing:
            eta, again = 10.0, "the server is shutting down; try again shortly"
        for ticket in tickets:
            ticket.state = "failed"
            ticket.emit(Failed(503, f"the model worker {why} before this request finished; {again}",
                               retry_after_s=eta))
