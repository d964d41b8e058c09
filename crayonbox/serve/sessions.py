"""One accepted request on the web side, shared by every API that draws images (`/v1/generate`, its stream, and
the OpenAI-compatible `/v1/images/generations`): validate what pydantic cannot, apply the client's limit, hand
a `Work` to the scheduler and await its events. Keeping one path means one set of limits and one way to count
and cancel, whatever the request's shape."""

from __future__ import annotations

import asyncio
import base64
import io
import random
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from PIL import Image

from crayonbox.errors import CrayonboxError
from crayonbox.model_folder import ModelInfo
from crayonbox.serve.limits import Refused
from crayonbox.serve.schemas import MAX_SEED, GenerateRequest, InvalidField, check_prompt_tokens
from crayonbox.serve.tickets import Done, Failed, Result, Ticket, Work

API_KEY_HEADER = "X-API-Key"


class Session:
    """One accepted request on the web side: its ticket, its event queue, and the client's slot."""

    def __init__(self, app: FastAPI, ticket: Ticket, events: asyncio.Queue, client: str, endpoint: str):
        self.app, self.ticket, self.events, self.client, self.endpoint = app, ticket, events, client, endpoint
        self.closed = False

    def close(self, code: int) -> None:
        """Release the client's slot and count the outcome; cancel the work if it was not answered."""
        if self.closed:
            return
        self.closed = True
        state = self.app.state
        if self.ticket.unfinished:
            state.scheduler.cancel(self.ticket)
            state.metrics.cancelled.inc()
        state.limiter.release(self.client)
        state.metrics.requests.labels(endpoint=self.endpoint, code=str(code)).inc()


class SessionStream(StreamingResponse):
    """A stream that closes its session however it ends. The generator's own `finally` does not run when the
    client is gone before the first byte (the generator never started), which would leak the client's slot."""

    def __init__(self, session: Session, content: AsyncIterator[str], **kwargs):
        super().__init__(content, **kwargs)
        self.session = session

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.session.close(499)  # a no-op when the stream already closed it with its real status


async def accept(app: FastAPI, body: GenerateRequest, request: Request, endpoint: str, frames: bool,
                 client: str | None = None) -> Session:
    """Validate what pydantic cannot, apply the client's limit, and queue the work (or refuse at once).
    `client`: the rate-limited identity when the caller found it elsewhere (else `client_id(request)`)."""
    state = app.state
    pipe: ModelInfo = state.pipe
    client = client or client_id(request, state.config.api_keys)
    check_prompt_tokens(body.prompt, pipe.tokenizer)
    if body.top_k is not None and body.top_k > pipe.config.image_vocab_size:
        raise InvalidField("top_k", f"top_k is {body.top_k} but the model has only "
                           f"{pipe.config.image_vocab_size} image codes (0 means all)")
    try:
        settings = pipe.settings(**body.sampler())
    except CrayonboxError as e:
        raise InvalidField("settings", str(e)) from None
    seed = body.seed if body.seed is not None else random.randrange(MAX_SEED - 8)
    state.limiter.acquire(client)
    loop, events = asyncio.get_running_loop(), asyncio.Queue()

    def sink(event: object) -> None:  # called from the scheduler thread
        loop.call_soon_threadsafe(events.put_nowait, event)

    try:
        ticket = state.scheduler.submit(Work(body.prompt, body.n, seed, settings, frames, client), sink)
    except Refused:
        state.limiter.release(client)
        raise
    return Session(app, ticket, events, client, endpoint)


async def outcome(session: Session, request: Request) -> Done | Failed | None:
    """Wait for the images or the failure; None when the client went away first (checked once a second, so
    a disconnected client's rows are cancelled by `Session.close` soon after)."""
    while True:
        try:
            event = await asyncio.wait_for(session.events.get(), timeout=1.0)
        except TimeoutError:
            if await request.is_disconnected():
                return None
            continue
        if isinstance(event, Done | Failed):
            return event


async def respond(session: Session, request: Request, failed: Callable[[Failed], Response],
                  done: Callable[[Done], Awaitable[Response]]) -> Response:
    """Wait for the outcome and answer it (`failed` / `done` build the endpoint's own response); the session
    closes with the status sent, 499 (nginx's "client closed request") when the client went away first."""
    code = 499
    try:
        event = await outcome(session, request)
        if event is None:
            return Response(status_code=code)
        response = failed(event) if isinstance(event, Failed) else await done(event)
        code = response.status_code
        return response
    finally:
        session.close(code)


async def served_pngs(app: FastAPI, result: Result) -> list[str]:
    """A finished request's images as base64 PNGs (encoded off the event loop), counted as served."""
    pngs = await asyncio.to_thread(encode_images, result.images, "PNG")
    metrics = app.state.metrics
    metrics.images.inc(len(pngs))
    metrics.latency.observe(result.queued_s + result.decoding_s)
    metrics.queue_wait.observe(result.queued_s)
    return pngs


def encode_images(images: list[Image.Image], fmt: str) -> list[str]:
    """Base64 PNGs (or JPEGs for progressive frames). Every API encodes here, so the same request gets the same
    bytes from each."""
    out = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
        out.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return out


def client_id(request: Request, api_keys: frozenset[str] | None, key: str | None = None) -> str:
    """The rate-limited identity: the API key (`key`, else the X-API-Key header) when one is sent, else the
    peer's IP address. With `api_keys`, a key not in it is refused (401)."""
    where = "API key (Authorization: Bearer)" if key else API_KEY_HEADER
    key = key or request.headers.get(API_KEY_HEADER)
    if key:
        if api_keys is not None and key not in api_keys:
            raise Refused(401, f"unknown {where}", retry_after_s=60)
        return "key:" + key
    return "ip:" + (request.client.host if request.client else "unknown")
