"""The Budget status loop of the operator: Budget.status from the shared spend ledger.

Thin glue: every few seconds one read of every Budget's windows from the ledger the
environment names (``budget.fromenv``: the same Redis the routers share), and one
status write per Budget whose state changed (``budget.statusloop``). The loop owns
``state``, ``step``, ``percent``, ``spend`` and the conditions Exceeded, Degraded and
LedgerAvailable; the fleet loop owns the rest of Budget.status. Without a shared ledger
the operator cannot see the spend (each router replica keeps its own): the status says
so (state Unknown, LedgerAvailable Unknown, reason NotConfigured).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..budget.fromenv import ledger_from_env, settings_from_env
from ..budget.ledger import Ledger
from ..budget.statusloop import StatusSync
from .runtime import Runtime, remember
from .supervisor import Beat

log = logging.getLogger("slmfleet.budget.status")


def shared_ledger() -> Ledger | None:
    """The shared ledger the environment names, or None (in-process routers)."""
    if settings_from_env() is None:
        return None
    return ledger_from_env()


async def budget_status_loop(rt: Runtime, beat: Beat) -> None:
    ledger = shared_ledger()

    def written(body: dict[str, Any]) -> None:
        remember(rt.store.budgets, body)  # the fleet loop merges into the newest version

    sync = StatusSync(rt.kube, ledger, on_written=written)
    log.info("budget status from %s", "the shared ledger" if ledger else "no shared ledger")
    try:
        while True:
            await sync.tick(list(rt.store.budgets.values()))
            beat()
            await asyncio.sleep(rt.config.budget_status_seconds)
    finally:
        if ledger is not None:
            await ledger.close()
