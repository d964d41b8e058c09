"""Fuzzing the JSON API: arbitrary bodies posted to every POST route of a test app (the tiny random model, as
tests/serve builds it) never get a 5xx, and a refusal is short JSON that never echoes more than 40 characters
of what was sent."""

from __future__ import annotations

import json
import math

import pytest
from fastapi.testclient import TestClient
from fuzz_helpers import FAST, LONG
from hypothesis import event, given
from hypothesis import strategies as st

from crayonbox.pipeline import Pipeline
from crayonbox.serve.app import MAX_ERROR_TEXT, ServeConfig, create_app
from crayonbox.serve.limits import RateLimitConfig
from crayonbox.serve.scheduler import SchedulerConfig

MAX_ECHO = 40
FIELDS = ["prompt", "n", "seed", "condition_scale", "top_k", "top_p", "temperature", "frames"]


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as tests/serve/conftest.py: one thread is faster for the tiny model
    rate = RateLimitConfig(requests_per_minute=10**6, burst=10**6, max_in_flight=100)
    app = create_app(Pipeline.from_pretrained(tiny_model_dir), ServeConfig(SchedulerConfig(), rate,
                                                                           shutdown_grace_s=5))
    post_routes = sorted(path for path, ops in app.openapi()["paths"].items() if "post" in ops)
    assert post_routes == ["/v1/generate", "/v1/generate/stream", "/v1/images/generations"]
    with TestClient(app) as c:
        yield c
    torch.set_num_threads(threads)


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=80),
                         st.integers(-2, 12), st.floats(-1, 12), st.sampled_from([math.nan, math.inf, 2**32, 2**64]))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=60), inner, max_size=4), max_leaves=10)
prompts = st.one_of(st.text(max_size=600), st.text(st.sampled_from(list("abcdefghij kimono")), max_size=500),
                    st.sampled_from(["", "a red dog", "\ud83d", "a\x07", "\ufffe"]))
near_valid = st.fixed_dictionaries(
    {"prompt": prompts},
    optional={"n": json_scalars, "seed": json_scalars, "condition_scale": json_scalars, "top_k": json_scalars,
              "top_p": json_scalars, "temperature": json_scalars, "frames": json_scalars,
              "num_images": json_scalars, "x" * 300: json_scalars},
)
# small valid-looking settings so that accepted requests draw few images and finish fast
accepted = st.fixed_dictionaries(
    {"prompt": st.sampled_from(["", "a red dog", "a blue cat on a white background", "dog"]), "n": st.integers(1, 2)},
    optional={"seed": st.integers(0, 2**32 - 1), "top_k": st.integers(0, 64), "frames": st.booleans(),
              "temperature": st.floats(0.01, 10), "top_p": st.floats(0.01, 1), "condition_scale": st.floats(0, 100)})
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    near_valid.map(lambda v: json.dumps(v).encode()),
    near_valid.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    accepted.map(lambda v: json.dumps(v).encode()),
    accepted.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: ('{"prompt": "' + t).encode("utf-8", "surrogatepass")),
)


def strings_in(body: bytes) -> list[str]:
    """Every string the client sent: each key and string value of a JSON body, else the raw text."""
    try:
        stack, out = [json.loads(body)], []
    except ValueError:
        return [body.decode("utf-8", "surrogatepass") if _decodes(body) else body.decode("latin-1")]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            stack += value
        elif isinstance(value, dict):
            out += [str(k) for k in value]
            stack += value.values()
    return out


def _decodes(body: bytes) -> bool:
    try:
        body.decode("utf-8", "surrogatepass")
        return True
    except UnicodeDecodeError:
        return False


def longest_echo(sent: list[str], answer: str) -> int:
    """The longest run of characters of any sent string that the answer repeats (checked past MAX_ECHO only)."""
    for text in sent:
        for start in range(len(text) - MAX_ECHO):
            piece = text[start:start + MAX_ECHO + 1]
            if piece.strip() and piece in answer:
                return MAX_ECHO + 1
    return 0


def answer_strings(response) -> str:
    """The answer's JSON strings, decoded (an escaped echo is still an echo), or its raw text."""
    parts = []
    try:
        stack = [response.json()]
    except ValueError:
        return response.text
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            stack += value
        elif isinstance(value, dict):
            stack += list(value) + list(value.values())
    return "\n".join(parts)


def check_post(client, route: str, body: bytes, content_type: str) -> None:
    response = client.post(route, content=body, headers={"Content-Type": content_type})
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code < 400:
        assert response.status_code == 200
        return
    assert response.headers["content-type"].startswith("application/json")
    body_json = response.json()
    if route == "/v1/images/generations":  # OpenAI's error shape
        messages = [body_json["error"]["message"]]
    else:
        detail = body_json["detail"]
        messages = [detail] if isinstance(detail, str) else [item["msg"] for item in detail]
    answer = answer_strings(response)
    assert messages and all(0 < len(m) <= MAX_ERROR_TEXT + 30 for m in messages), messages
    assert longest_echo(strings_in(body), answer) == 0, response.text[:600]


routes = st.sampled_from(["/v1/generate", "/v1/generate/stream", "/v1/images/generations"])
content_types = st.sampled_from(["application/json", "application/json", "text/plain", "application/json; x=1"])


TOO_MANY_TOKENS = json.dumps({"prompt": "abcdefghij " * 40}).encode()  # once echoed the cut text in full


@FAST
@given(st.just(TOO_MANY_TOKENS))
def test_too_many_tokens_is_not_echoed(client, body):
    check_post(client, "/v1/generate", body, "application/json")


@FAST
@given(routes, bodies, content_types)
def test_post_routes(client, route, body, content_type):
    check_post(client, route, body, content_type)


@pytest.mark.fuzz
@LONG
@given(routes, bodies, content_types)
def test_post_routes_long(client, route, body, content_type):
    check_post(client, route, body, content_type)
