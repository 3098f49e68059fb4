"""Request bodies are bounded while they stream in, before anything reads them whole.

Each route may declare its own limit (`openapi_extra={"x-max-body-bytes": N}`,
see `max_body`); every other request gets `DEFAULT_BODY`. A Content-Length over
the limit is refused before a byte is read; a body that grows past it (chunked,
or lying about its length) is cut off at the limit. Content-encoded bodies
(gzip, deflate, ...) are refused: nothing in the console inflates a request, so
no small request can expand into a large one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from osbake.service import problems

KIB = 1 << 10
MIB = 1 << 20
DEFAULT_BODY = 1 * MIB
LIMIT_KEY = "x-max-body-bytes"


def max_body(size: int) -> dict[str, Any]:
    """`openapi_extra` of a route that accepts bodies up to `size` bytes."""
    return {LIMIT_KEY: size}


def route_limit(routes: list[Any], scope: Scope, default: int) -> int:
    """The body limit of the route this request goes to (the default if none matches)."""
    for route in routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            extra = getattr(route, "openapi_extra", None) or {}
            return int(extra.get(LIMIT_KEY, default))
    return default


class BodyLimit:
    """ASGI middleware: 413 for bodies over the route's limit, 415 for encoded bodies."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            await _refuse(
                scope,
                send,
                415,
                f"the request body is encoded ({encoding[:40]})",
                "send it without Content-Encoding (the console does not inflate requests)",
            )
            return
        limit = self.limit_for(scope)
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _refuse(scope, send, 422, "the Content-Length header is not a number", None)
                return
            if int(declared) > limit:
                await _refuse(scope, send, 413, _too_large(limit), _hint(limit))
                return
        received = 0
        started = False

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, _too_large(limit))
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except HTTPException as exc:
            if exc.status_code != 413 or started:
                raise
            await _refuse(scope, send, 413, _too_large(limit), _hint(limit))


def _too_large(limit: int) -> str:
    return f"the request body is larger than this route accepts ({_size(limit)})"


def _hint(limit: int) -> str:
    return f"send at most {_size(limit)}"


def _size(value: int) -> str:
    if value >= MIB:
        return f"{value / MIB:g} MiB"
    if value >= KIB:
        return f"{value / KIB:g} KiB"
    return f"{value} bytes"


async def _refuse(scope: Scope, send: Send, status: int, message: str, hint: str | None) -> None:
    """Answer without reading the body (the connection is closed after it)."""
    payload = json.dumps(problems.body(message, hint)).encode()
    path = str(scope.get("path", ""))
    if not path.startswith("/api/"):
        # a page: a plain text answer says the same to a person
        payload = (message + ("\nhint: " + hint if hint else "") + "\n").encode()
        kind = b"text/plain; charset=utf-8"
    else:
        kind = b"application/json"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", kind),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
