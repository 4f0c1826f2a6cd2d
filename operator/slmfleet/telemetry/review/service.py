"""The review queue as the router and the review API use it.

The human tier calls ``answer(CaseInput, HumanAnswerPolicy)``: the case is committed to
the store *before* it returns (``file``), so an answer naming a case id always names a
case that survives a crash; if the store cannot take it, ``StoreUnavailable`` is raised
and the tier fails like any other (the caller is never told a case exists that does
not). Then it answers per the policy's mode (hold, async, wait).

A background loop (``start``) flags SLA breaches (each case once, whichever replica
sees it first), keeps the queue gauges, and delivers webhooks (at least once, retried
with backoff, up to ``webhook_max_attempts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from .. import metrics as m
from ..settings import HumanAnswerPolicy, QueueConfig, ReviewSettings
from ..store.base import CaseFilter
from .cases import Action, Case, Change, Claim, Escalate, Refusal

if TYPE_CHECKING:  # the store imports review.cases: no import cycle at run time
    from ..store import Store

log = logging.getLogger("slmfleet.telemetry.review")

DEFAULT_QUEUE = QueueConfig()
POLL_S = 0.5


@dataclass(frozen=True)
class CaseInput:
    """What the human tier knows when it files a case."""

    request_id: str
    policy: str
    queue: str
    conversation: Sequence[Mapping[str, Any]]
    """The request's messages ({role, content}); a completion's prompt as one user turn."""
    answers: Sequence[Mapping[str, Any]] = ()
    """Earlier tiers' answers: {tier, target, answer, confidence, reasons}."""
    escalations: Sequence[str] = ()
    """The decision's escalations (``tier:reason``)."""


@dataclass(frozen=True)
class HumanOutcome:
    """What the router sends back: ``status`` 200 with ``text`` as the completion's
    content, or 202 with ``body()`` and the ``headers()`` (Location)."""

    case: Case
    status: int
    text: str | None
    resolved: bool
    case_url: str

    def headers(self) -> list[tuple[bytes, bytes]]:
        h = [(b"x-slmfleet-review-case", self.case.id.encode())]
        if self.status == 202:
            h.append((b"location", self.case_url.encode()))
        return h

    def body(self) -> dict[str, Any]:
        """The 202 body: the case to poll (GET ``url`` with the client's API key)."""
        return {
            "id": self.case.id,
            "object": "review.case",
            "status": "pending",
            "queue": self.case.queue,
            "url": self.case_url,
        }


class ReviewService:
    def __init__(
        self,
        store: Store,
        settings: ReviewSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.store = store
        self.s = settings or ReviewSettings()
        self.clock = clock
        self._http = http
        self._waiters: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._webhook_keys: dict[str, bytes] = {}
        self._gauges_at = float("-inf")
        self._gauges_lock = threading.Lock()
        self.webhook_queues = frozenset(q for q, c in self.s.queues.items() if c.webhook_url)

    # -- filing (the human tier) ---------------------------------------------------------
    def queue_config(self, queue: str) -> QueueConfig:
        return self.s.queues.get(queue, DEFAULT_QUEUE)

    def build_case(self, inp: CaseInput) -> Case:
        now = self.clock()
        conversation = _bounded(inp.conversation, self.s.max_case_chars)
        answers = _bounded(inp.answers, self.s.max_case_chars)
        reasons = [e.split(":", 1)[1] for e in inp.escalations if ":" in e]
        return Case(
            id=uuid.uuid4().hex,
            queue=inp.queue,
            policy=inp.policy,
            request_id=inp.request_id,
            status="open",
            created_at=now,
            sla_due_at=now + self.queue_config(inp.queue).sla_seconds,
            reason=", ".join(dict.fromkeys(reasons))[:1024],
            escalations=tuple(inp.escalations)[:64],
            conversation=conversation,
            answers=answers,
        )

    async def file(self, inp: CaseInput) -> Case:
        """Commit the case; raises StoreUnavailable/StoreError when it cannot."""
        case = self.build_case(inp)
        try:
            await self.store.aio(self.store.file_case, case)
        except Exception:
            m.REVIEW_STORE_ERRORS.inc()
            raise
        m.REVIEW_FILED.labels(m.queue_label(case.queue, self.s.queues)).inc()
        return case

    def case_url(self, case_id: str) -> str:
        return f"{self.s.public_url}/v1/cases/{case_id}"

    async def answer(
        self, inp: CaseInput, policy: HumanAnswerPolicy, *, max_wait_s: float | None = None
    ) -> HumanOutcome:
        """File the case, then answer per ``policy.mode`` (see HumanAnswerPolicy); a
        wait lasts at most ``waitSeconds``, ``max_wait_s`` (the tier's time left) and
        the process's bound."""
        case = await self.file(inp)
        url = self.case_url(case.id)
        mode = policy.mode
        if mode == "wait":
            bound = min(policy.wait_seconds, self.s.max_wait_s)
            if max_wait_s is not None:
                bound = min(bound, max_wait_s)
            done = await self.wait_resolved(case.id, bound)
            if done is not None:
                return HumanOutcome(done, 200, done.answer or done.label or "", True, url)
            mode = policy.on_timeout
        if mode == "async":
            return HumanOutcome(case, 202, None, False, url)
        return HumanOutcome(case, 200, policy.message.replace("{case_id}", case.id), False, url)

    async def wait_resolved(self, case_id: str, timeout: float) -> Case | None:
        """The resolved case, or None when ``timeout`` passes first. A resolution made
        through this process wakes the waiter at once; one made elsewhere (another
        replica, ``slmfleet review``) is seen by polling the store."""
        if len(self._waiters) >= self.s.max_waiters:
            return None
        event = self._waiters.setdefault(case_id, asyncio.Event())
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(POLL_S, left))
                case = await self.store.aio(self.store.get_case, case_id)
                if case is not None and case.status == "resolved":
                    return case
        finally:
            self._waiters.pop(case_id, None)

    # -- reviewers -----------------------------------------------------------------------
    async def list_cases(self, f: CaseFilter) -> list[Case]:
        return await self.store.aio(self.store.list_cases, f, self.clock())

    async def get(self, case_id: str, queues: frozenset[str] | None) -> Case | None:
        case = await self.store.aio(self.store.get_case, case_id)
        if case is None or (queues is not None and case.queue not in queues):
            return None
        return case

    async def events(self, case_id: str) -> list[dict[str, Any]]:
        return await self.store.aio(self.store.case_events, case_id)

    def claim(self, reviewer: str, lease_s: float | None = None) -> Claim:
        lease = self.s.lease_s if lease_s is None else max(10.0, min(lease_s, 4 * 3600.0))
        return Claim(reviewer, lease)

    def escalate(self, reviewer: str, to_queue: str, note: str | None) -> Escalate:
        return Escalate(reviewer, to_queue, self.queue_config(to_queue).sla_seconds, note)

    async def act(
        self, case_id: str, action: Action, queues: frozenset[str] | None
    ) -> Change | Refusal | None:
        """Apply a reviewer's action (None: no such case in the reviewer's queues)."""
        now = self.clock()
        result = await self.store.aio(
            self.store.apply,
            case_id,
            action,
            now,
            queues=queues,
            webhook_queues=self.webhook_queues,
        )
        if isinstance(result, Change) and result.changed:
            case = result.case
            label = m.queue_label(case.queue, self.s.queues)
            if result.breached_now:
                m.REVIEW_SLA_BREACHES.labels(label).inc()
            if result.resolved_now:
                m.REVIEW_RESOLVED.labels(label).inc()
                m.REVIEW_RESOLVE_SECONDS.labels(label).observe(max(0.0, now - case.created_at))
                waiter = self._waiters.get(case.id)
                if waiter is not None:
                    waiter.set()
                if case.webhook_state == "pending":
                    self._kick.set()
        return result

    async def queue_stats(self, queues: frozenset[str] | None) -> list[dict[str, Any]]:
        now = self.clock()
        stats = await self.store.aio(self.store.queue_stats, now)
        names = set(self.s.queues) | {s.queue for s in stats}
        if queues is not None:
            names &= queues
        by = {s.queue: s for s in stats}
        out = []
        for q in sorted(names):
            s = by.get(q)
            out.append(
                {
                    "queue": q,
                    "open": s.open if s else 0,
                    "claimed": s.claimed if s else 0,
                    "oldest_age_s": round(now - s.oldest_created_at, 3)
                    if s and s.oldest_created_at
                    else 0.0,
                    "sla_seconds": self.queue_config(q).sla_seconds,
                    "breached": s.breached if s else 0,
                }
            )
        return out

    # -- background: SLA, gauges, webhooks -----------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="slmfleet-review-sweeper")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is down: try again next round
                log.warning("review sweep failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self.s.sweep_interval_s)
            self._kick.clear()

    async def sweep(self) -> None:
        """One round: breaches, gauges, due webhooks."""
        now = self.clock()
        for queue, n in (await self.store.aio(self.store.mark_breaches, now)).items():
            m.REVIEW_SLA_BREACHES.labels(m.queue_label(queue, self.s.queues)).inc(n)
        stats = {s.queue: s for s in await self.store.aio(self.store.queue_stats, now)}
        labels = set(self.s.queues) | {m.queue_label(q, self.s.queues) for q in stats}
        totals: dict[str, list[float]] = {q: [0, 0, 0.0] for q in labels}
        for q, s in stats.items():
            t = totals[m.queue_label(q, self.s.queues)]
            t[0] += s.open
            t[1] += s.claimed
            if s.oldest_created_at is not None:
                t[2] = max(t[2], now - s.oldest_created_at)
        with self._gauges_lock:
            # Sweeps can overlap (the loop's and an explicit one, possibly from another
            # thread's event loop): the gauges keep the newest view, never a stale one.
            if now >= self._gauges_at:
                self._gauges_at = now
                for q, (open_, claimed, oldest) in totals.items():
                    m.REVIEW_OPEN.labels(q, "open").set(open_)
                    m.REVIEW_OPEN.labels(q, "claimed").set(claimed)
                    m.REVIEW_OLDEST.labels(q).set(oldest)
        if self.webhook_queues:
            await self._deliver(now)

    async def _deliver(self, now: float) -> None:
        due = await self.store.aio(
            self.store.due_webhooks, now, lease_s=self.s.webhook_timeout_s * 2 + 5
        )
        for case in due:
            ok = await self._post(case)
            attempts = case.webhook_attempts + 1
            next_at = None
            if not ok:
                m.REVIEW_WEBHOOK_FAILURES.labels(m.queue_label(case.queue, self.s.queues)).inc()
                if attempts < self.s.webhook_max_attempts:
                    next_at = self.clock() + min(600.0, 2.0**attempts)
            await self.store.aio(self.store.webhook_done, case.id, ok=ok, next_at=next_at)

    async def _post(self, case: Case) -> bool:
        cfg = self.queue_config(case.queue)
        if not cfg.webhook_url:
            return True
        body = orjson.dumps({"event": "review.resolved", "case": case.public(self.clock())})
        headers = {"content-type": "application/json", "x-slmfleet-case": case.id}
        key = self._webhook_key(case.queue, cfg)
        if key:
            sig = hmac.new(key, body, hashlib.sha256).hexdigest()
            headers["x-slmfleet-signature"] = f"sha256={sig}"
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.s.webhook_timeout_s, follow_redirects=False)
        try:
            r = await self._http.post(cfg.webhook_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("webhook for case %s failed: %s", case.id, exc)
            return False
        if r.status_code >= 300:
            log.warning("webhook for case %s answered %d", case.id, r.status_code)
            return False
        return True

    def _webhook_key(self, queue: str, cfg: QueueConfig) -> bytes:
        if queue not in self._webhook_keys:
            path = cfg.webhook_secret_file
            self._webhook_keys[queue] = Path(path).read_bytes().strip() if path else b""
        return self._webhook_keys[queue]


def _bounded(items: Sequence[Mapping[str, Any]], limit: int) -> tuple[dict[str, Any], ...]:
    """Items as plain dicts, string values cut so the case stays under ``limit`` chars
    in total (the cut ones end with a marker): a case never grows without bound."""
    out: list[dict[str, Any]] = []
    left = limit
    for item in items[:256]:
        d: dict[str, Any] = {}
        for k, v in dict(item).items():
            if isinstance(v, str):
                if len(v) > left:
                    v = v[: max(0, left)] + " [...cut]"
                left -= len(v)
            elif v is not None and not isinstance(v, int | float | bool | list | tuple):
                v = str(v)[:1024]
            d[str(k)[:64]] = v
        out.append(d)
    return tuple(out)
