"""Thresholds from stated risk, with a guarantee: the target holds with a stated confidence.

**Per-label answer thresholds.** For a label with maximum error rate ``a`` among
auto-accepted answers, the threshold ``t`` accepts answers with confidence >= t. Each
candidate on a fixed grid (1.0 down to 0.0 in steps of ``GRID``) is a hypothesis test
of "error rate among accepted > a": rejected when the one-sided Clopper-Pearson upper
bound on the observed errors is <= ``a``. The grid is walked from strict to lenient and
a walk stops at the first threshold that fails (fixed-sequence testing, as in
Learn-then-Test), so no point is cherry-picked among many tried. Where few answers are
accepted no bound is tight, so a single walk from 1.0 would stop at once: J walks
start where n_min, 2 n_min, 4 n_min, ... answers are accepted (n_min: the fewest with
which zero errors could pass), each at level 1 - (1 - confidence) / J. The starts
depend on confidences only, never on outcomes, and Bonferroni over the walks keeps the
chance that the proposal misses its target at most 1 - confidence. The proposal is the
lowest threshold any walk passed: the most answers accepted within the risk.

**Out-of-domain recall** (``spec.routing.semantic.minConfidence``): a request escalates
when its routing confidence is below ``t``; the lowest grid threshold whose
Clopper-Pearson *lower* bound on the escalated fraction of out-of-domain outcomes is >=
the target, walked from strict (high ``t``, high recall) down, stopping at the first
failure.

Each recommendation reports the escalation rate it implies (of the label's and of the
tier's traffic), the expected cost of those escalations, and, when it refuses, why and
about how many more labelled outcomes it needs, assuming the rates seen so far hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..api.policy import RouterPolicySpec
from .bounds import cp_lower, cp_upper, samples_for_lower, samples_for_upper
from .calibrator import CalibratorConfig, apply
from .outcomes import OUT_OF_DOMAIN, OutcomeRecord
from .risk import RiskSpec

GRID = 0.005
ROUTING = "routing"
ROUTING_PATH = "spec.routing.semantic.minConfidence"


def grid() -> np.ndarray:
    """The fixed threshold grid, strict to lenient."""
    steps = round(1.0 / GRID)
    return np.round(np.arange(steps, -1, -1) * GRID, 4)


def min_samples_upper(target: float, level: float) -> int:
    """Fewest accepted answers with which zero errors can show an error rate <= target."""
    return math.ceil(math.log(1.0 - level) / math.log(1.0 - target))


def min_samples_lower(target: float, level: float) -> int:
    """Fewest outcomes with which all escalated can show a recall >= target."""
    return math.ceil(math.log(1.0 - level) / math.log(target))


def _mean(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else 0.0


def _starts(n: int, max_error: float, level: float) -> tuple[int, float, list[int]]:
    """(fewest accepted answers worth testing, the level of each sequence, the accepted
    counts at which the sequences start).

    A walk from the strictest threshold would stop at once: there few answers are
    accepted and no bound is tight. So J walks start where ``n_min``, 2 ``n_min``,
    4 ``n_min``, ... answers are accepted (counts of confidences only, not of outcomes,
    so the choice of starts cannot favour a lucky sample), each tested at level
    1 - (1 - level) / J (Bonferroni over the walks)."""
    n_min = min_samples_upper(max_error, level)
    j = max(1, math.floor(math.log2(max(n, 1) / n_min)) + 1) if n >= n_min else 1
    per_level = 1.0 - (1.0 - level) / j
    n_min = min_samples_upper(max_error, per_level)
    return n_min, per_level, [n_min * 2**i for i in range(j)]


@dataclass
class CurvePoint:
    threshold: float
    n: int
    """Accepted answers (label thresholds) or out-of-domain outcomes (routing)."""
    point: float
    """Observed error rate among accepted, or observed out-of-domain recall."""
    bound: float
    """Its Clopper-Pearson upper (errors) or lower (recall) bound."""
    escalation_rate: float
    """Fraction of the group's traffic below the threshold."""


@dataclass
class Recommendation:
    kind: str
    """label_threshold or routing_threshold."""
    path: str
    """The spec field the proposal sets."""
    target: str
    """The risk, in words."""
    confidence: float
    samples: int
    """Outcomes of this group with a known verdict."""
    tier: str | None = None
    label: str | None = None
    current: float | None = None
    proposed: float | None = None
    point: float | None = None
    bound: float | None = None
    accepted: int = 0
    escalation_rate: float | None = None
    """Of the group's traffic (the label's answers; in-domain requests for routing)."""
    escalation_rate_tier: float | None = None
    """Of the tier's (or the policy's) traffic."""
    cost_per_thousand_usd: float | None = None
    """Escalation cost per 1,000 requests of the tier at the proposed threshold."""
    current_point: float | None = None
    current_bound: float | None = None
    calibrated: float | None = None
    """The proposed threshold on the calibrated scale, when a calibrator is given."""
    raw: float | None = None
    """Where the proposed threshold (on the proposed calibration's scale) lands on the
    raw confidence scale (``learn.pipeline.learn``)."""
    level: float | None = None
    """Level of each test behind ``bound`` (label thresholds: below ``confidence`` when
    several walks share it)."""
    refused: str | None = None
    more_needed: int | None = None
    in_scope_accuracy: float | None = None
    """Routing only: routed right and not escalated, among in-domain outcomes."""
    curve: list[CurvePoint] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.refused is None and self.proposed is not None


def _label_threshold(
    tier: str,
    label: str,
    conf: np.ndarray,
    right: np.ndarray,
    max_error: float,
    level: float,
    tier_total: int,
    cost: float | None,
    current: float | None,
) -> Recommendation:
    rec = Recommendation(
        kind="label_threshold",
        path=f"spec.cascade[{tier}].accept.labelThresholds.{label}",
        target=f"error rate among accepted '{label}' answers <= {max_error:.1%}",
        confidence=level,
        samples=len(conf),
        tier=tier,
        label=label,
        current=current,
    )
    n_min, per_level, starts = _starts(len(conf), max_error, level)
    for t in grid():
        acc = conf >= t
        n = int(acc.sum())
        k = int((acc & ~right).sum())
        rec.curve.append(
            CurvePoint(float(t), n, k / n if n else 0.0, cp_upper(k, n, per_level), _mean(~acc))
        )
    passed: CurvePoint | None = None
    for start in starts:  # one fixed sequence per start, each at level 1 - delta / J
        for pt in rec.curve:
            if pt.n < start:
                continue
            if pt.bound > max_error:
                break
            if passed is None or pt.threshold < passed.threshold:
                passed = pt
            if pt.n == len(conf):  # every answer accepted: lower thresholds change nothing
                break
    rec.level = per_level
    if current is not None:
        acc = conf >= current
        n, k = int(acc.sum()), int((acc & ~right).sum())
        rec.current_point = k / n if n else None
        rec.current_bound = cp_upper(k, n, per_level)
    if passed is None:
        _refuse_label(rec, conf, right, max_error, level, n_min)
        return rec
    rec.proposed, rec.point, rec.bound, rec.accepted = (
        passed.threshold,
        passed.point,
        passed.bound,
        passed.n,
    )
    escalated = len(conf) - passed.n
    rec.escalation_rate = escalated / len(conf)
    rec.escalation_rate_tier = escalated / tier_total if tier_total else None
    if cost is not None and tier_total:
        rec.cost_per_thousand_usd = 1000 * escalated / tier_total * cost
    return rec


def _refuse_label(
    rec: Recommendation,
    conf: np.ndarray,
    right: np.ndarray,
    max_error: float,
    level: float,
    n_min: int,
) -> None:
    if len(conf) < n_min:
        rec.refused = (
            f"{len(conf)} labelled outcomes; even with no errors at least {n_min} accepted "
            f"answers are needed to show <= {max_error:.1%} at {level:.0%} confidence"
        )
        rec.more_needed = n_min - len(conf)
        return
    # Where the observed rate is under the target, how much data would make it show?
    best: CurvePoint | None = None
    for pt in rec.curve:
        if pt.n >= n_min and pt.point < max_error and (best is None or pt.n > best.n):
            best = pt
    if best is None:
        rec.refused = (
            f"the observed error rate is >= {max_error:.1%} at every threshold; more "
            "outcomes will not change that: improve the specialist or accept more risk"
        )
        return
    need = samples_for_upper(best.point, max_error, level)
    share = best.n / len(conf)
    rec.more_needed = max(1, math.ceil((need - best.n) / share))
    rec.refused = (
        f"no threshold shows <= {max_error:.1%} at {level:.0%} confidence yet; at "
        f"{best.threshold:.3f} the observed rate is {best.point:.1%} on {best.n} accepted "
        f"answers: about {rec.more_needed} more labelled outcomes of this label are needed"
    )


def _cost(risk: RiskSpec, key: str, records: Sequence[OutcomeRecord], next_tier: str | None):
    if key in risk.escalation_cost_usd:
        return risk.escalation_cost_usd[key]
    if next_tier is None:
        return None
    costs = [r.cost_usd for r in records if r.tier == next_tier and r.cost_usd is not None]
    return float(np.mean(costs)) if costs else None


def _next_tier(spec: RouterPolicySpec | None, tier: str | None) -> str | None:
    if spec is None:
        return None
    names = [t.name for t in spec.cascade]
    if tier is None:  # routing: the out-of-domain fallback, else the tier after the routed one
        if spec.fallback and spec.fallback.on_unknown_domain:
            return spec.fallback.on_unknown_domain
        routed = next((i for i, t in enumerate(spec.cascade) if t.routed), None)
        return names[routed + 1] if routed is not None and routed + 1 < len(names) else None
    i = names.index(tier) if tier in names else None
    return names[i + 1] if i is not None and i + 1 < len(names) else None


def _current_label_threshold(spec: RouterPolicySpec | None, tier: str, label: str):
    if spec is None:
        return None
    for t in spec.cascade:
        if t.name == tier:
            lt = {k.lower(): v for k, v in t.accept.label_thresholds.items()}
            return lt.get(label.lower(), t.accept.min_answer_confidence)
    return None


def recommend_labels(
    records: Sequence[OutcomeRecord],
    risk: RiskSpec,
    *,
    spec: RouterPolicySpec | None = None,
    calibrators: dict[tuple[str, str], CalibratorConfig] | None = None,
) -> list[Recommendation]:
    """One recommendation per (tier, label) that the risk names (explicitly or by a
    tier's ``default``) and that occurs in the outcomes with an answer confidence."""
    out: list[Recommendation] = []
    for tier, tier_risk in sorted(risk.tiers.items()):
        in_tier = [r for r in records if r.tier == tier and r.answer_confidence is not None]
        labels = {r.answer_label.lower() for r in in_tier if r.answer_label}
        if tier_risk.default is None:
            labels &= {k.lower() for k in tier_risk.labels}
        labels |= {k.lower() for k in tier_risk.labels}
        cost = _cost(risk, tier, records, _next_tier(spec, tier))
        for label in sorted(labels):
            lr = risk.label_risk(tier, label)
            assert lr is not None
            rows = [
                r
                for r in in_tier
                if (r.answer_label or "").lower() == label and r.answer_correct is not None
            ]
            conf = np.array([r.answer_confidence for r in rows], dtype=float)
            right = np.array([bool(r.answer_correct) for r in rows], dtype=bool)
            rec = _label_threshold(
                tier,
                label,
                conf,
                right,
                lr.max_error_rate,
                risk.confidence,
                len(in_tier),
                cost,
                _current_label_threshold(spec, tier, label),
            )
            cal = (calibrators or {}).get((tier, label))
            if cal is not None and rec.proposed is not None:
                rec.calibrated = apply(cal, rec.proposed)
            out.append(rec)
    return out


def recommend_routing(
    records: Sequence[OutcomeRecord],
    risk: RiskSpec,
    *,
    spec: RouterPolicySpec | None = None,
) -> Recommendation | None:
    """The routing threshold escalating >= minRecall of out-of-domain requests, with
    confidence; None when the risk states no out-of-domain target."""
    if risk.out_of_domain is None:
        return None
    target, level = risk.out_of_domain.min_recall, risk.confidence
    # the known route: a true route, or one a positive rating confirmed (feedback gives
    # in-domain requests no true route, only a verdict)
    rows = [
        r
        for r in records
        if r.routing_confidence is not None and r.known_route is not None and r.classified
    ]
    ood = np.array(
        [r.routing_confidence for r in rows if r.known_route == OUT_OF_DOMAIN], dtype=float
    )
    ind_rows = [r for r in rows if r.known_route != OUT_OF_DOMAIN]
    ind = np.array([r.routing_confidence for r in ind_rows], dtype=float)
    ind_right = np.array([bool(r.routed_correctly) for r in ind_rows], dtype=bool)
    current = spec.routing.semantic.min_confidence if spec is not None else None
    rec = Recommendation(
        kind="routing_threshold",
        path=ROUTING_PATH,
        target=f"out-of-domain requests escalated >= {target:.0%}",
        confidence=level,
        samples=len(ood),
        current=current,
    )
    n_min = min_samples_lower(target, level)
    passed: CurvePoint | None = None
    walking = True
    for t in grid():
        e = int((ood < t).sum())
        n = len(ood)
        pt = CurvePoint(
            float(t),
            n,
            e / n if n else 0.0,
            cp_lower(e, n, level),
            _mean(ind < t),
        )
        rec.curve.append(pt)
        if not walking or n < n_min:
            continue
        if pt.bound >= target:
            passed = pt
        else:
            walking = False
        if e == 0:  # nothing escalates any more: lower thresholds change nothing
            walking = False
    if current is not None and len(ood):
        e = int((ood < current).sum())
        rec.current_point, rec.current_bound = e / len(ood), cp_lower(e, len(ood), level)
    if len(ood) < n_min:
        rec.refused = (
            f"{len(ood)} out-of-domain outcomes; even if all escalated, at least {n_min} are "
            f"needed to show >= {target:.0%} recall at {level:.0%} confidence"
        )
        rec.more_needed = n_min - len(ood)
        return rec
    if passed is None:
        best = max(rec.curve, key=lambda p: p.point)
        need = samples_for_lower(best.point, target, level)
        if need > 10_000_000:
            rec.refused = "no threshold escalates enough out-of-domain requests"
        else:
            rec.more_needed = need - len(ood)
            rec.refused = (
                f"recall {best.point:.0%} is the best observed; about {rec.more_needed} more "
                "out-of-domain outcomes are needed to show the target"
            )
        return rec
    rec.proposed, rec.point, rec.bound = passed.threshold, passed.point, passed.bound
    rec.level = level
    rec.escalation_rate = passed.escalation_rate
    total = len(ood) + len(ind)
    escalated = int((ood < passed.threshold).sum() + (ind < passed.threshold).sum())
    rec.escalation_rate_tier = escalated / total if total else None
    rec.accepted = int((ind >= passed.threshold).sum())
    if len(ind):
        rec.in_scope_accuracy = float(np.mean(ind_right & (ind >= passed.threshold)))
    cost = _cost(risk, ROUTING, records, _next_tier(spec, None))
    if cost is not None and total:
        rec.cost_per_thousand_usd = 1000 * escalated / total * cost
    return rec
