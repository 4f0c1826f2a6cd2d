"""The Budget status loop: shared ledger -> Budget.status, every few seconds.

Thin glue around ``status.budget_status``: one ledger read for every Budget's windows
per tick, one status patch per Budget whose owned fields changed, none otherwise. The
operator's supervisor runs ``budget_status_loop``; ``sync_budget_statuses`` is one tick.
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
from .ledger import BudgetLimits, Ledger, LedgerRead
from .status import OWNED_CONDITIONS, budget_status, comparable

log = logging.getLogger("slmfleet.budget.status")

#: Default period: a change shows within this plus one write (the target is 10 s).
INTERVAL_S = 2.0


class StatusWriter(Protocol):
    """What the loop needs of a Kubernetes client (``clients.kube.KubeClient`` fits)."""

    async def patch_status(
        self, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]: ...


def _merge_conditions(
    current: Iterable[Mapping[str, Any]], owned: list[dict[str, Any]], stamp: str
) -> list[dict[str, Any]]:
    """Others' conditions untouched; ours keep their lastTransitionTime unless flipped."""
    old = {c.get("type"): c for c in current}
    merged = [dict(c) for c in current if c.get("type") not in OWNED_CONDITIONS]
    for c in owned:
        before = old.get(c["type"])
        same = before is not None and before.get("status") == c["status"]
        when = before.get("lastTransitionTime") if same and before else None
        merged.append({**c, "lastTransitionTime": when or stamp})
    return merged


class StatusSync:
    """One tick at a time; remembers what it wrote so a store that lags behind the API
    server (a watch cache) does not cause a second, identical write."""

    def __init__(self, kube: StatusWriter, ledger: Ledger) -> None:
        self.kube = kube
        self.ledger = ledger
        self.writes = 0
        self._wrote: dict[str, tuple[str, dict[str, Any]]] = {}

    async def tick(self, bodies: Iterable[Mapping[str, Any]], now: float | None = None) -> int:
        parsed: list[tuple[Mapping[str, Any], str, BudgetSpec]] = []
        for body in bodies:
            meta = body.get("metadata") or {}
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
        read: LedgerRead = await self.ledger.read(limits)
        now = time.time() if now is None else now
        written = 0
        for body, bid, spec in parsed:
            meta = body["metadata"]
            desired = budget_status(bid, spec, read, now, meta.get("generation"))
            current = body.get("status") or {}
            want = comparable(desired)
            if comparable(current) == want:
                continue
            uid, rv = meta.get("uid", bid), meta.get("resourceVersion", "")
            if self._wrote.get(uid) == (rv, want):
                continue  # written already; the caller's copy predates our write
            patch = {k: desired[k] for k in ("state", "step", "percent", "spend")}
            patch["conditions"] = _merge_conditions(
                current.get("conditions") or (), desired["conditions"], now_rfc3339()
            )
            try:
                await self.kube.patch_status("Budget", meta["namespace"], meta["name"], patch)
            except Exception as exc:  # one Budget's failure never stops the others
                if getattr(exc, "status", None) == 404:
                    continue
                log.warning("budget %s: status not written: %s", bid, exc)
                continue
            self._wrote[uid] = (rv, want)
            written += 1
        self.writes += written
        return written


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
