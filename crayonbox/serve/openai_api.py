"""OpenAI-compatible image generation: `POST /v1/images/generations`, so that the official `openai` client (and
tools built on it) can draw from a crayonbox server with `base_url="http://host:port/v1"`.

The request goes through the same path as `/v1/generate` (sessions.accept: the same checks, per-client limits,
queue and deadline; the body guard bounds its size and time), and the images are the same PNG bytes. What
differs is the shape: OpenAI's request fields, `{"created", "data": [{"b64_json", "revised_prompt"}]}` back,
and every error as `{"error": {"message", "type", "param", "code"}}` with 400 for bad input (OpenAI has no 422).

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="any")  # the key names the client
    client.images.generate(prompt="a red dog", n=4, size="256x256", extra_body={"seed": 7})
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from crayonbox.serve.limits import Refused
from crayonbox.serve.schemas import (
    MAX_FIELD_NAME,
    MAX_IMAGES,
    GenerateRequest,
    InvalidField,
    SamplerRequest,
    short_text,
)
from crayonbox.serve.sessions import API_KEY_HEADER, accept, client_id, respond, served_pngs
from crayonbox.serve.tickets import Done, Failed

OPENAI_PATH = "/v1/images/generations"
ENDPOINT = "openai"  # the `endpoint` label of crayonbox_requests_total
# OpenAI's error `type` and `code` per HTTP status (what its own API sends for the same situation)
ERROR_KINDS = {400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
               408: ("invalid_request_error", "request_timeout"),
               413: ("invalid_request_error", "request_too_large"),
               429: ("requests", "rate_limit_exceeded"), 503: ("server_error", "service_unavailable")}
GENERATE_FIELDS = frozenset(GenerateRequest.model_fields) - {"frames"}


class ImageGenerationRequest(SamplerRequest):  # type: ignore[misc, valid-type]  # a base built by create_model
    """OpenAI's image request. `seed` and the sampler knobs are crayonbox extensions (the openai client sends
    them with `extra_body`); other OpenAI fields (quality, style, …) are refused by name, not ignored."""

    n: int = Field(1, ge=1, le=MAX_IMAGES, description="number of images")
    size: str | None = Field(None, description="only the model's native size, as WxH (GET /healthz: image_size)")
    response_format: str = Field("b64_json", description="b64_json only: this server keeps no files to link to")
    model: str | None = Field(None, description="the served model's name (GET /healthz: model), or omitted")
    user: str | None = Field(None, description="accepted and ignored")


class ImageData(BaseModel):
    """One image."""

    b64_json: str = Field(description="the image as a base64 PNG")
    revised_prompt: str = Field(description="the text the model read: the prompt after normalisation")
    seed: int = Field(description="crayonbox extension: the seed this image was drawn with")


class ImagesResponse(BaseModel):
    """OpenAI's images response."""

    created: int = Field(description="unix time, seconds")
    data: list[ImageData]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """OpenAI's error shape."""

    error: ErrorDetail


class OpenAIError(Exception):
    """A refusal of this endpoint, already in OpenAI's terms."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    """`{"error": {...}}` for an HTTP status; `code` defaults to the one OpenAI sends with that status."""
    kind, default_code = ERROR_KINDS.get(status, ("server_error" if status >= 500 else "invalid_request_error",
                                                  None))
    return {"error": {"message": message, "type": kind, "param": param, "code": code or default_code}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   retry_after: str = "") -> JSONResponse:
    headers = {"Retry-After": retry_after} if retry_after and status in (429, 503) else None
    return JSONResponse(error_body(status, message, param, code), status, headers=headers)


def validation_error(e: RequestValidationError) -> JSONResponse:
    """The first problem pydantic found (OpenAI reports one), named by its field, never echoing the input."""
    error = e.errors()[0] if e.errors() else {}
    loc = list(error.get("loc", ()))
    # ("body", field) names a field; ("body", 11) is where unparsable JSON broke
    param = short_text(loc[-1], MAX_FIELD_NAME) if len(loc) > 1 and isinstance(loc[-1], str) else None
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    elif kind == "missing":
        message = f"Missing required parameter: '{param}'"
    elif kind == "json_invalid":
        message = "The body of the request is not valid JSON"
    else:
        message = f"{param}: {short_text(str(error.get('msg', 'invalid value')))}" if param \
            else short_text(str(error.get("msg", "invalid request body")))
    return error_response(400, message, param)


class OpenAIRoute(APIRoute):
    """A route whose every refusal, including FastAPI's own body validation, answers in OpenAI's shape and is
    counted under this endpoint; the app's exception handlers keep `/v1/generate`'s shape for the rest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def shaped(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as e:
                response = validation_error(e)
            except InvalidField as e:
                response = error_response(400, short_text(e.message), short_text(e.field, MAX_FIELD_NAME))
            except OpenAIError as e:
                response = error_response(e.status, e.message, e.param, e.code)
            except Refused as e:
                response = error_response(e.status, e.message, retry_after=e.retry_after)
            except HTTPException as e:  # FastAPI's own, e.g. a body that is not UTF-8
                response = error_response(e.status_code, short_text(str(e.detail)))
            request.app.state.metrics.requests.labels(endpoint=ENDPOINT, code=str(response.status_code)).inc()
            return response

        return shaped


router = APIRouter(route_class=OpenAIRoute)
ERRORS = {status: {"model": ErrorBody, "description": text} for status, text in [
    (400, "invalid input; `error.param` names the field"), (401, "an API key the server does not know"),
    (429, "this client is over its rate; see Retry-After"),
    (503, "server full, expected wait past the deadline, or shutting down; see Retry-After")]}


@router.post(OPENAI_PATH, response_model=ImagesResponse, responses=ERRORS, tags=["OpenAI-compatible"])
async def images_generations(body: ImageGenerationRequest, request: Request) -> Response:
    """OpenAI's images API: `n` base64 PNGs at the model's native size, byte-identical to `/v1/generate`'s
    for the same prompt, seed and settings. The bearer token (the openai client's `api_key`) is this server's
    API key, like `X-API-Key`."""
    state = request.app.state
    side = state.pipe.vqgan_config.resolution
    if body.size is not None and body.size != f"{side}x{side}":
        raise OpenAIError(400, f"size must be '{side}x{side}' (the model's native size), not "
                          f"'{short_text(body.size, MAX_FIELD_NAME)}'", "size", "invalid_size")
    if body.response_format == "url":
        raise OpenAIError(400, "response_format 'url' is not supported: this server keeps no files to link to; "
                          "use 'b64_json'", "response_format", "unsupported_response_format")
    if body.response_format != "b64_json":
        raise OpenAIError(400, "response_format must be 'b64_json'", "response_format")
    if body.model is not None and body.model != state.config.model_name:
        raise OpenAIError(400, f"model '{short_text(body.model, MAX_FIELD_NAME)}' is not served here; this server "
                          f"serves '{state.config.model_name}' (or omit model)", "model", "model_not_found")
    work = GenerateRequest.model_validate(body.model_dump(include=GENERATE_FIELDS), strict=True)
    key = None if request.headers.get(API_KEY_HEADER) else _bearer(request)
    session = await accept(request.app, work, request, ENDPOINT, frames=False,
                           client=client_id(request, state.config.api_keys, key))

    def failed(event: Failed) -> Response:
        retry = "" if event.retry_after_s is None else str(max(1, round(event.retry_after_s)))
        return error_response(400 if event.status == 422 else event.status, short_text(event.message),
                              retry_after=retry)

    async def done(event: Done) -> Response:
        pngs = await served_pngs(request.app, event.result)
        revised = event.result.encoding.normalized
        return JSONResponse({"created": int(time.time()),
                             "data": [{"b64_json": png, "revised_prompt": revised, "seed": seed}
                                      for png, seed in zip(pngs, event.result.seeds, strict=True)]})

    return await respond(session, request, failed, done)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
