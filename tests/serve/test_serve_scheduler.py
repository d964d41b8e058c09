"""The scheduler: newcomers join a running batch at the next step, cancelled rows leave, frames keep to their
budget, the cache respects its memory bound."""

from __future__ import annotations

import queue

import pytest
import torch
from serve_helpers import slow_steps, wait_until

from crayonbox.errors import CrayonboxError
from crayonbox.serve.scheduler import Scheduler, SchedulerConfig, cache_bytes_per_row
from crayonbox.serve.tickets import Done, Frame, Started, Work


def work(pipe, prompt: str, n: int, seed: int, frames: bool = False, **settings) -> Work:
    return Work(prompt, n, seed, pipe.settings(**settings), frames=frames)


class Events:
    """A sink that records a ticket's events for the test thread."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()

    def __call__(self, event) -> None:
        self.queue.put(event)

    def until(self, kind, timeout: float = 30.0):
        seen = []
        while True:
            event = self.queue.get(timeout=timeout)
            seen.append(event)
            if isinstance(event, kind):
                return event, seen


@pytest.fixture
def scheduler(pipe):
    s = Scheduler(pipe, SchedulerConfig(max_batch_images=18, frame_budget=1.0)).start()
    yield s
    s.close(grace_s=5)


def test_newcomer_starts_within_one_step_of_arriving_mid_batch(scheduler, pipe):
    length = pipe.config.image_length
    slow_steps(scheduler, 0.02)  # the first request then lasts ≥ 16 × 20 ms: time to arrive mid-way
    first_events, second_events = Events(), Events()
    first = scheduler.submit(work(pipe, "a red dog", 9, 1), first_events)
    started_first, _ = first_events.until(Started)
    wait_until(lambda: scheduler.steps_done >= started_first.step + 5, what="5 steps of the first request")
    second = scheduler.submit(work(pipe, "a blue cat", 4, 2), second_events)
    second_events.until(Started)
    # the first request is mid-way, and the second joined its batch at the next step boundary
    assert first.admitted_step < second.admitted_step < first.admitted_step + length
    assert second.admitted_step - second.arrival_step <= 1
    assert first.state == "decoding"
    done, _ = second_events.until(Done)
    offline = pipe("a blue cat", num_images=4, seed=2)
    assert torch.equal(done.result.tokens, offline.tokens)  # joining late changes nothing
    assert [i.tobytes() for i in done.result.images] == [i.tobytes() for i in offline.images]
    first_events.until(Done)


def test_cancel_frees_rows_and_the_rest_go_on(scheduler, pipe):
    slow_steps(scheduler, 0.02)
    keep_events, drop_events = Events(), Events()
    keep = scheduler.submit(work(pipe, "a cat", 3, 5), keep_events)
    drop = scheduler.submit(work(pipe, "a dog", 9, 6), drop_events)
    drop_events.until(Started)
    keep_events.until(Started)
    assert scheduler.decoding.rows_in_use == 2 * (3 + 9)
    scheduler.cancel(drop)
    wait_until(lambda: drop.state == "cancelled", what="the cancellation")
    assert scheduler.decoding.rows_in_use <= 2 * 3
    assert all(job.tag[0] is keep for job in scheduler.decoding.jobs)
    done, _ = keep_events.until(Done)
    assert torch.equal(done.result.tokens, pipe("a cat", num_images=3, seed=5).tokens)
    assert keep.state == "done"


def test_cancel_while_queued(pipe):
    s = Scheduler(pipe, SchedulerConfig())  # not started: everything stays queued
    ticket = s.submit(work(pipe, "a dog", 9, 1), Events())
    assert s.queue_images == 9
    s.cancel(ticket)
    assert s.queue_images == 0 and ticket.state == "cancelled"


def test_frames_every_n_tokens_and_within_budget(pipe):
    every = 4
    s = Scheduler(pipe, SchedulerConfig(frame_every=every, frame_budget=1.0)).start()
    try:
        events = Events()
        s.submit(work(pipe, "a dog", 2, 3, frames=True), events)
        done, seen = events.until(Done)
        frames = [e for e in seen if isinstance(e, Frame)]
        assert [f.tokens_done for f in frames] == list(range(every, pipe.config.image_length, every))
        assert all(len(f.images) == 2 for f in frames)
        side = pipe.vqgan_config.resolution
        assert frames[-1].images[0].size == done.result.images[0].size == (side, side)
    finally:
        s.close(5)
    s = Scheduler(pipe, SchedulerConfig(frame_every=every, frame_budget=0.0)).start()
    try:
        events = Events()
        s.submit(work(pipe, "a dog", 2, 3, frames=True), events)
        _, seen = events.until(Done)
        # a zero budget allows at most the very first frame (nothing has been spent yet)
        assert len([e for e in seen if isinstance(e, Frame)]) <= 1
    finally:
        s.close(5)


def test_memory_bound_caps_the_cache(pipe):
    per_row = cache_bytes_per_row(pipe)
    cfg = pipe.config
    kv_per_layer = 2 * cfg.heads * cfg.head_dim * (cfg.image_length + cfg.text_length) * 4  # K and V, fp32
    assert per_row == cfg.decoder_layers * kv_per_layer + cfg.text_length
    mib = 20 * per_row / 2**20  # room for exactly 20 rows
    assert Scheduler(pipe, SchedulerConfig(max_batch_images=18, max_cache_mib=mib)).capacity_rows == 20
    with pytest.raises(CrayonboxError, match="fewer than the 18 a 9-image request needs"):
        Scheduler(pipe, SchedulerConfig(max_cache_mib=10 * per_row / 2**20))


def test_forecast_counts_running_and_queued_rows(pipe):
    s = Scheduler(pipe, SchedulerConfig(max_batch_images=9))  # 18 rows: one 9-image request at a time
    s.step_s_full, s.paint_s_per_image = 0.5, 0.0
    length = pipe.config.image_length
    assert s.estimate(9) == (0.0, length * 0.5)
    s.submit(work(pipe, "a", 9, 0), Events())
    s.submit(work(pipe, "b", 3, 0, condition_scale=1.0), Events())  # 3 rows: waits for the first
    start, finish = s.estimate(9)
    assert (start, finish) == (2 * length * 0.5, 3 * length * 0.5)
