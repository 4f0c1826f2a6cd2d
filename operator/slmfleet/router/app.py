"""The ASGI application: raw ASGI (no framework) to keep the router's own latency tiny.

Handlers are glue: read and bound the body, parse (protocol), run (engine), render,
and write one JSON log line per request with the same decision as the headers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import metrics as m
from .engine import Decision, Engine, Outcome
from .errors import RouterError, UpstreamError, bad_request
from .protocol import ParsedRequest, chunk, full_response, parse_chat, parse_completion, usage
from .snapshot import ClassifierFactory, Snapshot, build_snapshot, digest_of, parse_config
from .upstream import ExternalClients, TritonPool

log = logging.getLogger("slmfleet.router")
access = logging.getLogger("slmfleet.router.access")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = (b"content-type", b"application/json")
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


@dataclass(frozen=True)
class Settings:
    max_body_bytes: int = 2 * 1024 * 1024
    max_messages: int = 256
    api_keys: frozenset[str] | None = None
    """When set, /v1/* requires ``Authorization: Bearer <key>``."""


def load_api_keys(path: str | None = None, inline: str | None = None) -> frozenset[str] | None:
    """Keys from a file (one per line, where a Secret is mounted) and/or a comma list."""
    keys: set[str] = set()
    if path:
        keys |= {ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()}
    if inline:
        keys |= {k.strip() for k in inline.split(",") if k.strip()}
    return frozenset(keys) if keys else None


def settings_from_env() -> Settings:
    return Settings(
        max_body_bytes=int(os.environ.get("SLMFLEET_MAX_BODY_BYTES", 2 * 1024 * 1024)),
        max_messages=int(os.environ.get("SLMFLEET_MAX_MESSAGES", 256)),
        api_keys=load_api_keys(
            os.environ.get("SLMFLEET_API_KEYS_FILE"), os.environ.get("SLMFLEET_API_KEYS")
        ),
    )


class ClientGone(Exception):
    """The client hung up mid-stream: stop generating (closing the upstream stream)."""


class RouterApp:
    def __init__(
        self,
        *,
        settings: Settings | None = None,
        source: Any = None,
        classifier_factory: ClassifierFactory | None = None,
        engine: Engine | None = None,
        external: ExternalClients | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.source = source
        self.classifier_factory = classifier_factory
        self.pool = TritonPool()
        # Egress policy and Secret resolver of the external tiers (see __main__).
        self.external = external or ExternalClients()
        self.engine = engine or Engine(self.pool, self.external)
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
            self.snapshot = snap
            self._prune_fit_cache(snap)
            m.bound(m.RELOADS, "ok").inc()
            log.info(
                "config %s loaded: %d policies, %d specialists",
                digest,
                len(snap.config.policies),
                len(snap.config.specialists),
            )
            await self.pool.forget({s.endpoint for s in snap.config.specialists})
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
        if self.source is not None:
            self._tasks.append(asyncio.create_task(self.source.run(self.apply)))

    async def shutdown(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.pool.close()
        await self.external.close()

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
        path, method = scope["path"], scope["method"]
        if path == "/v1/chat/completions" or path == "/v1/completions":
            if method != "POST":
                await _json(send, 405, _err(405, "use POST"))
                return
            await self._completion(scope, receive, send, chat=path.endswith("chat/completions"))
        elif path == "/v1/models" and method == "GET":
            if not self._authorized(scope):
                await _json(send, 401, _auth_error().body())
                return
            snap = self.snapshot
            await _json(send, 200, {"object": "list", "data": list(snap.models if snap else ())})
        elif path == "/healthz":
            await _json(send, 200, {"status": "ok"})
        elif path == "/readyz":
            snap = self.snapshot
            if snap is None:
                await _json(send, 503, {"status": "no configuration loaded"})
            else:
                await _json(send, 200, {"status": "ready", "config": snap.digest})
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
            await _json(send, 404, _err(404, f"no route {path}", code="not_found"))

    def _authorized(self, scope: Scope) -> bool:
        keys = self.settings.api_keys
        if keys is None:
            return True
        for k, v in scope["headers"]:
            if k == b"authorization":
                token = v.decode("latin-1")
                return token[:7].lower() == "bearer " and token[7:].strip() in keys
        return False

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.max_body_bytes
        for k, v in scope["headers"]:
            if k == b"content-length":
                try:
                    if int(v) > limit:
                        raise _too_large(limit)
                except ValueError:
                    raise bad_request("malformed Content-Length") from None
        msg = await receive()
        body = msg.get("body", b"")
        if not msg.get("more_body"):
            if len(body) > limit:
                raise _too_large(limit)
            return body
        parts, size = [body], len(body)
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise ClientGone()
            part = msg.get("body", b"")
            size += len(part)
            if size > limit:
                raise _too_large(limit)
            parts.append(part)
            if not msg.get("more_body"):
                return b"".join(parts)

    async def _completion(self, scope: Scope, receive: Receive, send: Send, *, chat: bool) -> None:
        t0 = time.perf_counter()
        rid = _header(scope, b"x-request-id") or uuid.uuid4().hex
        d = Decision(rid)
        req: ParsedRequest | None = None
        try:
            if not self._authorized(scope):
                raise _auth_error()
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
            snap = self.snapshot
            if snap is None:
                raise RouterError(
                    503,
                    "router configuration not loaded yet",
                    type="server_error",
                    code="not_ready",
                )
            if req.stream:
                await self._stream(snap, req, d, receive, send)
            else:
                out = await self.engine.run(snap, req, d)
                body = full_response(
                    req,
                    rid=_resp_id(req, rid),
                    created=int(time.time()),
                    model=req.model,
                    text=out.text,
                    reasoning=out.reasoning or None,
                    finish_reason=out.finish_reason,
                    usage_=usage(d.prompt_tokens, d.completion_tokens, d.reasoning_tokens),
                    decision=d.summary(),
                )
                await _json(send, 200, body, d.headers())
        except RouterError as exc:
            d.status = exc.status
            d.error = exc.message
            headers = d.headers() + [(k.encode(), v.encode()) for k, v in exc.headers.items()]
            await _json(send, exc.status, exc.body(), headers)
        except ClientGone:
            d.status = 499
            d.error = "client disconnected"
        except Exception as exc:  # a bug: still an OpenAI error body, never text/plain
            log.exception("internal error serving %s", rid)
            d.status = 500
            d.error = f"internal error: {exc!r}"
            err = _internal_error()
            await _json(send, 500, err.body(), d.headers())
        finally:
            total = time.perf_counter() - t0
            self._observe(d, total)

    async def _stream(
        self, snap: Snapshot, req: ParsedRequest, d: Decision, receive: Receive, send: Send
    ) -> None:
        rid = _resp_id(req, d.request_id)
        created = int(time.time())
        started = False
        gone = False

        async def watch() -> None:
            nonlocal gone
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    gone = True
                    return

        watcher = asyncio.create_task(watch())

        async def start() -> None:
            nonlocal started
            started = True
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": SSE_HEADERS + d.headers(streaming=True),
                }
            )
            if req.kind == "chat":
                await _sse(
                    send, chunk(req, rid=rid, created=created, model=req.model, role=True, text="")
                )

        async def emit(delta: str) -> None:
            if gone:
                raise ClientGone()
            if not started:
                await start()
            await _sse(send, chunk(req, rid=rid, created=created, model=req.model, text=delta))

        try:
            try:
                out: Outcome = await self.engine.run(snap, req, d, emit)
            except (UpstreamError, RouterError) as exc:
                if isinstance(exc, RouterError) and not started:
                    raise  # nothing sent yet: a proper status code and error body
                # Failed after the first token: the status is gone, end the stream cleanly.
                d.status = 502
                d.error = str(exc)
                if not started:
                    await start()
                await _sse(
                    send,
                    RouterError(
                        502,
                        "upstream failure mid-stream: "
                        + (exc.public_message if isinstance(exc, UpstreamError) else exc.message),
                        type="upstream_error",
                    ).body(),
                )
                await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
                return
            except ClientGone:
                raise
            except Exception as exc:
                if not started:
                    raise  # _completion answers a 500 with an error body
                log.exception("internal error mid-stream in %s", d.request_id)
                d.status = 500
                d.error = f"internal error: {exc!r}"
                await _sse(send, _internal_error().body())
                await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
                return
            if not started:
                await start()
                if out.text:
                    await _sse(
                        send, chunk(req, rid=rid, created=created, model=req.model, text=out.text)
                    )
            last = chunk(
                req, rid=rid, created=created, model=req.model, finish_reason=out.finish_reason
            )
            last["slmfleet"] = d.summary()
            await _sse(send, last)
            if req.include_usage:
                u = chunk(req, rid=rid, created=created, model=req.model)
                u["choices"] = []
                u["usage"] = usage(d.prompt_tokens, d.completion_tokens, d.reasoning_tokens)
                await _sse(send, u)
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        finally:
            watcher.cancel()

    def _observe(self, d: Decision, total: float) -> None:
        policy = d.metric_policy
        m.bound(m.REQUESTS, policy, d.tier, str(d.status)).inc()
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


# ---- helpers ---------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")[:128]
    return None


def _resp_id(req: ParsedRequest, rid: str) -> str:
    return ("chatcmpl-" if req.kind == "chat" else "cmpl-") + rid


def _err(status: int, message: str, *, code: str | None = None) -> dict[str, Any]:
    return RouterError(status, message, code=code).body()


def _internal_error() -> RouterError:
    return RouterError(500, "internal server error", type="server_error", code="internal_error")


def _auth_error() -> RouterError:
    return RouterError(
        401, "invalid or missing API key", type="invalid_request_error", code="invalid_api_key"
    )


def _too_large(limit: int) -> RouterError:
    return RouterError(413, f"request body exceeds {limit} bytes", code="request_too_large")


async def _json(
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


async def _sse(send: Send, obj: Any) -> None:
    await send(
        {
            "type": "http.response.body",
            "body": b"data: " + orjson.dumps(obj) + b"\n\n",
            "more_body": True,
        }
    )
