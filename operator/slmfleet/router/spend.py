"""Spend, pure: the degrade ladder in force for the Budgets covering a request.

The ledger (``slmfleet.budget``) keeps the windows, in this process or shared by every
replica in Redis; this module turns its last known state into the request's steps
(``budget.ladder.decide``, merged over Budgets): halve reasoning, degrade, alert. It
never rejects: a stale view must not refuse traffic, so rejection is the ledger's own
atomic ``reserve`` before each tier call (``accounting``). ``verdict.reject`` only
reports that a reject step is reached, for headers and logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..api.routerconfig import BudgetConfig
from ..budget.ladder import LadderDecision, decide
from ..budget.ledger import WindowKey, WindowState, spent_by_window

SpendVerdict = LadderDecision
NO_STEP = LadderDecision()


def verdict(
    budgets: Sequence[BudgetConfig], states: Mapping[WindowKey, WindowState]
) -> SpendVerdict:
    """The steps in force for every Budget with spend windows (each Budget once)."""
    out = NO_STEP
    seen: set[str] = set()
    for b in budgets:
        if not b.spend or b.id in seen:
            continue
        seen.add(b.id)
        out = out.merge(decide(b.id, b.spend, b.ladder, spent_by_window(states, b.id)))
    return out
