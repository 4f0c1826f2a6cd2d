"""Replay: what a routing configuration would have done with logged traffic.

Each held-out outcome with its routing text is scored by a classifier and decided by
the router's own pure ``choose_route`` at a threshold; the result says where requests
would have gone, how many escalate, how many in-domain requests would have been routed
right, how many out-of-domain ones escalated, and what it would have cost (observed
mean cost of each target in the log). Rules are not replayed: they decide the same way
before and after a revision, so rule-routed (and direct) records are left out of both
sides.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..router.routing import Candidate, choose_route
from .bounds import wilson
from .outcomes import OutcomeRecord


@dataclass
class ReplayResult:
    name: str
    threshold: float
    requests: int
    in_domain: int
    out_of_domain: int
    routed: dict[str, int] = field(default_factory=dict)
    """Requests per specialist id (accepted by routing)."""
    escalated: int = 0
    in_scope_accuracy: float = 0.0
    in_scope_interval: tuple[float, float] = (0.0, 1.0)
    """Wilson 95%."""
    ood_recall: float | None = None
    ood_recall_interval: tuple[float, float] | None = None
    misrouted: int = 0
    """In-domain requests accepted by routing but sent to the wrong specialist."""
    cost_per_thousand_usd: float | None = None
    """Routed requests at their target's observed mean cost, escalations at the
    escalation cost; None when a cost is unknown."""

    @property
    def escalation_rate(self) -> float:
        return self.escalated / self.requests if self.requests else 0.0

    def summary(self) -> dict[str, object]:
        return {
            "threshold": round(self.threshold, 4),
            "requests": self.requests,
            "inDomain": self.in_domain,
            "outOfDomain": self.out_of_domain,
            "escalationRate": round(self.escalation_rate, 4),
            "inScopeAccuracy": round(self.in_scope_accuracy, 4),
            "inScopeInterval": [round(v, 4) for v in self.in_scope_interval],
            "outOfDomainRecall": None if self.ood_recall is None else round(self.ood_recall, 4),
            "outOfDomainRecallInterval": None
            if self.ood_recall_interval is None
            else [round(v, 4) for v in self.ood_recall_interval],
            "misrouted": self.misrouted,
            "routed": dict(sorted(self.routed.items())),
            "costPerThousandUsd": None
            if self.cost_per_thousand_usd is None
            else round(self.cost_per_thousand_usd, 6),
        }


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


def replayable(records: Sequence[OutcomeRecord]) -> list[OutcomeRecord]:
    """Records replay can score: a routing text, a known route, not decided by a rule."""
    return [r for r in records if r.routing_text and r.known_route is not None and r.classified]


def observed_costs(records: Sequence[OutcomeRecord]) -> dict[str, float]:
    """Mean cost per request of each target (specialist id, external:..., human:...)."""
    sums: dict[str, list[float]] = {}
    for r in records:
        if r.target and r.cost_usd is not None:
            sums.setdefault(r.target, []).append(r.cost_usd)
    return {t: float(np.mean(v)) for t, v in sums.items()}


def replay(
    name: str,
    records: Sequence[OutcomeRecord],
    scores: Sequence[Mapping[str, float]],
    threshold: float,
    *,
    specialists: Sequence[str],
    costs: Mapping[str, float] | None = None,
    escalation_cost: float | None = None,
) -> ReplayResult:
    """Decide every record from its classifier ``scores`` (same order) at ``threshold``."""
    if len(records) != len(scores):
        raise ValueError("one score mapping per record")
    cands = {sid: Candidate(True, 0.0) for sid in specialists}
    routed: Counter[str] = Counter()
    esc = right = misrouted = ood = ood_esc = 0
    total_cost: float | None = 0.0
    for r, sc in zip(records, scores, strict=True):
        d = choose_route(
            r.routing_text or "", rules=(), scores=sc, candidates=cands, min_confidence=threshold
        )
        if d.specialist is None:
            esc += 1
            c = escalation_cost
        else:
            routed[d.specialist] += 1
            c = (costs or {}).get(d.specialist)
        total_cost = None if total_cost is None or c is None else total_cost + c
        if r.out_of_domain:
            ood += 1
            ood_esc += d.specialist is None
        elif d.specialist is not None:
            if d.specialist == r.known_route:
                right += 1
            else:
                misrouted += 1
    n = len(records)
    ind = n - ood
    res = ReplayResult(name, threshold, n, ind, ood, dict(routed), esc, misrouted=misrouted)
    if ind:
        res.in_scope_accuracy = right / ind
        res.in_scope_interval = wilson(right, ind)
    if ood:
        res.ood_recall = ood_esc / ood
        res.ood_recall_interval = wilson(ood_esc, ood)
    if total_cost is not None and n:
        res.cost_per_thousand_usd = 1000 * total_cost / n
    return res
