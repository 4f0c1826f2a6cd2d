"""Nothing a caller sends can hang the router: an ASGI wrapper and an HTTP protocol.

* **Header timeout** (:func:`protocol`): uvicorn has no deadline for the request line
  and headers; a client trickling one byte a second (slowloris) held a connection
  forever. The protocol closes a connection whose headers are not complete within
  ``header_timeout`` seconds of its start (or of the next request on a kept-alive one).
* **Body timeout**: the whole body must arrive within ``body_timeout`` seconds, else
  408 and the connection closes.
* **In-flight cap**: at most ``max_in_flight`` API requests at once (streams included);
  more get 503 with ``Retry-After`` instead of queueing without bound.
* **Per-key rate limit** (optional): a token bucket per valid API key, 429 with
  ``Retry-After`` when empty. Requests without a valid key (none, or one the router
  does not hold) share one bucket, so rotating junk tokens neither gets a fresh
  budget each nor evicts a real key's bucket; a router without API keys buckets by
  client address. Checked before the body is read; the buckets are LRU-bounded.
* **/metrics off the API port**: metric labels name every tenant's policies, so the
  router serves them on a port of its own (``--metrics-port``) and answers 404 here.

Every refusal is an OpenAI-style error body, counted by reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import Counter, Gauge

from .metrics import REGISTRY

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REJECTED = Counter(
    "slmfleet_router_guard_rejections_total",
    "Requests refused by the guard: in_flight, rate_limit, body_timeout, header_timeout.",
    ["reason"],
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "slmfleet_router_in_flight_requests", "API requests being served now.", registry=REGISTRY
)


@dataclass(frozen=True)
class GuardSettings:
    max_in_flight: int = 1024
    """API requests served at once; 0 disables the cap."""
    rate_per_second: float = 0.0
    """Sustained requests per second per API key; 0 disables rate limiting."""
    burst: int = 0
    """Bucket size per key (0: twice the rate, at least 1)."""
    body_timeout: float = 30.0
    """Seconds to receive a whole request body."""
    header_timeout: float = 10.0
    """Seconds to receive a request's line and headers."""
    max_keys: int = 10_000
    """Rate-limit buckets kept (least recently used evicted)."""
    metrics_on_api_port: bool = False
    """Serve /metrics on the API port too (off: it has a port of its own)."""


@dataclass
class TokenBucket:
    rate: float
    capacity: float
    tokens: float
    stamp: float

    def take(self, now: float) -> float:
        """0.0 if a request may pass now, else the seconds until one may."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    def __init__(self, rate: float, burst: int, max_keys: int, clock: Callable[[], float]):
        self.rate = rate
        self.capacity = float(burst or max(1, round(2 * rate)))
        self.max_keys = max_keys
        self.clock = clock
        self.buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def wait(self, key: str) -> float:
        now = self.clock()
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.capacity, self.capacity, now)
            self.buckets[key] = bucket
            if len(self.buckets) > self.max_keys:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(key)
        return bucket.take(now)


#: The one bucket every request without a valid API key shares.
UNAUTHENTICATED = "unauthenticated"


def caller_key(scope: Scope, authorized: Callable[[Scope], bool] | None = None) -> str:
    """Whose bucket a request takes from. With API keys (``authorized`` checks one): a
    digest of a valid key (keys are never kept in clear), else ``UNAUTHENTICATED``, one
    bucket for all the rest: a header is not an identity until it is checked. Without
    API keys (``authorized`` None) the client address."""
    if authorized is None:
        client = scope.get("client") or ("?", 0)
        return f"addr:{client[0]}"
    if not authorized(scope):
        return UNAUTHENTICATED
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            token = value[7:].strip()  # "Bearer <key>", as authorized() read it
            return "key:" + hashlib.sha256(token).hexdigest()[:24]
    return UNAUTHENTICATED  # authorized without a header: not a keyed router after all


def error_body(message: str, type_: str, code: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})


async def respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()):  # type: ignore[assignment]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Wraps the router's ASGI app; every other path (health, readiness) passes through."""

    def __init__(
        self,
        app: ASGIApp,
        settings: GuardSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        authorized: Callable[[Scope], bool] | None = None,
    ) -> None:
        """``authorized``: whether a request carries a valid API key (the router's own
        check, a set lookup), when the router has keys; None when it has none."""
        self.app = app
        self.settings = settings
        self.clock = clock
        self.authorized = authorized
        self.in_flight = 0
        self.limiter = (
            RateLimiter(settings.rate_per_second, settings.burst, settings.max_keys, clock)
            if settings.rate_per_second > 0
            else None
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # the wrapped app's attributes (snapshot, ...)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path == "/metrics" and not self.settings.metrics_on_api_port:
            body = error_body("metrics are served on the metrics port", "invalid_request_error",
                              "not_found")  # fmt: skip
            await respond(send, 404, body)
            return
        if not path.startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if self.limiter is not None:
            wait = self.limiter.wait(caller_key(scope, self.authorized))
            if wait > 0:
                REJECTED.labels("rate_limit").inc()
                body = error_body("rate limit exceeded; retry later", "rate_limit_error",
                                  "rate_limit_exceeded")  # fmt: skip
                await respond(
                    send, 429, body, [(b"retry-after", str(max(1, round(wait))).encode())]
                )
                return
        cap = self.settings.max_in_flight
        if cap and self.in_flight >= cap:
            REJECTED.labels("in_flight").inc()
            body = error_body("the router is at capacity; retry shortly", "server_error",
                              "overloaded")  # fmt: skip
            await respond(send, 503, body, [(b"retry-after", b"1")])
            return
        self.in_flight += 1
        IN_FLIGHT.set(self.in_flight)
        try:
            await self._serve(scope, receive, send)
        finally:
            self.in_flight -= 1
            IN_FLIGHT.set(self.in_flight)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        deadline = self.clock() + self.settings.body_timeout
        body_done = False
        started = False
        timed_out = False

        async def guarded_receive() -> Message:
            nonlocal body_done, timed_out
            if body_done or timed_out:
                return await receive() if not timed_out else {"type": "http.disconnect"}
            left = deadline - self.clock()
            try:
                async with asyncio.timeout(max(0.0, left)):  # unlike wait_for, no task per call
                    message = await receive()
            except TimeoutError:
                timed_out = True
                REJECTED.labels("body_timeout").inc()
                if not started:
                    await send_through(408, "the request body did not arrive in time")
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body"):
                body_done = True
            return message

        async def send_through(status: int, message: str) -> None:
            nonlocal started
            started = True
            body = error_body(message, "invalid_request_error", "request_timeout")
            await respond(send, status, body, [(b"connection", b"close")])

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out:
                return  # we answered 408 already; the app's late answer goes nowhere
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)


def protocol(header_timeout: float) -> type:
    """uvicorn's httptools protocol with a deadline for each request's headers."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeaderDeadlineProtocol(HttpToolsProtocol):  # type: ignore[misc]
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout, self._expire)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                REJECTED.labels("header_timeout").inc()
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol
