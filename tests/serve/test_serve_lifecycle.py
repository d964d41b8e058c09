"""Clients that go away have their rows cancelled; shutdown finishes accepted work or refuses it cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from serve_helpers import Gate, free_port, live_server, make_app, slow_steps, wait_until


def test_stream_disconnect_cancels_rows(pipe):
    app = make_app(pipe)
    with live_server(app) as url:
        scheduler = app.state.scheduler
        slow_steps(scheduler, 0.05)  # a request now lasts ≥ 16 × 50 ms
        with httpx.Client(timeout=30) as client:
            with client.stream("POST", f"{url}/v1/generate/stream",
                               json={"prompt": "a dog", "n": 9, "frames": False}) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("event: started"):
                        break
            # leaving the block closes the connection in the middle of decoding
        assert scheduler.decoding.rows_in_use == 18
        wait_until(lambda: scheduler.decoding.rows_in_use == 0 and scheduler.batch_images == 0,
                   what="the rows to be cancelled")
        metrics = app.state.metrics
        wait_until(lambda: metrics.value("crayonbox_cancelled_total") == 1, what="the cancel to be counted")
        assert metrics.value("crayonbox_requests_total", endpoint="stream", code="499") == 1
        assert scheduler.images_done == 0  # nothing was decoded to the end for a client who left


def test_generate_disconnect_cancels_rows(pipe):
    app = make_app(pipe)
    with live_server(app) as url:
        scheduler = app.state.scheduler
        slow_steps(scheduler, 0.1)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/generate", json={"prompt": "a cat", "n": 9}, timeout=0.5)
        wait_until(lambda: app.state.metrics.value("crayonbox_cancelled_total") == 1, what="the cancellation")
        wait_until(lambda: scheduler.decoding.rows_in_use == 0, what="rows to be freed")
        assert scheduler.images_done == 0


def test_drain_refuses_new_work_and_finishes_accepted_work(pipe):
    app = make_app(pipe)
    with TestClient(app) as c, ThreadPoolExecutor(1) as pool:
        scheduler = app.state.scheduler
        gate = Gate(scheduler)
        accepted = pool.submit(c.post, "/v1/generate", json={"prompt": "a dog", "n": 9, "seed": 1})
        wait_until(lambda: scheduler.queue_requests == 1, what="the request to be queued")
        scheduler.drain()
        refused = c.post("/v1/generate", json={"prompt": "a cat", "n": 1})
        assert refused.status_code == 503 and "shutting down" in refused.json()["detail"]
        assert int(refused.headers["Retry-After"]) >= 1
        health = c.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "draining"
        gate.open()
        assert accepted.result(timeout=30).status_code == 200


def test_shutdown_past_grace_fails_in_flight_work_with_503(pipe):
    app = make_app(pipe)
    with TestClient(app) as c, ThreadPoolExecutor(1) as pool:
        scheduler = app.state.scheduler
        gate = Gate(scheduler)
        stream = pool.submit(c.post, "/v1/generate/stream", json={"prompt": "a dog", "n": 9})
        wait_until(lambda: scheduler.queue_requests == 1, what="the request to be queued")
        closer = threading.Thread(target=scheduler.close, kwargs={"grace_s": 0})
        closer.start()
        wait_until(lambda: scheduler._stopping, what="the stop")
        gate.open()
        closer.join(timeout=30)
        body = stream.result(timeout=30).text
    last = [block for block in body.split("\n\n") if block.startswith("event:")][-1]
    name, data = last.split("\n")
    assert name == "event: error"
    error = json.loads(data.removeprefix("data: "))
    assert error["status"] == 503 and "shut down before this request finished" in error["detail"]
    assert error["retry_after"] >= 1


def test_sigterm_lets_accepted_requests_finish(tiny_model_dir, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "-m", "crayonbox.cli", "serve", "--model", str(tiny_model_dir),
                               "--port", str(port), "--threads", "1", "--log-level", "warning"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                assert server.poll() is None, server.stdout.read()
                return False

        wait_until(healthy, 60, "the server to start")
        accepted = threading.Barrier(5)

        def generate(seed: int) -> str:
            with httpx.Client(timeout=60, headers={"X-API-Key": f"client-{seed}"}) as client:
                with client.stream("POST", f"{url}/v1/generate/stream",
                                   json={"prompt": "a dog", "n": 9, "seed": seed, "frames": False}) as r:
                    lines = r.iter_lines()
                    assert next(lines) == "event: queued"
                    accepted.wait(timeout=30)
                    return "\n".join(lines)

        with ThreadPoolExecutor(4) as pool:
            results = [pool.submit(generate, seed) for seed in range(4)]
            accepted.wait(timeout=30)  # all four were accepted: now ask the server to stop
            server.send_signal(signal.SIGTERM)
            bodies = [r.result(timeout=60) for r in results]
        assert all("event: result" in body for body in bodies), bodies
        # uvicorn re-raises the signal once shut down: the exit reads "terminated by SIGTERM", like any daemon
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=1)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
