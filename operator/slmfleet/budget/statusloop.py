"""The Budget status loop: shared ledger -> Budget.status, every few seconds.

Thin glue around ``status.budget_status``: one ledger read for every Budget's windows
per tick, one status patch per Budget whose owned fields changed, none otherwise. The
operator's supervisor runs it (``controller/budgets.py``); ``StatusSync.tick`` is one tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from pydantic import ValidationError

from ..api.base import now_rfc3339
from ..api.budget import BudgetSpec
from ..render.conditions import merge_conditions
from .ledger import BudgetLimits, Ledger, LedgerRead
from .status import OWNED_FIELDS, budget_status, comparable

log = logging.getLogger("slmfleet.budget.status")

#: Default period: a change shows within this plus one write (the target is 10 s).
INTERVAL_S = 2.0


class StatusWriter(Protocol):
    """What the loop needs of a Kubernetes client (``clients.kube.KubeClient`` fits)."""

    async def patch_status(
        self,
        kind: str,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]: ...

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None: ...


#: What the status says while no shared ledger is configured (each router replica then
#: counts its own spend, out of the operator's sight).
NOT_SHARED = LedgerRead({}, available=False, error="", configured=False)


class StatusSync:
    """One tick at a time; remembers what it wrote so a store that lags behind the API
    server (a watch cache) does not cause a second, identical write. Writes carry the
    resourceVersion they were merged into: a conflict (another writer's conditions
    landed meanwhile) is read again and merged again, never overwritten."""

    def __init__(
        self,
        kube: StatusWriter,
        ledger: Ledger | None,
        *,
        on_written: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.kube = kube
        self.ledger = ledger
        self.on_written = on_written
        self.writes = 0
        self._wrote: dict[str, tuple[str, dict[str, Any]]] = {}

    async def tick(self, bodies: Iterable[Mapping[str, Any]], now: float | None = None) -> int:
        parsed: list[tuple[Mapping[str, Any], str, BudgetSpec]] = []
        for body in bodies:
            meta = body.get("metadata") or {}
            if meta.get("deletionTimestamp"):
                continue
            bid = f"{meta.get('namespace')}/{meta.get('name')}"
            try:
                spec = BudgetSpec.model_validate(body.get("spec") or {})
            except ValidationError as exc:
                log.warning("budget %s: spec not understood, status left alone: %s", bid, exc)
                continue
            parsed.append((body, bid, spec))
        if not parsed:
            return 0
        limits = [BudgetLimits.from_spec(bid, spec) for _, bid, spec in parsed]
        read = NOT_SHARED if self.ledger is None else await self.ledger.read(limits)
        now = time.time() if now is None else now
        written = 0
        for body, bid, spec in parsed:
            try:
                written += await self._sync_one(body, bid, spec, read, now)
            except Exception as exc:  # one Budget's failure never stops the others
                log.warning("budget %s: status not written: %s", bid, exc)
        self.writes += written
        return written

    async def _sync_one(
        self, body: Mapping[str, Any], bid: str, spec: BudgetSpec, read: LedgerRead, now: float
    ) -> int:
        meta = body["metadata"]
        desired = budget_status(bid, spec, read, now, meta.get("generation"))
        want = comparable(desired)
        for attempt in (1, 2):
            current = body.get("status") or {}
            if comparable(current) == want:
                return 0
            uid, rv = meta.get("uid", bid), meta.get("resourceVersion", "")
            if attempt == 1 and self._wrote.get(uid) == (rv, want):
                return 0  # written already; the caller's copy predates our write
            patch = {k: desired[k] for k in OWNED_FIELDS}
            patch["conditions"] = merge_conditions(
                current.get("conditions") or (), desired["conditions"], now_rfc3339()
            )
            try:
                out = await self.kube.patch_status(
                    "Budget", meta["namespace"], meta["name"], patch, resource_version=rv or None
                )
            except Exception as exc:
                status = getattr(exc, "status", None)
                if status == 404:
                    return 0
                if status != 409 or attempt == 2:
                    raise
                fresh = await self.kube.get("Budget", meta["namespace"], meta["name"])
                if fresh is None:
                    return 0
                body, meta = fresh, fresh["metadata"]
                continue
            self._wrote[uid] = ((out.get("metadata") or {}).get("resourceVersion", rv), want)
            if self.on_written is not None:
                self.on_written(out)
            return 1
        return 0


BudgetSource = Callable[[], Iterable[Mapping[str, Any]] | Awaitable[Iterable[Mapping[str, Any]]]]


async def budget_status_loop(
    kube: StatusWriter,
    budgets: BudgetSource,
    ledger: Ledger,
    *,
    interval_s: float = INTERVAL_S,
    stop: asyncio.Event | None = None,
    sync: StatusSync | None = None,
) -> None:
    """Every ``interval_s``: read the shared state of ``budgets()`` (the Budget objects
    as the API server has them: metadata, spec, status; a plain or an async callable,
    e.g. the operator's store or a list call) and write what changed. Runs until
    ``stop`` is set or the task is cancelled; a failed tick is logged and retried."""
    sync = sync or StatusSync(kube, ledger)
    stop = stop or asyncio.Event()
    while not stop.is_set():
        try:
            items = budgets()
            if inspect.isawaitable(items):
                items = await items
            await sync.tick(list(items))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("budget status tick failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
