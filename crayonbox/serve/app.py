"""The web app: the page, the JSON API (`/v1/generate`, `/v1/generate/stream`), the OpenAI-compatible
`/v1/images/generations` (openai_api.py), `/healthz`, `/metrics`, and `/docs` with no CDN.

Handlers never touch the model: they validate, apply the per-client limit, hand a `Work` to the `Scheduler`
and await its events on an asyncio queue. Every refusal is immediate (422 bad input, 429 over the client's
rate, 503 full or past the deadline, both with `Retry-After`); a client that goes away has its rows cancelled.

    app = create_app(Pipeline.from_pretrained(folder))        # decoding in a thread of this process
    app = create_app(WorkerProcess(folder, SchedulerConfig()))  # in a process of its own (`crayonbox serve`)
    uvicorn.run(app)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from crayonbox.info import summary
from crayonbox.model.hardware import PrecisionChoice, auto_precision, resolve_device
from crayonbox.model_folder import ModelInfo
from crayonbox.pipeline import Pipeline
from crayonbox.serve.guard import RequestGuard
from crayonbox.serve.limits import RateLimitConfig, RateLimiter, Refused
from crayonbox.serve.metrics import CONTENT_TYPE, ServeMetrics
from crayonbox.serve.openai_api import OPENAI_PATH, error_body
from crayonbox.serve.openai_api import router as openai_router
from crayonbox.serve.page import STATIC, render_page
from crayonbox.serve.scheduler import Scheduler, SchedulerConfig, SchedulerLike
from crayonbox.serve.schemas import (
    MAX_ERROR_TEXT,
    MAX_FIELD_NAME,
    GenerateRequest,
    GenerateResponse,
    Health,
    InvalidField,
    short_text,
)
from crayonbox.serve.sessions import Session, SessionStream, accept, encode_images, respond, served_pngs
from crayonbox.serve.tickets import Done, Failed, Frame, Queued, Result, Started, Ticket
from crayonbox.serve.worker import WorkerProcess

__all__ = ["MAX_BODY_BYTES", "MAX_ERROR_TEXT", "ServeConfig", "create_app"]  # what tests and the CLI import

MAX_BODY_BYTES = 16 * 1024
DOCS_ASSETS = "/docs-assets"  # Swagger UI's script and style, served from the fastapi-offline package
REFUSALS = {408: {"description": "the request body did not arrive within the body timeout"},
            413: {"description": "request body over 16 KiB (whatever the transfer encoding)"},
            422: {"description": "invalid input; `detail` names the field"},
            429: {"description": "this client is over its rate; see Retry-After"},
            503: {"description": "server full, expected wait past the deadline, or shutting down; "
                              "see Retry-After"}}


@dataclass
class ServeConfig:
    """Everything `crayonbox serve` can tune besides the model."""

    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    rate: RateLimitConfig = field(default_factory=RateLimitConfig)
    api_keys: frozenset[str] | None = None  # when set, X-API-Key must be one of these (else 401)
    shutdown_grace_s: float = 60.0  # accepted work may finish for this long after a shutdown begins
    max_body_bytes: int = MAX_BODY_BYTES  # per request, counted as it streams in (chunked or not)
    body_timeout_s: float = 10.0  # the whole body must arrive within this long of the headers (else 408)
    model_name: str = "crayonbox"


def precision_of(backend: Pipeline | WorkerProcess) -> PrecisionChoice:
    """The precision the model runs in, and why. A worker resolves "auto" in its own process on this same
    machine, so the same rule gives the same answer here."""
    if isinstance(backend, WorkerProcess):
        if backend.dtype == "auto":
            return auto_precision(resolve_device(backend.device))
        return PrecisionChoice(backend.dtype, "asked for (--dtype)")
    if backend.precision_choice is not None:
        return backend.precision_choice
    return PrecisionChoice(str(backend.dtype).removeprefix("torch."), "asked for")


def model_summary(backend: Pipeline | WorkerProcess, info: ModelInfo) -> str:
    """What the model draws, in one sentence, from its folder (crayonbox/info.py) when the backend has one."""
    folder = backend.folder if isinstance(backend, WorkerProcess) else backend.source
    if folder is not None:
        return summary(folder)
    size = info.vqgan_config.resolution
    return f"This model draws {size}×{size} px images."


def create_app(backend: Pipeline | WorkerProcess, config: ServeConfig | None = None) -> FastAPI:
    """The FastAPI app. `backend`: a `Pipeline`, decoded by a `Scheduler` thread in this process (tests,
    embedding), or a `WorkerProcess`, which decodes in a process of its own with its own `SchedulerConfig`
    (`crayonbox serve`). Either starts (and warms up) with the app's lifespan, if not started already."""
    config = config or ServeConfig()
    scheduler: SchedulerLike = backend if isinstance(backend, WorkerProcess) \
        else Scheduler(backend, config.scheduler)
    pipe = scheduler.info  # tokenizer, configs and sampler defaults: the web side never touches the weights
    precision = precision_of(backend)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(scheduler.start)
        yield
        await asyncio.to_thread(scheduler.close, config.shutdown_grace_s)

    # FastAPI's own /docs loads Swagger UI from a CDN, so it is blank offline or behind a firewall:
    # FastAPIOffline turns those routes off and serves /docs with the copy its package ships (no /redoc).
    app = FastAPIOffline(title="crayonbox", version="1", lifespan=lifespan, docs_url="/docs", redoc_url=None,
                         static_url=DOCS_ASSETS, favicon_url="/favicon.svg",
                         # Swagger UI would send the schema to validator.swagger.io for a badge: not offline
                         swagger_ui_parameters={"validatorUrl": None},
                         description="DALL·E mini, re-created: text → 3×3 grid of images, with the exact token "
                                     "ids. Also speaks OpenAI's images API at `/v1/images/generations`.")
    app.state.pipe, app.state.scheduler, app.state.config = pipe, scheduler, config
    app.state.limiter = RateLimiter(config.rate)
    app.state.metrics = ServeMetrics(scheduler)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(RequestGuard, max_bytes=config.max_body_bytes, timeout_s=config.body_timeout_s,
                       on_refused=lambda code: app.state.metrics.bodies_refused.labels(code=str(code)).inc(),
                       error_body=_guard_error_body)
    app.include_router(openai_router)

    @app.exception_handler(Refused)
    async def refused(request: Request, e: Refused) -> JSONResponse:
        _count(request, e.status)
        # no Retry-After when there is no time to promise (a model worker that could not be brought back)
        headers = {"Retry-After": e.retry_after} if e.status in (429, 503) and e.retry_after else None
        return JSONResponse({"detail": e.message}, e.status, headers=headers)

    @app.exception_handler(InvalidField)
    async def invalid_field(request: Request, e: InvalidField) -> JSONResponse:
        _count(request, 422)
        detail = [{"type": "value_error", "loc": ["body", e.field], "msg": e.message}]
        return JSONResponse({"detail": detail}, 422)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, e: RequestValidationError) -> Response:
        _count(request, 422)
        return JSONResponse({"detail": [_short_error(error) for error in e.errors()]}, 422)

    page_html = render_page(model_summary(backend, pipe))

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(page_html)

    @app.get("/healthz", response_model=Health,
             responses={503: {"description": "shutting down, or the model worker is down"}})
    async def healthz() -> JSONResponse:
        """Liveness and the batch state; 503 while draining, so a load balancer stops sending work."""
        s = scheduler
        retry_s = s.restart_eta_s if s.down else None  # None: down for good, no time to promise
        if s.down:
            status = "worker restarting" if retry_s is not None else "worker down"
        else:
            status = "draining" if s.draining else "ok"
        body = Health(status=status, detail=s.down,
                      retry_after_s=None if retry_s is None else round(retry_s, 1),
                      model=config.model_name,
                      image_size=pipe.vqgan_config.resolution, image_tokens=pipe.config.image_length,
                      max_batch_images=s.config.max_batch_images, cache_rows=s.capacity_rows,
                      queue_images=s.queue_images, batch_images=s.batch_images,
                      tokens_per_s=round(s.tokens_per_s, 2), defaults=pipe.defaults.to_dict(),
                      precision=precision.describe(), precision_reason=precision.reason)
        return JSONResponse(body.model_dump(), 503 if s.draining else 200)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(app.state.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/favicon.svg", include_in_schema=False)
    async def favicon_svg() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon_ico() -> FileResponse:  # browsers ask for this path on their own, whatever the page says
        return FileResponse(STATIC / "favicon.ico", media_type="image/vnd.microsoft.icon")

    @app.post("/v1/generate", response_model=GenerateResponse, responses=REFUSALS)
    async def generate(body: GenerateRequest, request: Request) -> Response:
        """Draw `n` images and answer when they are ready: base64 PNGs, seeds and every token id used."""
        session = await accept(app, body, request, "generate", frames=False)

        async def done(event: Done) -> Response:
            return JSONResponse(await _result_json(app, session, event.result))

        return await respond(session, request, _failure_response, done)

    @app.post("/v1/generate/stream", responses=REFUSALS | {200: {"content": {"text/event-stream": {}}}})
    async def generate_stream(body: GenerateRequest, request: Request) -> StreamingResponse:
        """Server-sent events: `queued` (position, ETA) while waiting, `started`, `frame` (progressive JPEGs),
        then `result` (the /v1/generate body) or `error`. Refusals come as plain HTTP errors before the
        stream starts."""
        session = await accept(app, body, request, "stream", frames=body.frames)
        return SessionStream(session, _stream(app, session), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app


async def _stream(app: FastAPI, session: Session) -> AsyncIterator[str]:
    scheduler: SchedulerLike = app.state.scheduler
    ticket, code = session.ticket, 499
    try:
        first = _progress(scheduler.progress(ticket))
        yield _sse("queued", {"id": ticket.id, "seeds": _seeds(ticket), **first})
        while True:
            try:
                event = await asyncio.wait_for(session.events.get(), timeout=1.0)
            except TimeoutError:
                progress = scheduler.progress(ticket)
                # a fresh position and ETA while waiting; a comment line keeps proxies from timing out
                yield _sse("queued", _progress(progress)) if progress else ": decoding\n\n"
                continue
            if isinstance(event, Started):
                yield _sse("started", {"step": event.step})
            elif isinstance(event, Frame):
                images = await asyncio.to_thread(encode_images, event.images, "JPEG")
                yield _sse("frame", {"tokens_done": event.tokens_done,
                                     "of": app.state.pipe.config.image_length, "images": images})
            elif isinstance(event, Done):
                code = 200
                yield _sse("result", await _result_json(app, session, event.result))
                return
            elif isinstance(event, Failed):
                code = event.status
                retry = None if event.retry_after_s is None else max(1, round(event.retry_after_s))
                yield _sse("error", {"status": event.status, "detail": event.message, "retry_after": retry})
                return
    finally:
        session.close(code)


def _progress(progress: Queued | None) -> dict:
    if progress is None:
        return {"position": 0, "images_ahead": 0, "start_s": 0.0, "eta_s": 0.0}
    return {"position": progress.position, "images_ahead": progress.images_ahead,
            "start_s": round(progress.start_s, 2), "eta_s": round(progress.finish_s, 2)}


def _seeds(ticket: Ticket) -> list[int]:
    return [ticket.work.seed + i for i in range(ticket.work.n)]


async def _result_json(app: FastAPI, session: Session, result: Result) -> dict:
    """The /v1/generate body."""
    pngs = await served_pngs(app, result)
    ticket, enc = session.ticket, result.encoding
    total = result.queued_s + result.decoding_s
    response = GenerateResponse(
        id=ticket.id, prompt=enc.prompt, normalized=enc.normalized, text_ids=enc.ids, text_tokens=enc.tokens,
        unconditional_ids=result.unconditional.ids, notes=enc.notes, settings=result.settings.to_dict(),
        seeds=result.seeds,
        images=[{"seed": s, "png_base64": png, "image_tokens": t}
                for s, png, t in zip(result.seeds, pngs, result.tokens.tolist(), strict=True)],
        timing={"queued_s": round(result.queued_s, 4), "decoding_s": round(result.decoding_s, 4),
                "total_s": round(total, 4)})
    return response.model_dump()


def _failure_response(event: Failed) -> JSONResponse:
    headers = ({"Retry-After": str(max(1, round(event.retry_after_s)))}
               if event.status in (429, 503) and event.retry_after_s is not None else None)
    return JSONResponse({"detail": event.message}, event.status, headers=headers)


def _sse(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _short_error(error: dict) -> dict:
    """A pydantic error as a short JSON item: the type, the field's location and the message. FastAPI's default
    also echoes the offending `input` (and `ctx`): a 16 KiB prompt came back whole, and a value JSON cannot
    carry (a lone surrogate, NaN) turned the 422 into a 500. Field names come from the client too (an unknown
    key is named in `loc`), so they are cut and made encodable like the message."""
    loc = [part if isinstance(part, int) else short_text(str(part), MAX_FIELD_NAME) for part in error.get("loc", ())]
    return {"type": short_text(str(error.get("type", ""))), "loc": loc,
            "msg": short_text(str(error.get("msg", "")))}


def _guard_error_body(path: str, status: int, message: str) -> dict:
    """The body guard's 413/408 in the shape the path's clients read."""
    return error_body(status, message) if path == OPENAI_PATH else {"detail": message}


def _count(request: Request, code: int) -> None:
    endpoint = "stream" if request.url.path.endswith("/stream") else "generate"
    if request.url.path.startswith("/v1/"):
        request.app.state.metrics.requests.labels(endpoint=endpoint, code=str(code)).inc()
