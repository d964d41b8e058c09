"""`POST /v1/images/generations`: the official openai client draws the same PNG bytes as `/v1/generate`, and
every refusal comes in OpenAI's error shape with the right status (400, 401, 413, 429, 503)."""

from __future__ import annotations

import base64
import io
import time

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serve_helpers import Gate, live_server, make_app, wait_until

from crayonbox.serve.limits import RateLimitConfig

PATH = "/v1/images/generations"


@pytest.fixture(scope="module")
def client(pipe):
    with TestClient(make_app(pipe)) as c:
        yield c


def openai_error(response, status: int, param: str | None, code: str | None = None) -> str:
    """Check OpenAI's error shape and return the message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["param"] == param
    assert body["error"]["code"] == code
    assert body["error"]["type"] == ("invalid_request_error" if status < 429 else
                                     {429: "requests", 503: "server_error"}[status])
    return body["error"]["message"]


def test_openai_client_gets_the_same_pngs_as_generate(pipe):
    app = make_app(pipe)
    side = pipe.vqgan_config.resolution
    prompt = "a red dog on a yellow background"
    with live_server(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="test-client", max_retries=0, timeout=60)
        before = int(time.time())
        result = client.images.generate(model=app.state.config.model_name, prompt=prompt, n=2,
                                        size=f"{side}x{side}", response_format="b64_json",
                                        extra_body={"seed": 7, "top_k": 16})
        reference = httpx.post(f"{url}/v1/generate", json={"prompt": prompt, "n": 2, "seed": 7, "top_k": 16},
                               timeout=60).json()
        with pytest.raises(openai.BadRequestError) as bad:
            client.images.generate(prompt=prompt, n=1, size="1024x1024")
    assert before <= result.created <= int(time.time())
    assert len(result.data) == 2
    assert [base64.b64decode(d.b64_json) for d in result.data] == \
        [base64.b64decode(im["png_base64"]) for im in reference["images"]]
    assert all(d.revised_prompt == reference["normalized"] == " a red dog on a yellow background"
               for d in result.data)
    offline = pipe(prompt, num_images=2, seed=7, top_k=16)
    decoded = [Image.open(io.BytesIO(base64.b64decode(d.b64_json))) for d in result.data]
    assert [im.size for im in decoded] == [(side, side)] * 2
    assert [im.convert("RGB").tobytes() for im in decoded] == [im.tobytes() for im in offline.images]
    assert bad.value.status_code == 400
    assert bad.value.param == "size" and bad.value.code == "invalid_size"
    assert f"size must be '{side}x{side}' (the model's native size), not '1024x1024'" in bad.value.message
    accepted = app.state.metrics.value("crayonbox_requests_total", endpoint="openai", code="200")
    refused = app.state.metrics.value("crayonbox_requests_total", endpoint="openai", code="400")
    assert (accepted, refused) == (1, 1)


def test_defaults_one_image_and_answers_seed_and_shape(client, pipe):
    r = client.post(PATH, json={"prompt": "a cat", "seed": 3, "user": "someone"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"created", "data"} and len(body["data"]) == 1
    assert set(body["data"][0]) == {"b64_json", "revised_prompt", "seed"} and body["data"][0]["seed"] == 3


@pytest.mark.parametrize(("body", "param", "code", "message"), [
    ({"prompt": "a cat", "size": "64x64"}, "size", "invalid_size", "size must be '16x16'"),
    ({"prompt": "a cat", "response_format": "url"}, "response_format", "unsupported_response_format",
     "response_format 'url' is not supported: this server keeps no files"),
    ({"prompt": "a cat", "response_format": "jpeg"}, "response_format", None, "must be 'b64_json'"),
    ({"prompt": "a cat", "model": "dall-e-3"}, "model", "model_not_found",
     "model 'dall-e-3' is not served here; this server serves 'crayonbox'"),
    ({"prompt": "a cat", "quality": "hd"}, "quality", None, "Unrecognized request argument supplied: quality"),
    ({"n": 2}, "prompt", None, "Missing required parameter: 'prompt'"),
    ({"prompt": "a cat", "n": 10}, "n", None, "n: Input should be less than or equal to 9"),
    ({"prompt": "a cat", "n": 0}, "n", None, "n: Input should be greater than or equal to 1"),
    ({"prompt": "a\u0007cat"}, "prompt", None, "control character U+0007"),
    ({"prompt": "a cat", "top_k": 10_000}, "top_k", None, "image codes (0 means all)"),
    ({"prompt": "dog " * 100}, "prompt", None, "shorten it by"),
])
def test_bad_input_is_400_in_openai_shape(client, pipe, body, param, code, message):
    assert pipe.vqgan_config.resolution == 16  # the messages above name the tiny model's size
    text = openai_error(client.post(PATH, json=body), 400, param, code)
    assert message in text
    assert len(text) < 300  # one short message, never the input echoed back


def test_invalid_json_and_an_oversized_body_keep_the_shape(client):
    r = client.post(PATH, content=b'{"prompt": ', headers={"Content-Type": "application/json"})
    assert "not valid JSON" in openai_error(r, 400, None)
    not_utf8 = client.post(PATH, content=b"\x80", headers={"Content-Type": "application/json"})
    assert "parsing the body" in openai_error(not_utf8, 400, None)  # FastAPI's own refusal, reshaped
    big = client.post(PATH, json={"prompt": "a", "user": "x" * 20_000})
    assert "request body over 16384 bytes" in openai_error(big, 413, None, "request_too_large")


def test_generate_keeps_its_own_error_shape(client):
    r = client.post("/v1/generate", json={"prompt": "a cat", "n": 10})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "n"]


def test_rate_limit_is_429_with_retry_after_and_the_bearer_token_names_the_client(pipe):
    app = make_app(pipe, rate=RateLimitConfig(requests_per_minute=1, burst=1, max_in_flight=5))
    with TestClient(app) as c:
        first = {"Authorization": "Bearer alice"}
        assert c.post(PATH, json={"prompt": "a dog"}, headers=first).status_code == 200
        r = c.post(PATH, json={"prompt": "a dog"}, headers=first)
        assert "at most 1 requests per minute" in openai_error(r, 429, None, "rate_limit_exceeded")
        assert 50 <= int(r.headers["Retry-After"]) <= 60
        other = c.post(PATH, json={"prompt": "a dog"}, headers={"Authorization": "Bearer bob"})
        assert other.status_code == 200  # another key, another bucket


def test_unknown_bearer_token_is_401_when_keys_are_configured(pipe):
    app = make_app(pipe)
    app.state.config.api_keys = frozenset({"good"})
    with TestClient(app) as c:
        bad = c.post(PATH, json={"prompt": "a"}, headers={"Authorization": "Bearer bad"})
        assert "unknown API key" in openai_error(bad, 401, None, "invalid_api_key")
        assert c.post(PATH, json={"prompt": "a"}, headers={"Authorization": "Bearer good"}).status_code == 200


def test_draining_is_503_with_retry_after(pipe):
    app = make_app(pipe)
    with TestClient(app) as c:
        scheduler = app.state.scheduler
        gate = Gate(scheduler)
        scheduler.drain()
        r = c.post(PATH, json={"prompt": "a cat"})
        assert "shutting down" in openai_error(r, 503, None, "service_unavailable")
        assert int(r.headers["Retry-After"]) >= 1
        gate.open()
        wait_until(lambda: scheduler.queue_requests == 0, what="an empty queue")
