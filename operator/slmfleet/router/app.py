"""The ASGI application: raw ASGI (no framework) to keep the router's own latency tiny.

Handlers are glue: read and bound the body, parse (protocol), run (engine), answer (answering),
and write one JSON log line per request with the same decision as the headers. The
telemetry endpoints (feedback, review cases, the console) are answered first; each
request's decision record goes to the decision log (off the request path: a bounded
append the writer thread drains) and its span, with one per cascade hop, to OTLP. A client
that disconnects cancels its request, streamed or not: the engine task is cancelled, the
upstream call closed (which cancels the generation in Triton on a dedicated stream),
no further tier runs, and only what was generated until then is charged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..budget.tokens import TokenCounter
from ..telemetry.runtime import Telemetry
from . import metrics as m
from .accounting import Accounting
from .answering import answer_stream, answer_unary
from .artifacts import ArtifactReader
from .backends import Codecs
from .decision import Decision, new_request_id
from .decisionlog import log_decision
from .engine import Engine
from .errors import RouterError, bad_request
from .external import ExternalClients
from .httpio import (
    ClientGone,
    Disconnect,
    Receive,
    Scope,
    Send,
    auth_error,
    error_body,
    header,
    internal_error,
    read_body,
    send_json,
)
from .protocol import ParsedRequest, parse_chat, parse_completion
from .settings import Settings, load_api_keys
from .snapshot import ClassifierFactory, Snapshot, build_snapshot, digest_of, parse_config
from .tiers import Outcome
from .triton import TritonPool

log = logging.getLogger("slmfleet.router")
access = logging.getLogger("slmfleet.router.access")

__all__ = ["ClientGone", "RouterApp", "Settings", "load_api_keys"]


class RouterApp:
    def __init__(
        self,
        *,
        settings: Settings | None = None,
        source: Any = None,
        classifier_factory: ClassifierFactory | None = None,
        engine: Engine | None = None,
        discovery: Any = None,
        external: ExternalClients | None = None,
        accounting: Accounting | None = None,
        counter: TokenCounter | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings or Settings()
        # Decision log, feedback, review queue and tracing (off unless configured).
        self.telemetry = telemetry or Telemetry()
        self.telemetry.bind_client_auth(self.authorized)
        self.source = source
        self.classifier_factory = classifier_factory
        self.discovery = discovery
        self.pool = TritonPool(discovery=discovery)
        # Egress policy and Secret resolver of the external tiers (see __main__).
        self.external = external or ExternalClients()
        # Spend: in-process unless __main__ hands over the shared ledger (budget.fromenv).
        self.engine = engine or Engine(
            self.pool,
            self.external,
            accounting=accounting,
            counter=counter,
            review=self.telemetry.review,
            shared_stream_max_tokens=self.settings.shared_stream_max_tokens,
            codecs=Codecs(ArtifactReader(self.settings.artifact_root)),
        )
        self.snapshot: Snapshot | None = None
        self._fit_cache: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._reload_lock = asyncio.Lock()

    # ---- configuration ----------------------------------------------------------------
    async def apply(self, raw: bytes) -> bool:
        """Parse, fit off the loop, then swap the snapshot in one assignment."""
        digest = digest_of(raw)
        async with self._reload_lock:
            if self.snapshot is not None and self.snapshot.digest == digest:
                return False
            try:
                snap = await asyncio.to_thread(self._build, raw, digest)
            except Exception as exc:
                m.bound(m.RELOADS, "error").inc()
                log.error(
                    "config rejected, keeping %s: %s",
                    self.snapshot.digest if self.snapshot else "nothing",
                    exc,
                )
                return False
            await self.pool.configure(snap.config.specialists)
            self.snapshot = snap
            self._prune_fit_cache(snap)
            m.bound(m.RELOADS, "ok").inc()
            log.info(
                "config %s loaded: %d policies, %d specialists",
                digest,
                len(snap.config.policies),
                len(snap.config.specialists),
            )
            return True

    def _prune_fit_cache(self, snap: Snapshot) -> None:
        """Keep only the classifiers the serving snapshot uses (the cache would otherwise
        hold every classifier ever fitted)."""
        used = {id(p.classifier) for p in snap.policies.values() if p.classifier is not None}
        self._fit_cache = {k: v for k, v in self._fit_cache.items() if id(v) in used}

    def _build(self, raw: bytes, digest: str) -> Snapshot:
        cfg = parse_config(raw)
        return build_snapshot(
            cfg, digest=digest, classifier_factory=self.classifier_factory, cache=self._fit_cache
        )

    async def startup(self) -> None:
        await self.telemetry.start()
        if self.source is not None:
            self._tasks.append(asyncio.create_task(self.source.run(self.apply)))

    async def shutdown(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.discovery is not None:
            await self.discovery.close()
        await self.pool.close()
        await self.external.close()
        await self.engine.aclose()  # the settles under way land first
        await self.telemetry.close()  # flushes the decisions still buffered (bounded)

    # ---- ASGI -------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await self.telemetry.http.handle(scope, receive, send):
            return  # /v1/feedback, /v1/cases/*, /v1/review/*, /review (their own auth)
        path, method = scope["path"], scope["method"]
        if path == "/v1/chat/completions" or path == "/v1/completions":
            if method != "POST":
                await send_json(send, 405, error_body(405, "use POST"))
                return
            await self._completion(scope, receive, send, chat=path.endswith("chat/completions"))
        elif path == "/v1/models" and method == "GET":
            if not self.authorized(scope):
                await send_json(send, 401, auth_error().body())
                return
            snap = self.snapshot
            await send_json(
                send, 200, {"object": "list", "data": list(snap.models if snap else ())}
            )
        elif path == "/healthz":
            await send_json(send, 200, {"status": "ok"})
        elif path == "/readyz":
            snap = self.snapshot
            if snap is None:
                await send_json(send, 503, {"status": "no configuration loaded"})
            else:
                # Ready while the decision store is down (requests are served); the
                # detail says so, with the drop counts.
                detail = self.telemetry.readiness(public=True)
                await send_json(send, 200, {"status": "ready", "config": snap.digest, **detail})
        elif path == "/metrics":
            body = generate_latest(m.REGISTRY)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode())],
                }
            )
            await send({"type": "http.response.body", "body": body})
        else:
            await send_json(send, 404, error_body(404, f"no route {path}", code="not_found"))

    def authorized(self, scope: Scope) -> bool:
        """Whether the request carries a valid API key (always, without keys); the
        guard's rate limit asks too (guard.caller_key)."""
        keys = self.settings.api_keys
        if keys is None:
            return True
        for k, v in scope["headers"]:
            if k == b"authorization":
                token = v.decode("latin-1")
                return token[:7].lower() == "bearer " and token[7:].strip() in keys
        return False

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        return await read_body(scope, receive, self.settings.max_body_bytes)

    async def _completion(self, scope: Scope, receive: Receive, send: Send, *, chat: bool) -> None:
        t0 = time.perf_counter()
        started = time.time()
        rid = header(scope, b"x-request-id") or new_request_id()
        d = Decision(rid)
        req: ParsedRequest | None = None
        out: Outcome | None = None
        snap: Snapshot | None = None
        try:
            if not self.authorized(scope):
                raise auth_error()
            raw = await self._read_body(scope, receive)
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise bad_request(f"malformed JSON body: {exc}", code="invalid_json") from None
            req = (
                parse_chat(data, max_messages=self.settings.max_messages)
                if chat
                else parse_completion(data)
            )
            d.trace = self.telemetry.tracing.request(
                scope["headers"],
                model=req.model,
                request_id=rid,
                operation="chat" if chat else "text_completion",
            )
            snap = self.snapshot
            if snap is None:
                raise RouterError(
                    503,
                    "router configuration not loaded yet",
                    type="server_error",
                    code="not_ready",
                )
            watch = Disconnect(receive)
            try:
                if req.stream:
                    out = await answer_stream(self.engine, snap, req, d, watch, send)
                else:
                    out = await answer_unary(self.engine, snap, req, d, watch, send)
            except asyncio.CancelledError:
                if not watch.gone:
                    raise
                raise watch.client_gone() from None
            finally:
                watch.stop()
        except RouterError as exc:
            d.status = exc.status
            d.error = exc.message
            headers = d.headers() + [(k.encode(), v.encode()) for k, v in exc.headers.items()]
            await send_json(send, exc.status, exc.body(), headers)
        except ClientGone:
            d.status = 499
            d.error = "client disconnected"
        except Exception as exc:  # a bug: still an OpenAI error body, never text/plain
            log.exception("internal error serving %s", rid)
            d.status = 500
            d.error = f"internal error: {exc!r}"
            await send_json(send, 500, internal_error().body(), d.headers())
        finally:
            total = time.perf_counter() - t0
            self._observe(d, total)
            if self.telemetry.enabled:
                log_decision(self.telemetry, d, started, total, req, out, snap)

    def _observe(self, d: Decision, total: float) -> None:
        policy = d.metric_policy
        m.bound(m.REQUESTS, policy, d.metric_tier, str(d.status)).inc()
        m.bound(m.DURATION, policy).observe(total)
        m.bound(m.ADDED, policy).observe(max(0.0, total - d.upstream_s))
        if access.isEnabledFor(logging.INFO):
            rec = d.summary()
            rec["status"] = d.status
            rec["duration_ms"] = round(total * 1000, 3)
            rec["router_ms"] = round((total - d.upstream_s) * 1000, 3)
            if d.error:
                rec["error"] = d.error
            access.info(orjson.dumps(rec).decode())
