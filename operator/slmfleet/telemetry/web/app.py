"""The telemetry endpoints as one raw ASGI piece the router mounts.

In the router's ``_http``::

    if await telemetry.http.handle(scope, receive, send):
        return

``handle`` answers (and returns True) for ``/v1/feedback``, ``/v1/cases/*``,
``/v1/review/*`` and ``/review*``; for any other path it sends nothing and returns
False. ``TelemetryHTTP`` is also a complete ASGI app (404 elsewhere, ``/healthz``,
``/readyz`` with the decision log's health, ``/metrics``, lifespan) for
``slmfleet review serve`` and tests.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..store import StoreError
from . import api, console
from .common import HttpError, Receive, Scope, Send, send_error, send_json, store_unavailable

log = logging.getLogger("slmfleet.telemetry.web")

PREFIXES = ("/v1/feedback", "/v1/cases/", "/v1/review/", "/review")


class TelemetryHTTP:
    def __init__(
        self,
        services: api.Services,
        *,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
        readiness: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.svc = services
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown
        self._readiness = readiness

    @staticmethod
    def owns(path: str) -> bool:
        return path.startswith(PREFIXES) and (
            path == "/v1/feedback" or not path.startswith("/v1/feedback")
        )

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request if its path is ours; False (nothing sent) otherwise."""
        path = scope["path"]
        if not path.startswith(PREFIXES) or scope["type"] != "http" or not self.owns(path):
            return False
        method = scope["method"]
        try:
            if path == "/v1/feedback":
                if method != "POST":
                    raise HttpError(405, "use POST", code="method_not_allowed")
                await api.feedback(self.svc, scope, receive, send)
            elif path.startswith("/v1/cases/"):
                if method != "GET":
                    raise HttpError(405, "use GET", code="method_not_allowed")
                await api.client_case(self.svc, scope, path[len("/v1/cases/") :], send)
            elif path.startswith("/v1/review/"):
                await api.review(self.svc, scope, receive, send, path[len("/v1/review/") :])
            elif path == "/review" or path.startswith("/review/"):
                await console.handle(self.svc, scope, receive, send)
            else:
                return False
        except HttpError as exc:
            await send_error(send, exc)
        except StoreError as exc:
            await send_error(send, store_unavailable(exc))
        except Exception:  # a bug: still an OpenAI-style body
            log.exception("internal error serving %s", path)
            await send_error(send, HttpError(500, "internal server error", code="internal_error"))
        return True

    # -- standalone ----------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if await self.handle(scope, receive, send):
            return
        path = scope["path"]
        if path == "/healthz":
            await send_json(send, 200, {"status": "ok"})
        elif path == "/readyz":
            detail = self._readiness() if self._readiness else {}
            await send_json(send, 200, {"status": "ready", **detail})
        elif path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            from ...router.metrics import REGISTRY

            body = generate_latest(REGISTRY)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
        else:
            await send_error(send, HttpError(404, f"no route {path}", code="not_found"))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    if self._on_startup:
                        await self._on_startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if self._on_shutdown:
                    await self._on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
