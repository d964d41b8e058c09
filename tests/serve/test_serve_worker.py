"""The model worker in its own process (`crayonbox serve`'s default): the same images as offline, refusals and
events across the pipe, a clean close, a worker that dies, a model that fails to load."""

from __future__ import annotations

import re
import shutil
import threading

import pytest
import torch
from fastapi.testclient import TestClient
from serve_helpers import png_pixels, wait_until

from crayonbox.errors import CrayonboxError
from crayonbox.serve import wire
from crayonbox.serve.app import ServeConfig, create_app
from crayonbox.serve.limits import RateLimitConfig, Refused
from crayonbox.serve.scheduler import SchedulerConfig
from crayonbox.serve.tickets import Done, Failed, Result, Started, Work
from crayonbox.serve.worker import WorkerProcess

RATE = RateLimitConfig(requests_per_minute=10_000, burst=1_000, max_in_flight=100)


def start_worker(folder, restart_min_uptime_s: float = 30.0, max_quick_restarts: int = 5,
                 **options) -> WorkerProcess:
    return WorkerProcess(folder, SchedulerConfig(**options), dtype="float32", threads=1,
                         restart_min_uptime_s=restart_min_uptime_s, max_quick_restarts=max_quick_restarts).start()


class Events:
    """A sink that records every event of one ticket and signals its end."""

    def __init__(self):
        self.events, self.ended = [], threading.Event()

    def __call__(self, event) -> None:
        self.events.append(event)
        if isinstance(event, (Done, Failed)):
            self.ended.set()


def test_worker_process_serves_offline_images_and_metrics(tiny_model_dir, pipe):
    app = create_app(start_worker(tiny_model_dir), ServeConfig(rate=RATE, shutdown_grace_s=5))
    with TestClient(app) as c:
        r = c.post("/v1/generate", json={"prompt": "a red dog", "n": 4, "seed": 21, "top_k": 8})
        assert r.status_code == 200, r.text
        body = r.json()
        offline = pipe("a red dog", num_images=4, seed=21, top_k=8)
        assert [im["image_tokens"] for im in body["images"]] == offline.tokens.tolist()
        assert [png_pixels(im["png_base64"]) for im in body["images"]] == [i.tobytes() for i in offline.images]
        assert body["text_ids"] == offline.encodings[0].ids and body["settings"]["top_k"] == 8
        stream = c.post("/v1/generate/stream", json={"prompt": "a cat", "n": 2, "seed": 3, "frames": True})
        names = [line.removeprefix("event: ") for line in stream.text.splitlines() if line.startswith("event:")]
        assert names[0] == "queued" and "started" in names and "frame" in names and names[-1] == "result"
        health = c.get("/healthz").json()
        assert health["status"] == "ok" and health["cache_rows"] == 36 and health["max_batch_images"] == 18
        assert health["precision"] == "float32"
        wait_until(lambda: app.state.scheduler.steps_done >= 2 * 16, what="the worker's step count")
        metrics = c.get("/metrics").text
        steps = float(re.search(r"^crayonbox_decode_steps_total (\S+)$", metrics, re.M).group(1))
        assert steps >= 32  # two 16-token requests (plus nothing else)
        step_count = float(re.search(r"^crayonbox_decode_step_seconds_count (\S+)$", metrics, re.M).group(1))
        assert step_count == steps
        calls = float(re.search(r"^crayonbox_worker_call_seconds_count (\S+)$", metrics, re.M).group(1))
        assert calls >= 3  # two submits and at least one stats call, each timed
        # validation happens on the web side, from the model's tokenizer and config (no weights there)
        bad = c.post("/v1/generate", json={"prompt": "a dog", "top_k": 10_000})
        assert bad.status_code == 422 and "image codes" in bad.text


def test_refusals_cross_the_pipe_with_status_and_retry_after(tiny_model_dir):
    worker = start_worker(tiny_model_dir, deadline_s=1e-6)  # every request would finish past this
    try:
        with pytest.raises(Refused) as refused:
            worker.submit(Work("a dog", 9, 0, worker.info.defaults), Events())
        assert refused.value.status == 503 and "over the 0 s deadline" in refused.value.message
        assert refused.value.retry_after_s > 0
        worker.drain()
        with pytest.raises(Refused, match="shutting down"):
            worker.submit(Work("a dog", 1, 0, worker.info.defaults), Events())
    finally:
        worker.close(grace_s=5)


def test_close_lets_accepted_work_finish_then_the_process_exits(tiny_model_dir):
    worker = start_worker(tiny_model_dir, max_queue_images=90)
    sinks = [Events() for _ in range(6)]
    tickets = [worker.submit(Work("a dog", 9, seed, worker.info.defaults), sink)
               for seed, sink in enumerate(sinks)]
    worker.close(grace_s=60)
    for ticket, sink in zip(tickets, sinks, strict=True):
        assert sink.ended.is_set() and isinstance(sink.events[-1], Done), sink.events
        assert isinstance(sink.events[0], Started) and ticket.state == "done"
        assert len(sink.events[-1].result.images) == 9
    assert worker._process.exitcode == 0 and worker.down == "shut down"


def test_a_worker_that_dies_at_once_fails_its_requests_with_503_and_stays_down(tiny_model_dir):
    # it died within restart_min_uptime_s of starting, and no quick restart is allowed: down for good, so its
    # refusals promise no time (test_serve_hostile.py has the back-off between allowed restarts)
    worker = start_worker(tiny_model_dir, max_quick_restarts=0, max_queue_images=400, deadline_s=1e6)
    sinks = [Events() for _ in range(40)]  # 360 images: seconds of work, far more than the kill takes
    for seed, sink in enumerate(sinks):
        worker.submit(Work("a dog", 9, seed, worker.info.defaults), sink)
    worker._process.kill()
    for sink in sinks:
        assert sink.ended.wait(30), "a request was left without an answer"
    failed = [s.events[-1] for s in sinks if isinstance(s.events[-1], Failed)]
    assert failed and all(f.status == 503 and "until its operator restarts it" in f.message for f in failed)
    assert all(f.retry_after_s is None for f in failed)
    assert all(isinstance(s.events[-1], (Done, Failed)) for s in sinks)
    assert worker.draining and "exited with code" in worker.down and "not restarted" in worker.down
    with pytest.raises(Refused, match="worker is down") as refused:
        worker.submit(Work("a dog", 1, 0, worker.info.defaults), Events())
    assert refused.value.status == 503 and refused.value.retry_after_s is None
    worker.close(grace_s=1)  # closing a dead worker is quiet


def test_a_worker_that_dies_later_is_restarted_and_serves_again(tiny_model_dir):
    worker = start_worker(tiny_model_dir, restart_min_uptime_s=0.0)
    try:
        first = worker._process
        in_flight = Events()
        worker.submit(Work("a dog", 9, 0, worker.info.defaults), in_flight)
        first.kill()
        assert in_flight.ended.wait(30) and isinstance(in_flight.events[-1], (Done, Failed))
        wait_until(lambda: worker.down == "" and worker._process is not first, 60, "a new worker")
        again = Events()
        worker.submit(Work("a dog", 2, 5, worker.info.defaults), again)
        assert again.ended.wait(30) and isinstance(again.events[-1], Done)
        assert len(again.events[-1].result.images) == 2
    finally:
        worker.close(grace_s=5)
    assert worker._process.exitcode == 0


def test_a_model_that_fails_to_load_is_one_clear_error(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "bart" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CrayonboxError, match="corrupt weights file .*bart/model.safetensors"):
        start_worker(broken)
    with pytest.raises(CrayonboxError, match="model folder not found"):
        WorkerProcess(tmp_path / "nowhere")


def test_the_pipe_carries_results_exactly_and_nothing_it_does_not_know(pipe):
    out = pipe("a red dog", num_images=2, seed=4)
    result = Result(out.images, out.tokens, out.encodings[0], out.unconditional, out.seeds, out.settings, 0.5, 1.5)
    back = wire.decode(wire.encode(("event", "r7", Done(result))))
    assert back[:2] == ["event", "r7"] and isinstance(back[2], Done)
    got = back[2].result
    assert torch.equal(got.tokens, out.tokens) and got.tokens.dtype == torch.long
    assert [im.tobytes() for im in got.images] == [im.tobytes() for im in out.images]
    assert got.encoding == out.encodings[0] and got.settings == out.settings and got.seeds == out.seeds
    with pytest.raises(ValueError, match="does not carry 'Popen'"):
        wire.decode(b'{"__type__": "Popen", "fields": {"args": "rm -rf /"}}')
    with pytest.raises(TypeError, match="cannot go over"):
        wire.encode(object())
