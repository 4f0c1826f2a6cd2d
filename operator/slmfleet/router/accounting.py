"""Accounting: may a request spend, and what did it spend. A narrow interface, so the
in-process windows here and a shared ledger (one for every router replica) are
interchangeable:

* ``verdict(budgets)`` - admit, degrade or reject, from every spend window of the
  Budgets that apply (spent, plus worst-case amounts held by calls in flight);
* ``reserve(budgets, worst_case_usd)`` before a tier call - hold its worst case;
* ``settle(hold, actual_usd)`` after it, whatever happened (answer, error, deadline,
  client gone) - charge what was really generated and release the hold.

``Usage`` records tokens and cost on the Decision and in the token/cost metrics.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..api.budget import SpendWindow
from ..api.routerconfig import BudgetConfig
from . import metrics as m
from .decision import Decision
from .spend import RollingWindow, SpendLedger, SpendVerdict, verdict


@dataclass(frozen=True, slots=True)
class Hold:
    """A worst-case amount held against some Budgets until it is settled."""

    id: int
    budgets: tuple[str, ...]
    amount_usd: float


class Accounting(Protocol):
    def verdict(self, budgets: Sequence[BudgetConfig]) -> SpendVerdict: ...

    def reserve(self, budgets: Sequence[BudgetConfig], worst_case_usd: float) -> Hold: ...

    def settle(self, hold: Hold, actual_usd: float) -> None: ...


@dataclass
class InProcessAccounting:
    """Rolling windows in this process (see spend.py): each router replica enforces the
    limits on its own traffic, and starts empty after a restart."""

    ledger: SpendLedger = field(default_factory=SpendLedger)
    wallclock: Callable[[], float] = time.time
    _budgets: dict[str, BudgetConfig] = field(default_factory=dict)
    _held: dict[str, float] = field(default_factory=dict)
    _holds: dict[int, Hold] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=itertools.count)

    def verdict(self, budgets: Sequence[BudgetConfig]) -> SpendVerdict:
        if not any(b.spend for b in budgets):
            return SpendVerdict()
        return verdict(
            ((b.id, w, self.ledger.window(b.id, w)) for b in budgets for w in b.spend),
            self.wallclock(),
            self._held,
        )

    def reserve(self, budgets: Sequence[BudgetConfig], worst_case_usd: float) -> Hold:
        ids = tuple(dict.fromkeys(b.id for b in budgets if b.spend))
        hold = Hold(next(self._ids), ids, max(0.0, worst_case_usd) if ids else 0.0)
        for b in budgets:
            self._budgets[b.id] = b
        if hold.amount_usd:
            self._holds[hold.id] = hold
            for bid in ids:
                self._held[bid] = self._held.get(bid, 0.0) + hold.amount_usd
                m.bound(m.SPEND_RESERVED, bid).set(self._held[bid])
        return hold

    def settle(self, hold: Hold, actual_usd: float) -> None:
        """Release the hold and charge ``actual_usd`` once to each of its Budgets."""
        if self._holds.pop(hold.id, None) is not None:
            for bid in hold.budgets:
                left = self._held.get(bid, 0.0) - hold.amount_usd
                if left <= 1e-15:
                    self._held.pop(bid, None)
                    left = 0.0
                else:
                    self._held[bid] = left
                m.bound(m.SPEND_RESERVED, bid).set(left)
        if actual_usd <= 0:
            return
        now = self.wallclock()
        for bid in hold.budgets:
            b = self._budgets.get(bid)
            if b is None:
                continue
            for w in b.spend:
                win = self.ledger.window(bid, w)
                win.add(now, actual_usd)
                total = win.total(now)
                m.bound(m.SPEND, bid, w.window).set(total)
                m.bound(m.BUDGET_EXCEEDED, bid, w.window, w.action).set(
                    1 if total >= w.limit_usd else 0
                )

    # -- reading (metrics, tests) -------------------------------------------------------
    def window(self, budget_id: str, spec: SpendWindow) -> RollingWindow:
        return self.ledger.window(budget_id, spec)

    def held(self, budget_id: str) -> float:
        return self._held.get(budget_id, 0.0)


def record_usage(
    d: Decision, policy: str, target: str, pt: int, ct: int, rt: int, cost: float
) -> None:
    """Tokens and cost of one tier call: on the Decision and in the metrics."""
    d.prompt_tokens += pt
    d.completion_tokens += ct
    d.reasoning_tokens += rt
    d.cost_usd += cost
    m.bound(m.TOKENS, policy, target, "input").inc(pt)
    m.bound(m.TOKENS, policy, target, "output").inc(ct)
    if rt:
        m.bound(m.TOKENS, policy, target, "reasoning").inc(rt)
    if cost:
        m.bound(m.COST, policy, target).inc(cost)
