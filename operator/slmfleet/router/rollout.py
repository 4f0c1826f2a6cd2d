"""Canary and shadow rollouts, pure: who gets the candidate, how an arm did, when a
canary is rolled back, whether two answers agree.

* ``picked`` - a request goes to the candidate when a hash of its request id (salted
  with the rollout) falls under ``percent``: deterministic, so a retried request with
  the same ``x-request-id`` lands on the same arm, and uniform over ids.
* ``arm_outcome`` - how the routed tier did, from the request's escalations: ``error``
  (it failed: error, timeout, open circuit, unready, codec), ``escalated`` (its answer
  was not accepted), ``ok``, or None when it never ran for reasons that are not the
  model's (routing confidence below the tier's minimum, budgets) or the request ended
  in an error before reaching it.
* ``rollback_decision`` - a one-sided two-proportion test with the Agresti-Caffo
  adjustment (one bad and one good outcome added to each arm, which keeps the test
  honest at rates near 0 or 1): roll back when the candidate's bad-outcome rate exceeds
  the incumbent's by more than ``margin`` at ``confidence``, once each arm has
  ``min_samples`` requests.
* ``agreement`` - two answers agree when their labels match (the first word, or a JSON
  answer's ``label``: what per-label thresholds read) or their normalised texts do.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from .acceptance import label_of

#: Escalation reasons that mean the tier itself failed.
ERROR_REASONS = frozenset({"error", "timeout", "circuit_open", "unready", "codec"})
#: Reasons a tier is skipped before it runs: not the model's doing.
SKIP_REASONS = frozenset(
    {"low_routing_confidence", "budget_degrade", "budget_exceeded", "out_of_domain"}
)


def picked(request_id: str, percent: float, salt: str) -> bool:
    """Whether this request belongs to the ``percent`` share (see the module docstring)."""
    if percent <= 0:
        return False
    if percent >= 100:
        return True
    h = hashlib.blake2b(f"{salt}\x00{request_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 * 100 < percent


def arm_outcome(escalations: Sequence[str], tier: str, *, failed: bool = False) -> str | None:
    """ok | escalated | error for the tier named ``tier``, or None when it did not run.

    ``failed``: the request ended in an error. Every way the tier itself ends a request
    (an upstream error, a refused reservation) records its escalation first, so a failed
    request without one never reached the tier: not counted for the arm (a Budget of the
    policy refusing an earlier tier is not the candidate's error)."""
    prefix = tier + ":"
    reasons = [e[len(prefix) :] for e in escalations if e.startswith(prefix)]
    if any(r in ERROR_REASONS for r in reasons):
        return "error"
    if any(r in SKIP_REASONS for r in reasons):
        return None
    if reasons:
        return "escalated"
    return None if failed else "ok"


@dataclass(frozen=True, slots=True)
class ArmStats:
    n: int = 0
    """Requests the arm's tier ran for."""
    bad: int = 0
    """Of them: failed or escalated."""

    def add(self, outcome: str) -> ArmStats:
        return ArmStats(self.n + 1, self.bad + (outcome != "ok"))

    @property
    def rate(self) -> float:
        return self.bad / self.n if self.n else 0.0


@dataclass(frozen=True, slots=True)
class RollbackVerdict:
    rollback: bool
    reason: str
    """collecting | within_margin | worse (rolled back) | disabled."""
    z: float = 0.0
    """The test statistic (positive: the candidate is worse than incumbent + margin)."""
    difference: float = 0.0
    """Candidate rate minus incumbent rate (adjusted)."""


def rollback_decision(
    incumbent: ArmStats,
    candidate: ArmStats,
    *,
    margin: float,
    min_samples: int,
    confidence: float,
    enabled: bool = True,
) -> RollbackVerdict:
    """Roll the canary back? (see the module docstring)"""
    if not enabled:
        return RollbackVerdict(False, "disabled")
    if incumbent.n < min_samples or candidate.n < min_samples:
        return RollbackVerdict(False, "collecting")
    nc, ni = candidate.n + 2, incumbent.n + 2
    pc, pi = (candidate.bad + 1) / nc, (incumbent.bad + 1) / ni
    se = math.sqrt(pc * (1 - pc) / nc + pi * (1 - pi) / ni)
    diff = pc - pi
    z = (diff - margin) / se
    worse = z > NormalDist().inv_cdf(confidence)
    return RollbackVerdict(worse, "worse" if worse else "within_margin", round(z, 4), diff)


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def agreement(a: str, b: str) -> bool:
    """Whether two answers agree (same label, or the same text up to case and spaces)."""
    if _norm(a) == _norm(b):
        return True
    la, lb = label_of(a), label_of(b)
    return bool(la) and la == lb
