"""Every endpoint, every refusal, and served images byte-identical to offline generation."""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import Gate, make_app, png_pixels, wait_until

from crayonbox.serve.limits import RateLimitConfig


@pytest.fixture(scope="module")
def client(pipe):
    with TestClient(make_app(pipe)) as c:
        yield c


def sse_events(response) -> list[tuple[str, dict]]:
    events = []
    for block in response.text.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if lines:
            name = lines[0].removeprefix("event: ")
            events.append((name, json.loads(lines[1].removeprefix("data: "))))
    return events


def assert_matches_offline(pipe, body: dict, request: dict) -> None:
    offline = pipe(request["prompt"], num_images=request.get("n", 9), seed=request["seed"],
                   condition_scale=request.get("condition_scale"), top_k=request.get("top_k"),
                   temperature=request.get("temperature"))
    assert body["seeds"] == offline.seeds
    assert torch.equal(torch.tensor([im["image_tokens"] for im in body["images"]]), offline.tokens)
    for served, image in zip(body["images"], offline.images, strict=True):
        assert png_pixels(served["png_base64"]) == image.tobytes()
    assert body["text_ids"] == offline.encodings[0].ids
    assert body["unconditional_ids"] == offline.unconditional.ids
    assert body["settings"] == offline.settings.to_dict()


def test_generate_matches_offline_byte_for_byte(client, pipe):
    request = {"prompt": "a red dog on a yellow background", "n": 4, "seed": 11}
    r = client.post("/v1/generate", json=request)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seeds"] == [11, 12, 13, 14] and len(body["images"]) == 4
    assert body["normalized"] == " a red dog on a yellow background"
    assert_matches_offline(pipe, body, request)
    assert body["timing"]["total_s"] >= body["timing"]["decoding_s"] > 0


def test_concurrent_requests_with_mixed_settings_match_offline(client, pipe):
    # different prompts, sizes and settings share the batch; each must equal its own offline run
    requests = [{"prompt": "a blue cat", "n": 9, "seed": 100},
                {"prompt": "a woman in a sari", "n": 3, "seed": 7, "condition_scale": 1.0},
                {"prompt": "a green kimono", "n": 5, "seed": 42, "top_k": 4, "temperature": 0.7}]
    with ThreadPoolExecutor(len(requests)) as pool:
        responses = list(pool.map(lambda body: client.post("/v1/generate", json=body), requests))
    for request, r in zip(requests, responses, strict=True):
        assert r.status_code == 200, r.text
        assert_matches_offline(pipe, r.json(), request)


def test_random_seed_is_reported_and_reproducible(client, pipe):
    first = client.post("/v1/generate", json={"prompt": "a cat", "n": 2}).json()
    again = client.post("/v1/generate", json={"prompt": "a cat", "n": 2, "seed": first["seeds"][0]}).json()
    assert first["seeds"] == again["seeds"] == [first["seeds"][0], first["seeds"][0] + 1]
    assert [i["image_tokens"] for i in first["images"]] == [i["image_tokens"] for i in again["images"]]


def test_stream_sends_queue_frames_and_the_same_result(client, pipe):
    request = {"prompt": "a small dog", "n": 2, "seed": 5}
    r = client.post("/v1/generate/stream", json=request)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r)
    names = [name for name, _ in events]
    assert names[0] == "queued" and names[-1] == "result"
    assert events[0][1]["seeds"] == [5, 6] and events[0][1]["eta_s"] >= 0
    assert "started" in names
    frames = [data for name, data in events if name == "frame"]
    assert frames, "no progressive frame was sent"
    steps = [f["tokens_done"] for f in frames]
    assert steps == sorted(steps) and all(0 < s < pipe.config.image_length for s in steps)
    assert all(len(f["images"]) == 2 for f in frames)
    assert_matches_offline(pipe, events[-1][1], request)


def test_stream_without_frames(client):
    events = sse_events(client.post("/v1/generate/stream", json={"prompt": "a cat", "n": 1, "frames": False}))
    assert [n for n, _ in events if n == "frame"] == []
    assert events[-1][0] == "result"


def test_healthz_metrics_openapi_and_page(client, pipe):
    health = client.get("/healthz")
    assert health.status_code == 200
    h = health.json()
    assert h["status"] == "ok" and h["image_tokens"] == pipe.config.image_length
    assert h["cache_rows"] == 36 and h["defaults"]["condition_scale"] == pipe.defaults.condition_scale
    assert (h["precision"], h["precision_reason"]) == ("float32", "asked for")  # the fixture loads float32
    schema = client.get("/openapi.json").json()
    assert {"/v1/generate", "/v1/generate/stream", "/healthz"} <= set(schema["paths"])
    assert schema["components"]["schemas"]["GenerateRequest"]["properties"]["n"]["maximum"] == 9
    page = client.get("/")
    assert page.status_code == 200 and 'id="grid"' in page.text
    assert client.get("/static/app.js").status_code == 200


def test_metrics_exposition_counts_requests(pipe):
    with TestClient(make_app(pipe)) as c:
        assert c.post("/v1/generate", json={"prompt": "a dog", "n": 2, "seed": 1}).status_code == 200
        assert c.post("/v1/generate", json={"prompt": "a dog", "n": 0}).status_code == 422
        scrape = c.get("/metrics")
    assert scrape.headers["content-type"] == CONTENT_TYPE_LATEST
    text = scrape.text
    sample = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+Inf-]+$')
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    # label order is the exposition's business: a sample is its name and its labels, in any order
    labelled = {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}
    assert labelled["crayonbox_requests_total", (("code", "200"), ("endpoint", "generate"))] == 1
    assert labelled["crayonbox_requests_total", (("code", "422"), ("endpoint", "generate"))] == 1
    assert labelled["crayonbox_request_seconds_bucket", (("le", "+Inf"),)] == 1
    values = {name: v for (name, labels), v in labelled.items() if not labels}
    assert values["crayonbox_images_total"] == 2
    assert values["crayonbox_request_seconds_count"] == 1
    assert values["crayonbox_decode_steps_total"] >= pipe.config.image_length
    assert values["crayonbox_queue_images"] == 0 and values["crayonbox_batch_capacity_rows"] == 36
    assert values["crayonbox_tokens_per_second"] > 0
    for name in ("crayonbox_queue_images", "crayonbox_batch_images", "crayonbox_tokens_per_second"):
        assert f"# TYPE {name} gauge" in text
    assert "# TYPE crayonbox_request_seconds histogram" in text


def test_rate_limit_429_per_client(pipe):
    app = make_app(pipe, rate=RateLimitConfig(requests_per_minute=1, burst=1, max_in_flight=5))
    with TestClient(app) as c:
        assert c.post("/v1/generate", json={"prompt": "a dog", "n": 1}).status_code == 200
        r = c.post("/v1/generate", json={"prompt": "a dog", "n": 1})
        assert r.status_code == 429
        assert "at most 1 requests per minute" in r.json()["detail"]
        assert 50 <= int(r.headers["Retry-After"]) <= 60
        # a client with its own API key has its own bucket
        other = c.post("/v1/generate", json={"prompt": "a dog", "n": 1}, headers={"X-API-Key": "k2"})
        assert other.status_code == 200


def test_in_flight_limit_429(pipe):
    app = make_app(pipe, rate=RateLimitConfig(requests_per_minute=100, burst=100, max_in_flight=1))
    with TestClient(app) as c:
        gate = Gate(app.state.scheduler)
        first = threading.Thread(target=c.post, args=("/v1/generate",), kwargs={"json": {"prompt": "a"}})
        first.start()
        wait_until(lambda: app.state.scheduler.queue_requests == 1, what="first request queued")
        r = c.post("/v1/generate", json={"prompt": "b"})
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert "already has 1 request(s) running" in r.json()["detail"]
        gate.open()
        first.join(timeout=30)


def test_unknown_api_key_is_401_when_keys_are_configured(pipe):
    app = make_app(pipe)
    app.state.config.api_keys = frozenset({"good"})
    with TestClient(app) as c:
        bad = c.post("/v1/generate", json={"prompt": "a", "n": 1}, headers={"X-API-Key": "bad"})
        assert bad.status_code == 401 and "Retry-After" not in bad.headers
        good = c.post("/v1/generate", json={"prompt": "a", "n": 1}, headers={"X-API-Key": "good"})
        assert good.status_code == 200


def test_queue_full_503_then_accepted_work_completes(pipe):
    app = make_app(pipe, max_queue_images=12)
    with TestClient(app) as c, ThreadPoolExecutor(2) as pool:
        gate = Gate(app.state.scheduler)  # the worker holds: everything accepted stays queued
        accepted = [pool.submit(c.post, "/v1/generate", json={"prompt": "a dog", "n": 6, "seed": s})
                    for s in (1, 2)]
        wait_until(lambda: app.state.scheduler.queue_images == 12, what="12 images queued")
        r = c.post("/v1/generate", json={"prompt": "a cat", "n": 1})
        assert r.status_code == 503
        assert "12 images already waiting (limit 12)" in r.json()["detail"]
        assert int(r.headers["Retry-After"]) >= 1
        gate.open()
        assert [f.result(timeout=30).status_code for f in accepted] == [200, 200]  # nothing lost


def test_expected_wait_past_deadline_503(pipe):
    # With 0.1 s per step, a 9-image request takes 16 × 0.1 = 1.6 s and two run side by side (36 rows):
    # requests 1–2 end at 1.6 s, 3–4 at 3.2 s; the 5th would end at 4.8 s, past a 4 s deadline.
    app = make_app(pipe, deadline_s=4.0)
    with TestClient(app) as c, ThreadPoolExecutor(4) as pool:
        scheduler = app.state.scheduler
        gate = Gate(scheduler)
        scheduler.step_s_full, scheduler.paint_s_per_image = 0.1, 0.0
        accepted = [pool.submit(c.post, "/v1/generate", json={"prompt": "a dog", "n": 9, "seed": s})
                    for s in range(4)]
        wait_until(lambda: scheduler.queue_requests == 4, what="4 requests queued")
        assert scheduler.estimate(9) == pytest.approx((3.2, 4.8))
        r = c.post("/v1/generate", json={"prompt": "a cat", "n": 9})
        assert r.status_code == 503
        assert "about 5 s, over the 4 s deadline" in r.json()["detail"]
        assert r.headers["Retry-After"] == "1"  # 4.8 − 4 s, rounded up
        assert c.post("/v1/generate", json={"prompt": "a cat", "n": 9}).status_code == 503
        gate.open()
        assert [f.result(timeout=30).status_code for f in accepted] == [200] * 4


def test_healthz_says_which_precision_auto_chose_and_why(tiny_model_dir, monkeypatch):
    import crayonbox.model.hardware as hardware
    from crayonbox.serve.app import precision_of
    from crayonbox.serve.worker import WorkerProcess

    monkeypatch.setattr(hardware, "cpu_features", lambda: hardware.parse_cpuinfo(
        "model name\t: Test CPU\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16\n"))
    worker = WorkerProcess(tiny_model_dir, dtype="auto")  # not started: only its settings are read
    assert precision_of(worker).mode == "bfloat16" and "Test CPU" in precision_of(worker).reason
    assert precision_of(WorkerProcess(tiny_model_dir, dtype="int8")).mode == "int8"
