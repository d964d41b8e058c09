"""Bad input gets a 422 that names the field and says what to change; the rate limiter's arithmetic."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from serve_helpers import make_app

from crayonbox.serve.limits import RateLimitConfig, RateLimiter, Refused
from crayonbox.serve.schemas import InvalidField, check_prompt_text


@pytest.fixture(scope="module")
def client(pipe):
    with TestClient(make_app(pipe)) as c:
        yield c


LONG_IN_TOKENS = " ".join(["kimono"] * 12)  # the tiny model reads 16 tokens; each "kimono" is ≥ 2


@pytest.mark.parametrize("body, field, words", [
    ({"prompt": "a dog", "n": 0}, "n", "greater than or equal to 1"),
    ({"prompt": "a dog", "n": 10}, "n", "less than or equal to 9"),
    ({"prompt": "a dog", "n": "3"}, "n", "valid integer"),
    ({"prompt": "a dog", "n": True}, "n", "valid integer"),
    ({"prompt": "a dog", "n": 2.5}, "n", "valid integer"),
    ({"prompt": "a dog", "seed": -1}, "seed", "greater than or equal to 0"),
    ({"prompt": "a dog", "seed": 2**32}, "seed", "less than or equal to 4294967295"),
    ({"prompt": "a dog", "condition_scale": -0.5}, "condition_scale", "greater than or equal to 0"),
    ({"prompt": "a dog", "condition_scale": 1000}, "condition_scale", "less than or equal to 100"),
    ({"prompt": "a dog", "top_k": -1}, "top_k", "greater than or equal to 0"),
    ({"prompt": "a dog", "top_k": 65}, "top_k", "only 64 image codes"),
    ({"prompt": "a dog", "top_p": 0}, "top_p", "greater than 0"),
    ({"prompt": "a dog", "top_p": 1.5}, "top_p", "less than or equal to 1"),
    ({"prompt": "a dog", "temperature": 0}, "temperature", "greater than or equal to 0.01"),
    ({"prompt": "a dog", "temperature": 50}, "temperature", "less than or equal to 10"),
    ({"prompt": "x" * 501}, "prompt", "501 characters; the limit is 500"),
    ({"prompt": LONG_IN_TOKENS}, "prompt", "the model reads at most 16"),
    ({"prompt": "a dog\x07"}, "prompt", "control character U+0007 at character 5"),
    ({"prompt": "a \x1b[31mred dog"}, "prompt", "control character U+001B"),
    ({"prompt": "a dog\ufffe"}, "prompt", "non-character U+FFFE"),
    ({"prompt": 42}, "prompt", "valid string"),
    ({"n": 3}, "prompt", "Field required"),
    ({"prompt": "a dog", "num_images": 3}, "num_images", "Extra inputs are not permitted"),
])
def test_bad_fields_are_named(client, body, field, words):
    r = client.post("/v1/generate", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(d["loc"][-1] == field and words in d["msg"] for d in detail), detail


def test_lone_surrogate_is_refused_clearly(client):
    # json.dumps would escape it the same way; written by hand to be sure of the bytes on the wire
    raw = b'{"prompt": "a dog \\ud83d and a cat"}'
    r = client.post("/v1/generate", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    msg = r.json()["detail"][0]["msg"]
    assert "lone UTF-16 surrogate (U+D83D) at character 6" in msg


def test_complete_surrogate_pair_and_newlines_are_fine(client):
    body = json.dumps({"prompt": "\U0001f436\ncat\t", "n": 1, "seed": 1})  # 🐶 goes out as \ud83d\udc36
    r = client.post("/v1/generate", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert "dog" in r.json()["normalized"] and "cat" in r.json()["normalized"]


def test_blank_prompt_is_allowed(client):
    # the blank prompt is the famous probe of the model's prior, not an error
    r = client.post("/v1/generate", json={"prompt": "", "n": 1, "seed": 3})
    assert r.status_code == 200
    assert r.json()["normalized"] == " "


def test_body_that_is_not_json(client):
    r = client.post("/v1/generate", content=b"prompt=a dog", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"


def test_check_prompt_text_limits():
    assert check_prompt_text("x" * 10, max_chars=10) == "x" * 10
    with pytest.raises(InvalidField, match="11 characters; the limit is 10"):
        check_prompt_text("x" * 11, max_chars=10)
    with pytest.raises(InvalidField, match=r"U\+DC00"):
        check_prompt_text("ok \udc00")


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_bucket_and_refill():
    clock = FakeClock()
    limiter = RateLimiter(RateLimitConfig(requests_per_minute=6, burst=2, max_in_flight=10), clock)
    limiter.acquire("a")
    limiter.acquire("a")
    with pytest.raises(Refused) as refused:
        limiter.acquire("a")
    assert refused.value.status == 429
    assert refused.value.retry_after == "10"  # 6/min refills one request every 10 s
    limiter.acquire("b")  # another client has its own bucket
    clock.now += 9.9
    with pytest.raises(Refused):
        limiter.acquire("a")
    clock.now += 0.2
    limiter.acquire("a")


def test_rate_limiter_in_flight_cap():
    limiter = RateLimiter(RateLimitConfig(requests_per_minute=1000, burst=100, max_in_flight=1), FakeClock())
    limiter.acquire("a")
    with pytest.raises(Refused, match="already has 1 request"):
        limiter.acquire("a")
    limiter.release("a")
    limiter.acquire("a")


def test_nan_is_refused_not_a_server_error(client):
    # Python's json accepts NaN; echoing it back in the 422 must not crash the response
    raw = b'{"prompt": "a dog", "temperature": NaN}'
    r = client.post("/v1/generate", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "temperature"]
    assert "finite number" in r.json()["detail"][0]["msg"]


def test_oversized_body_is_413(client):
    r = client.post("/v1/generate", content=json.dumps({"prompt": "x" * 20_000}),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "16384 bytes" in r.json()["detail"]
