"""JSON endpoints: feedback and case polling (client API keys), the review API
(reviewer keys). Thin glue: parse (``parse``), call the store or the review service,
render; errors are OpenAI-style bodies."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import metrics as m
from ..auth import Reviewer, ReviewerAuth
from ..review import Change, Refusal, Release, Resolve, ReviewService
from ..store import Store, StoreError
from ..writer import DecisionWriter
from . import parse
from .common import (
    HttpError,
    Receive,
    Scope,
    Send,
    json_object,
    query,
    read_body,
    send_json,
    store_unavailable,
    unauthorized,
)

#: How long feedback for a decision still in the writer's buffer waits for its flush.
PENDING_WAIT_S = 2.0


@dataclass
class Services:
    """What the handlers need; the router builds one (``Telemetry``)."""

    store: Store
    auth: ReviewerAuth
    review: ReviewService | None = None
    writer: DecisionWriter | None = None
    authorize_client: Callable[[Scope], bool] | None = None
    """The router's own API-key check for client endpoints (None: no auth)."""
    clock: Callable[[], float] = field(default=time.time)


def _client(svc: Services, scope: Scope) -> None:
    if svc.authorize_client is not None and not svc.authorize_client(scope):
        raise unauthorized()


def _reviewer(svc: Services, scope: Scope) -> Reviewer:
    who = svc.auth.from_headers(scope["headers"])
    if who is None:
        raise unauthorized("reviewer key")
    return who


async def feedback(svc: Services, scope: Scope, receive: Receive, send: Send) -> None:
    """POST /v1/feedback: idempotent (the same body twice stores the same state),
    merged per request id, 404 with nothing stored for an unknown or expired id."""
    _client(svc, scope)
    raw = await read_body(scope, receive, parse.MAX_FEEDBACK_BYTES)
    try:
        fb = parse.feedback(json_object(raw))
    except HttpError:
        m.FEEDBACK.labels("invalid").inc()
        raise
    try:
        row = await svc.store.aio(svc.store.put_feedback, fb, svc.clock())
        if row is None and svc.writer is not None and svc.writer.pending(fb.request_id):
            # The decision is still in the writer's buffer: wait for its flush, retry.
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, svc.writer.wait_flushed, PENDING_WAIT_S)
            row = await svc.store.aio(svc.store.put_feedback, fb, svc.clock())
    except StoreError as exc:
        m.REVIEW_STORE_ERRORS.inc()
        raise store_unavailable(exc) from None
    if row is None:
        m.FEEDBACK.labels("unknown_request").inc()
        raise HttpError(
            404,
            f"no decision is logged for request {fb.request_id!r} (unknown or expired)",
            code="request_not_found",
            param="request_id",
        )
    m.FEEDBACK.labels("stored").inc()
    await send_json(send, 200, row.public())


async def client_case(svc: Services, scope: Scope, case_id: str, send: Send) -> None:
    """GET /v1/cases/{id}: the caller's view of a case (pending, or the answer)."""
    _client(svc, scope)
    cid = parse.case_id(case_id)
    try:
        case = await svc.store.aio(svc.store.get_case, cid)
    except StoreError as exc:
        raise store_unavailable(exc) from None
    if case is None:
        raise HttpError(404, "no such case", code="case_not_found")
    await send_json(send, 200, case.for_client(svc.clock()))


def _service(svc: Services) -> ReviewService:
    if svc.review is None:
        raise HttpError(404, "the review queue is not enabled", code="not_found")
    return svc.review


async def review(svc: Services, scope: Scope, receive: Receive, send: Send, rest: str) -> None:
    """/v1/review/queues, /v1/review/cases[/{id}[/claim|release|resolve|escalate]]."""
    rs = _service(svc)
    who = _reviewer(svc, scope)
    method = scope["method"]
    parts = [p for p in rest.split("/") if p]
    try:
        if parts == ["queues"] and method == "GET":
            await send_json(send, 200, {"object": "list", "data": await rs.queue_stats(who.queues)})
        elif parts == ["cases"] and method == "GET":
            q = query(scope)
            f = parse.case_filter(q, who.visible(parse.wanted_queues(q)))
            cases = await rs.list_cases(f)
            now = svc.clock()
            nxt = f"{cases[-1].created_at!r}:{cases[-1].id}" if len(cases) == f.limit else None
            await send_json(
                send,
                200,
                {"object": "list", "data": [c.public(now) for c in cases], "next": nxt},
            )
        elif len(parts) == 2 and parts[0] == "cases" and method == "GET":
            case = await rs.get(parse.case_id(parts[1]), who.queues)
            if case is None:
                raise HttpError(404, "no such case", code="case_not_found")
            body = case.public(svc.clock())
            body["events"] = await rs.events(case.id)
            await send_json(send, 200, body)
        elif len(parts) == 3 and parts[0] == "cases" and method == "POST":
            await _action(svc, rs, who, parse.case_id(parts[1]), parts[2], scope, receive, send)
        else:
            raise HttpError(404, f"no route {scope['path']}", code="not_found")
    except StoreError as exc:
        m.REVIEW_STORE_ERRORS.inc()
        raise store_unavailable(exc) from None


async def _action(
    svc: Services,
    rs: ReviewService,
    who: Reviewer,
    cid: str,
    verb: str,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    raw = await read_body(scope, receive, parse.MAX_REVIEW_BYTES)
    data = json_object(raw) if raw.strip() else {}
    result = await run_action(svc, rs, who, cid, verb, data)
    await send_json(send, 200, result.case.public(svc.clock()))


async def run_action(
    svc: Services, rs: ReviewService, who: Reviewer, cid: str, verb: str, data: dict[str, Any]
) -> Change:
    """One reviewer action (shared by the API and the console); HttpError on refusal."""
    if verb == "claim":
        action: Any = rs.claim(who.name, parse.lease(data))
    elif verb == "release":
        parse.lease({})  # no fields
        action = Release(who.name)
    elif verb == "resolve":
        answer, label, note = parse.resolution(data)
        action = Resolve(who.name, answer, label, note)
    elif verb == "escalate":
        to, note = parse.escalation(data)
        if to not in rs.s.queues:
            raise HttpError(400, f"unknown queue {to}", param="queue", code="invalid_queue")
        action = rs.escalate(who.name, to, note)
    else:
        raise HttpError(404, f"no action {verb}", code="not_found")
    result = await rs.act(cid, action, who.queues)
    if result is None:
        raise HttpError(404, "no such case", code="case_not_found")
    if isinstance(result, Refusal):
        raise HttpError(result.status, result.message, code=result.code)
    return result
