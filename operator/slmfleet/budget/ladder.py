"""The degrade ladder, pure: how full a Budget's windows are -> the steps in force.

A Budget's fraction is its fullest window's settled spend over its limit (USD or
tokens, whichever is fuller). Every ladder step at or below that fraction applies, and
a window at its limit adds its own ``action``; steps accumulate (past 85% a request is
degraded *and* has its reasoning halved). Rejection itself is enforced atomically by
the ledger's reserve (``hard_caps``): the decision here only reports it, for headers,
logs, metrics and Budget.status. Reservations do not move the ladder (in-flight
worst cases would degrade traffic that will cost far less); they do count against
hard caps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..api.budget import LADDER_ORDER
from .amounts import Amount
from .specs import StepSpec, WindowSpec


@dataclass(frozen=True, slots=True)
class LadderDecision:
    halve_reasoning: bool = False
    degrade: bool = False
    reject: bool = False
    alert: bool = False
    step: str | None = None
    """The most severe action in force (alert < halveReasoning < degrade < reject)."""
    percent: int = 0
    """The fullest window's settled spend, in percent of its limit."""
    exceeded: tuple[str, ...] = ()
    """``budget-id/window`` of every window at or over its limit."""
    steps: tuple[str, ...] = field(default=())
    """``budget-id:action@percent`` of every step in force, for headers and logs."""

    def merge(self, other: LadderDecision) -> LadderDecision:
        """Several Budgets cover one request: the union of their steps."""
        step = max(
            (s for s in (self.step, other.step) if s is not None),
            key=LADDER_ORDER.index,
            default=None,
        )
        return LadderDecision(
            self.halve_reasoning or other.halve_reasoning,
            self.degrade or other.degrade,
            self.reject or other.reject,
            self.alert or other.alert,
            step,
            max(self.percent, other.percent),
            tuple(dict.fromkeys((*self.exceeded, *other.exceeded))),
            tuple(dict.fromkeys((*self.steps, *other.steps))),
        )


def fraction(spec: WindowSpec, spent: Amount) -> float:
    """Settled spend over the limit, the fuller of USD and tokens (0 without limits)."""
    parts = []
    if spec.limit_usd:
        parts.append(spent.usd / spec.limit_usd)
    if spec.limit_tokens:
        parts.append(spent.tokens / spec.limit_tokens)
    return max(parts, default=0.0)


def percent_of(value: float) -> int:
    """Whole percent, rounded down but never below what was spent (1e-9 slack for floats)."""
    return int(value * 100 + 1e-9)


def decide(
    budget_id: str,
    windows: Iterable[WindowSpec],
    ladder: Iterable[StepSpec],
    spent: Mapping[str, Amount],
) -> LadderDecision:
    """The steps in force for one Budget, from the settled spend of each window (by
    ``window``; a window missing from ``spent`` has spent nothing)."""
    windows = list(windows)
    fullest = 0.0
    exceeded: list[str] = []
    actions: list[tuple[str, str]] = []
    for w in windows:
        f = fraction(w, spent.get(w.window, Amount()))
        fullest = max(fullest, f)
        if f >= 1.0:
            exceeded.append(f"{budget_id}/{w.window}")
            actions.append((w.action, f"{budget_id}/{w.window}:{w.action}@100"))
    pct = percent_of(fullest)
    for s in ladder:
        if pct >= s.at_percent:
            actions.append((s.action, f"{budget_id}:{s.action}@{s.at_percent}"))
    kinds = {a for a, _ in actions}
    step = max(kinds, key=LADDER_ORDER.index, default=None)
    return LadderDecision(
        halve_reasoning="halveReasoning" in kinds,
        degrade="degrade" in kinds,
        reject="reject" in kinds,
        alert=bool(kinds),
        step=step,
        percent=pct,
        exceeded=tuple(exceeded),
        steps=tuple(dict.fromkeys(label for _, label in actions)),
    )


def hard_cap(spec: WindowSpec, ladder: Iterable[StepSpec]) -> float | None:
    """Fraction of the window's limit that reservations may never pass: the ladder's
    reject step, or 1.0 for a window whose own action is reject; None: no hard cap."""
    caps = [s.at_percent / 100 for s in ladder if s.action == "reject"]
    if spec.action == "reject":
        caps.append(1.0)
    return min(caps, default=None)


def halved_reasoning_cap(reasoning_cap: int | None, output_cap: int | None) -> int | None:
    """The reasoning cap under halveReasoning: half the cap in force; without one, half
    the output cap (a model with no cap at all cannot be halved: None)."""
    if reasoning_cap is not None:
        return reasoning_cap // 2
    if output_cap is not None:
        return output_cap // 2
    return None
