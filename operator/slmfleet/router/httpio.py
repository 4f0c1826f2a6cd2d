"""Raw-ASGI response helpers: JSON bodies, SSE events, OpenAI-style errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson

from .errors import RouterError, bad_request
from .protocol import ParsedRequest

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = (b"content-type", b"application/json")
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
DONE = b"data: [DONE]\n\n"


def header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")[:128]
    return None


def resp_id(req: ParsedRequest, rid: str) -> str:
    return ("chatcmpl-" if req.kind == "chat" else "cmpl-") + rid


def error_body(status: int, message: str, *, code: str | None = None) -> dict[str, Any]:
    return RouterError(status, message, code=code).body()


def internal_error() -> RouterError:
    return RouterError(500, "internal server error", type="server_error", code="internal_error")


def auth_error() -> RouterError:
    return RouterError(
        401, "invalid or missing API key", type="invalid_request_error", code="invalid_api_key"
    )


def too_large(limit: int) -> RouterError:
    return RouterError(413, f"request body exceeds {limit} bytes", code="request_too_large")


async def send_json(
    send: Send, status: int, body: Any, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [JSON, (b"content-length", str(len(data)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def send_sse(send: Send, obj: Any) -> None:
    await send(
        {
            "type": "http.response.body",
            "body": b"data: " + orjson.dumps(obj) + b"\n\n",
            "more_body": True,
        }
    )


class ClientGone(Exception):
    """The client hung up: stop working on its request."""


class Disconnect:
    """Watches ``receive`` while a request is served; on ``http.disconnect`` cancels the
    serving task (so the engine stops wherever it waits) and remembers why."""

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self.done = False
        self._task = asyncio.current_task()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                if not self.done:
                    self.gone = True
                    if self._task is not None:
                        self._task.cancel()
                return

    def stop(self) -> None:
        self.done = True
        self._watcher.cancel()

    def client_gone(self) -> ClientGone:
        """Call in ``except CancelledError``: undo our own cancellation."""
        if self._task is not None:
            self._task.uncancel()
        return ClientGone()


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes (413 past it, by Content-Length or
    as it streams); ClientGone when the client leaves while sending it."""
    for k, v in scope["headers"]:
        if k == b"content-length":
            try:
                if int(v) > limit:
                    raise too_large(limit)
            except ValueError:
                raise bad_request("malformed Content-Length") from None
    msg = await receive()
    if msg["type"] == "http.disconnect":
        raise ClientGone()
    body = msg.get("body", b"")
    if not msg.get("more_body"):
        if len(body) > limit:
            raise too_large(limit)
        return body
    parts, size = [body], len(body)
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone()
        part = msg.get("body", b"")
        size += len(part)
        if size > limit:
            raise too_large(limit)
        parts.append(part)
        if not msg.get("more_body"):
            return b"".join(parts)
