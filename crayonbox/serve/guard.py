"""The request guard: every HTTP body is read here, bounded in size and time, before any parser sees it; and
redirects are made relative (a `Location` never repeats the client's Host header)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


class RequestGuard:
    """Every HTTP request's body is read here, before any parser or handler sees it: at most `max_bytes`,
    counted as the chunks arrive through the ASGI receive channel (so a chunked body, which has no
    Content-Length, is held to the same limit as one that declares its length), and all of it within
    `timeout_s` of the headers. Over the limit: 413; too slow: 408. Both are short JSON that never quotes the
    input (`{"detail": …}`, or what `error_body(path, status, message)` makes of it, for an API whose clients
    expect another shape), and close the connection. The app then gets the body from memory (at most `max_bytes`), and
    absolute redirects are rewritten to relative ones.

    Plain ASGI, because Starlette's BaseHTTPMiddleware would hide client disconnects from the handlers."""

    LINGER_BYTES = 1 << 20  # after a 413, read and drop at most this much more of the body …
    LINGER_S = 2.0  # … for at most this long, before closing

    def __init__(self, app, max_bytes: int, timeout_s: float, on_refused: Callable[[int], None] | None = None,
                 error_body: Callable[[str, int, str], Any] | None = None):
        self.app, self.max_bytes, self.timeout_s, self.on_refused = app, max_bytes, timeout_s, on_refused
        self.error_body = error_body or (lambda path, status, message: {"detail": message})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _relative_redirects(send)
        too_large = f"request body over {self.max_bytes} bytes"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            # refused on the header alone: with `Expect: 100-continue` the client never even sends the body
            await self._refuse(413, too_large, send, scope["path"], receive)
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                body = await self._read_body(receive)
        except TimeoutError:
            await self._refuse(408, f"request body not received within {self.timeout_s:g} s", send,
                               scope["path"])
            return
        except _BodyTooLarge:
            await self._refuse(413, too_large, send, scope["path"], receive)
            return
        except _ClientGone:
            return  # nobody to answer
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:  # stop here: what was read is dropped, the rest is never kept
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _refuse(self, status: int, message: str, send, path: str, linger_on=None) -> None:
        """Answer `status` with `Connection: close`. With `linger_on` (a receive channel whose client may still
        be sending), the whole answer goes out first, then up to LINGER_BYTES more of the body are read and
        dropped for up to LINGER_S before the connection closes: closing on unread bytes makes the kernel send
        a reset, which can destroy the answer before the client reads it."""
        if self.on_refused is not None:
            self.on_refused(status)
        body = json.dumps(self.error_body(path, status, message)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        # the answer is complete for the client (Content-Length), but not for the server while it lingers
        await send({"type": "http.response.body", "body": body, "more_body": linger_on is not None})
        if linger_on is None:
            return
        dropped = 0
        try:
            async with asyncio.timeout(self.LINGER_S):
                while dropped <= self.LINGER_BYTES:
                    message = await linger_on()
                    dropped += len(message.get("body", b""))
                    if message["type"] == "http.disconnect" or not message.get("more_body", False):
                        break
        except TimeoutError:
            pass
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _replay(body: bytes, receive):
    """A receive channel that gives the app the body already read, then passes through to the real one (so
    handlers and streams still hear `http.disconnect` when the client goes away)."""
    delivered = False

    async def replay() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _relative_redirects(send):
    """Starlette builds redirects (`/static` → `/static/`) as absolute URLs from the request's Host header, so
    a forged Host would be copied into `Location`. This server only ever redirects to itself: keep the path."""

    async def relative(message: dict) -> None:
        if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
            headers = [(k, relative_location(v) if k.lower() == b"location" else v)
                       for k, v in message.get("headers", [])]
            message = {**message, "headers": headers}
        await send(message)

    return relative


def relative_location(location: bytes) -> bytes:
    """`Location` reduced to path and query. A path that starts with `//` would be read by browsers as another
    host (`//evil.example/`), so leading slashes collapse to one."""
    parts = urlsplit(location.decode("latin-1"))
    path = "/" + parts.path.lstrip("/")
    return (path + ("?" + parts.query if parts.query else "")).encode("latin-1")


