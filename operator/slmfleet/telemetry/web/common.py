"""Raw ASGI helpers shared by the API and the console: bounded bodies, JSON and HTML
responses, OpenAI-style errors (the router's shape: {"error": {message, type, param,
code}})."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import orjson

log = logging.getLogger("slmfleet.telemetry.web")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = Iterable[tuple[bytes, bytes]]

HTML_HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error"}


class HttpError(Exception):
    """Answered as an OpenAI-style error body with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type or _TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def unauthorized(what: str = "API key") -> HttpError:
    return HttpError(401, f"invalid or missing {what}", code="invalid_api_key")


def store_unavailable(exc: Exception) -> HttpError:
    """503 for callers; the store's own message (host, path) goes to the log only."""
    log.warning("decision store unavailable: %s", exc)
    return HttpError(
        503,
        "the decision store is unavailable; retry later",
        code="store_unavailable",
        headers={"retry-after": "5"},
    )


def header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body; 413 past ``limit`` bytes (by Content-Length, or as it streams)."""
    length = header(scope, b"content-length")
    if length is not None:
        try:
            if int(length) > limit:
                raise too_large(limit)
        except ValueError:
            raise HttpError(400, "malformed Content-Length") from None
    parts: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise HttpError(400, "client disconnected")
        part = msg.get("body", b"")
        size += len(part)
        if size > limit:
            raise too_large(limit)
        parts.append(part)
        if not msg.get("more_body"):
            return b"".join(parts)


def too_large(limit: int) -> HttpError:
    return HttpError(413, f"request body exceeds {limit} bytes", code="request_too_large")


def json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, f"malformed JSON body: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise HttpError(400, "the body must be a JSON object", code="invalid_request")
    return data


def form(raw: bytes) -> dict[str, str]:
    """An application/x-www-form-urlencoded body; the first value of each field."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "the form is not UTF-8") from None
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


def query(scope: Scope) -> dict[str, str]:
    qs = scope.get("query_string", b"").decode("latin-1")
    return {k: v[0] for k, v in parse_qs(qs, keep_blank_values=False).items()}


async def send_json(send: Send, status: int, body: Any, headers: Headers = ()) -> None:
    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def send_error(send: Send, err: HttpError) -> None:
    extra = [(k.encode(), v.encode()) for k, v in err.headers.items()]
    await send_json(send, err.status, err.body(), extra)


async def send_html(send: Send, status: int, html: str, headers: Headers = ()) -> None:
    data = html.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*HTML_HEADERS, (b"content-length", str(len(data)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def send_bytes(send: Send, status: int, data: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(data)).encode()),
                (b"cache-control", b"public, max-age=300"),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def redirect(send: Send, location: str, headers: Headers = ()) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", location.encode()),
                (b"content-length", b"0"),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
