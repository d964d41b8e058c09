"""The model worker process's side of `worker.WorkerProcess`: load the model, run a `Scheduler`, and answer the
server over the pipe. Imported in the child only through `worker_main` (the spawn target)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from crayonbox.errors import CrayonboxError
from crayonbox.serve.limits import Refused
from crayonbox.serve.scheduler import Scheduler, SchedulerConfig
from crayonbox.serve.tickets import Done, Event, Failed, Queued, Ticket, Work
from crayonbox.serve.wire import Channel

log = logging.getLogger("crayonbox.serve")
# the scheduler's gauges the server reads (one `stats` call returns them all, with the step histogram)
GAUGES = ("queue_images", "queue_requests", "batch_images", "batch_rows", "tokens_per_s", "step_s_full",
          "steps_done", "images_done", "worker_errors")


def worker_main(conn, folder: str, dtype: str, threads: int, config: SchedulerConfig, log_level: str,
                device: str = "auto") -> None:
    """The worker process: load the model, start the scheduler, then serve the parent's messages until it
    says close or goes away. Signals are the parent's to handle (Ctrl-C reaches the whole process group, and
    the parent drains instead of dying)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=log_level.upper(), format="crayonbox-worker %(levelname)s: %(message)s")
    channel = Channel(conn)
    try:
        import torch

        from crayonbox.pipeline import Pipeline

        if threads:
            torch.set_num_threads(threads)
        scheduler = Scheduler(Pipeline.from_pretrained(folder, dtype=dtype, device=device), config).start()
    except Exception as e:  # the parent prints it as the CLI's one-line error
        user_error = isinstance(e, CrayonboxError)
        if not user_error:  # a user's error is the parent's one line; anything else keeps its traceback here
            log.error("loading %s failed", folder, exc_info=True)
        channel.send(("error", str(e) if user_error else f"the model worker failed to start: {type(e).__name__}: {e}"))
        return
    channel.send(("ready", {"capacity_rows": scheduler.capacity_rows}))
    _serve_parent(channel, scheduler)
    # Everything is answered and the pipe is closed. Leave without the interpreter's teardown, which can abort
    # (SIGABRT) when it finalises torch while the scheduler's daemon threads are still unwinding.
    logging.shutdown()
    os._exit(0)


def _serve_parent(channel: Channel, scheduler: Scheduler) -> None:
    send = channel.send
    tickets: dict[str, Ticket] = {}

    def sink_for(ticket_id: str) -> Callable[[Event], None]:
        def sink(event: Event) -> None:
            if isinstance(event, (Done, Failed)):
                tickets.pop(ticket_id, None)
            send(("event", ticket_id, event))
        return sink

    def submit(ticket_id: str, work: Work) -> tuple | None:
        try:
            ticket = scheduler.submit(work, sink_for(ticket_id), ticket_id=ticket_id)
        except Refused as e:
            return e.status, e.message, e.retry_after_s
        if ticket.unfinished:
            tickets[ticket_id] = ticket
        return None

    def stats() -> dict[str, Any]:
        return {**{name: getattr(scheduler, name) for name in GAUGES},
                "step_seconds": scheduler.step_seconds.state()}

    def progress(ticket_id: str) -> Queued | None:
        ticket = tickets.get(ticket_id)
        return scheduler.progress(ticket) if ticket is not None else None

    def close(grace_s: float) -> None:
        scheduler.close(grace_s)
        send(("closed",))

    calls = {"submit": submit, "stats": stats, "progress": progress, "estimate": scheduler.estimate}
    while True:
        try:
            message = channel.recv()
        except (EOFError, OSError):  # the parent is gone (or closed the pipe after "closed")
            scheduler.close(0)
            return
        kind = message[0]
        if kind == "call":
            _, number, op, args = message
            try:
                send(("reply", number, True, calls[op](*args)))
            except Exception as e:  # a bug must answer its caller, not hang it
                log.exception("worker call %s failed", op)
                send(("reply", number, False, f"{type(e).__name__}: {e}"))
        elif kind == "cancel":
            ticket = tickets.pop(message[1], None)
            if ticket is not None:
                scheduler.cancel(ticket)
        elif kind == "close":  # in a thread: cancels from clients leaving during the grace period still count
            threading.Thread(target=close, args=(message[1],), daemon=True).start()
