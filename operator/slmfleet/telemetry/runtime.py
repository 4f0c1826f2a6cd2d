"""``Telemetry``: everything of this package the router holds, built from the
environment. How the router plugs it in (router/app.py, one call site each)::

    tel = Telemetry.from_env()                                   # router/__main__.py
    tel.bind_client_auth(app.authorized)                         # RouterApp.__init__
    Engine(..., review=tel.review)                               # the human tier files there
    await tel.start()                                            # startup
    await tel.close()                                            # shutdown (flushes)
    if await tel.http.handle(scope, receive, send): return       # _http, first
    d.trace = tel.tracing.request(scope["headers"], model=...)    # the request span
    tel.record(record_from_decision(d, started_at=..., duration_s=...,
               content=tel.content_for(policy.decision_log), prompt=..., answer=...))
    tel.readiness()                                              # /readyz detail

With ``SLMFLEET_DECISION_STORE`` unset there is no store: ``record`` is a no-op,
``review`` is None, and ``http.handle`` answers the telemetry paths with 404.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .auth import ReviewerAuth
from .record import DecisionRecord
from .review import ReviewService
from .settings import (
    ContentPolicy,
    DecisionLogSettings,
    ReviewSettings,
    decision_log_from_env,
    review_from_env,
)
from .store import Store, open_store
from .tracing import Tracing
from .web import Services, TelemetryHTTP
from .web.app import PREFIXES
from .web.common import HttpError, Scope, send_error
from .writer import DecisionWriter


def local_store_url(directory: str | Path) -> str:
    """The embedded default for one router (``slmfleet up``): a SQLite file there."""
    return f"sqlite:///{Path(directory).resolve() / 'decisions.db'}"


class Telemetry:
    def __init__(
        self,
        *,
        log_settings: DecisionLogSettings | None = None,
        review_settings: ReviewSettings | None = None,
        store: Store | None = None,
        authorize_client: Callable[[Scope], bool] | None = None,
        tracing: Tracing | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.log_settings = log_settings or DecisionLogSettings()
        self.review_settings = review_settings or ReviewSettings()
        if store is None and self.log_settings.store_url:
            store = open_store(
                self.log_settings.store_url,
                password_file=self.log_settings.password_file,
                migrate=False,  # the first operation creates the tables; a store down now is
            )  # retried, not fatal
        self.store = store
        self.tracing = tracing or Tracing.disabled()
        self.writer = DecisionWriter(store, self.log_settings) if store else None
        self.review = ReviewService(store, self.review_settings, clock=clock) if store else None
        self.auth = ReviewerAuth(
            self.review_settings.reviewers,
            self.review_settings.session_secret,
            session_ttl_s=self.review_settings.session_ttl_s,
            clock=clock,
        )
        self.services = services = Services(
            store=store,  # type: ignore[arg-type]
            auth=self.auth,
            review=self.review,
            writer=self.writer,
            authorize_client=authorize_client,
            clock=clock,
        )
        self.http = (
            _Disabled()
            if store is None
            else TelemetryHTTP(
                services, on_startup=self.start, on_shutdown=self.close, readiness=self.readiness
            )
        )

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] = os.environ,
        *,
        authorize_client: Callable[[Scope], bool] | None = None,
    ) -> Telemetry:
        return cls(
            log_settings=decision_log_from_env(env),
            review_settings=review_from_env(env),
            authorize_client=authorize_client,
            tracing=Tracing.from_env(env),
        )

    @property
    def enabled(self) -> bool:
        """Whether anything wants a request's record (a store or tracing)."""
        return self.writer is not None or self.tracing.enabled

    def bind_client_auth(self, authorize: Callable[[Scope], bool]) -> None:
        """Client endpoints (feedback, case polling) check the router's API keys."""
        self.services.authorize_client = authorize

    def content_for(self, setting: ContentPolicy | None) -> ContentPolicy:
        """A policy's content setting (``spec.decisionLog``), else the process default
        (SLMFLEET_DECISION_CONTENT)."""
        return setting if setting is not None else self.log_settings.content

    def record(self, record: DecisionRecord) -> bool:
        """Hand a decision to the writer (never blocks; False when dropped or off)."""
        w = self.writer
        return w.submit(record) if w is not None else False

    async def start(self) -> None:
        if self.writer is not None:
            self.writer.start()
        if self.review is not None:
            await self.review.start()

    async def close(self) -> None:
        """Stop the sweeper, flush the decision buffer (bounded), close the store."""
        if self.review is not None:
            await self.review.close()
        if self.writer is not None:
            await asyncio.to_thread(self.writer.close)
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
        self.tracing.shutdown()

    def readiness(self, *, public: bool = False) -> dict[str, Any]:
        """Detail for /readyz: the router stays ready (requests are served) when the
        store is down; this says so, with the drop counts. ``public``: the store's own
        error text (host, path) is left out: it is in the log."""
        out: dict[str, Any] = {"tracing": self.tracing.enabled}
        if self.writer is not None:
            health = self.writer.health()
            if public and health.get("last_error"):
                health["last_error"] = "see the router's log"
            out["decision_log"] = health
        else:
            out["decision_log"] = {"ok": True, "enabled": False}
        # Without a store, review cases are log lines: nothing to claim or poll.
        out["review_queue"] = "store" if self.review is not None else "log"
        return out


class _Disabled:
    """``http`` without a store: the telemetry paths answer 404 (OpenAI-style)."""

    async def handle(self, scope: Scope, receive: Any, send: Any) -> bool:
        # Every router request passes here first: one prefix test, nothing more.
        if not scope["path"].startswith(PREFIXES) or not TelemetryHTTP.owns(scope["path"]):
            return False
        await send_error(
            send, HttpError(404, "the decision store is not configured", code="not_found")
        )
        return True
