"""The learning run end to end, as functions the CLI (and later the operator) call:
outcomes in, calibrations, recommendations, a re-learned classifier and a proposal out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..api.policy import RouterPolicySpec
from ..api.routerconfig import DomainConfig, PolicyConfig, RouterConfig
from . import diagram
from .calibrate import Fitted, fit_best
from .calibrator import apply
from .outcomes import OutcomeRecord
from .propose import Proposal, key_of
from .recommend import Recommendation, recommend_labels, recommend_routing
from .relearn import cross_fitted, relearn, split
from .risk import RiskSpec


@dataclass
class GroupCalibration:
    key: str
    """``<policy>/routing`` or ``<policy>/answer/<tier>/<label>`` (``*``: every label)."""
    fitted: Fitted


def _groups(records: Sequence[OutcomeRecord]) -> dict[str, tuple[list[float], list[bool]]]:
    groups: dict[str, tuple[list[float], list[bool]]] = {}

    def add(key: str, c: float, y: bool) -> None:
        cs, ys = groups.setdefault(key, ([], []))
        cs.append(c)
        ys.append(y)

    for r in records:
        if r.routing_confidence is not None and r.classified:
            ok = r.best_correct
            if ok is not None:
                add(f"{r.policy}/routing", r.routing_confidence, ok)
        if r.answer_confidence is not None and r.answer_correct is not None and r.tier:
            y = bool(r.answer_correct)
            add(f"{r.policy}/answer/{r.tier}/*", r.answer_confidence, y)
            if r.answer_label:
                add(f"{r.policy}/answer/{r.tier}/{r.answer_label.lower()}", r.answer_confidence, y)
    return groups


def calibrate_outcomes(
    records: Sequence[OutcomeRecord], *, n_bins: int = 10
) -> list[GroupCalibration]:
    """Per policy: routing confidence vs the classifier's top specialist being right;
    answer confidence vs answer right, per tier over all labels and per label."""
    return [
        GroupCalibration(key, fit_best(c, y, n_bins=n_bins))
        for key, (c, y) in sorted(_groups(records).items())
    ]


def diagram_name(key: str) -> str:
    return (
        "reliability-" + "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key) + ".png"
    )


def save_diagrams(cals: Sequence[GroupCalibration], out: Path) -> dict[str, Path]:
    paths = {}
    for g in cals:
        f = g.fitted
        paths[g.key] = diagram.reliability_png(
            out / diagram_name(g.key),
            f"{g.key}: {f.before.samples} outcomes",
            f.before,
            f.after_cv if f.calibrator.method != "identity" else None,
            method=f.calibrator.method,
        )
    return paths


def threshold_diagram(rec: Recommendation, out: Path) -> Path:
    ts = [p.threshold for p in rec.curve]
    if rec.kind == "routing_threshold":
        series = {
            "out-of-domain recall (observed)": [p.point for p in rec.curve],
            "recall lower bound": [p.bound for p in rec.curve],
            "in-domain escalation rate": [p.escalation_rate for p in rec.curve],
        }
        target = ("target recall", float(rec.target.split(">=")[-1].strip(" %")) / 100)
    else:
        series = {
            "error among accepted (observed)": [p.point for p in rec.curve],
            "error upper bound": [p.bound for p in rec.curve],
            "escalation rate": [p.escalation_rate for p in rec.curve],
        }
        target = ("max error rate", float(rec.target.split("<=")[-1].strip(" %")) / 100)
    name = "threshold-" + key_of(rec).replace("/", "-") + ".png"
    return diagram.threshold_png(
        out / name,
        f"{rec.path} ({rec.samples} outcomes)",
        ts,
        series,
        chosen=rec.proposed,
        target=target,
    )


Fit = Callable[[Mapping[str, DomainConfig], Sequence[str]], Any]


def find_policy(config: RouterConfig, name: str) -> PolicyConfig:
    for p in config.policies:
        if name in (p.model_name, p.id, p.id.split("/", 1)[-1]):
            return p
    known = ", ".join(p.model_name for p in config.policies)
    raise KeyError(f"no RouterPolicy {name!r} in the manifests (policies: {known})")


def learn(
    records: Sequence[OutcomeRecord],
    config: RouterConfig,
    policy: PolicyConfig,
    spec: RouterPolicySpec,
    risk: RiskSpec,
    fit: Fit,
    *,
    held_out: float = 0.2,
    folds: int = 5,
) -> tuple[Proposal, list[GroupCalibration]]:
    """Recommend thresholds, re-learn routing and replay both configurations."""
    mine = [
        r.model_copy(update={"policy": policy.model_name})
        for r in records
        if r.policy in (policy.model_name, policy.id)
    ]
    older, newest = split(mine, held_out)
    domains = {
        sid: s.domain for sid in policy.specialists if (s := config.specialist(sid)) is not None
    }
    negatives = list(policy.routing.semantic.out_of_domain_examples)
    recs: list[Recommendation] = recommend_labels(mine, risk, spec=spec)
    routing_rec = None
    oof: list[OutcomeRecord] = []
    if policy.routing.semantic.enabled and len(domains) > 0 and risk.out_of_domain is not None:
        oof = cross_fitted(older, domains, negatives, fit, folds=folds)
        routing_rec = recommend_routing(oof, risk, spec=spec)
    if routing_rec is not None:
        recs.insert(0, routing_rec)
    current_t = policy.routing.semantic.min_confidence
    proposed_t = routing_rec.proposed if routing_rec is not None and routing_rec.ok else current_t
    cost = risk.escalation_cost_usd.get("routing")
    result = relearn(
        older,
        newest,
        domains,
        negatives,
        fit,
        current_threshold=current_t,
        proposed_threshold=float(proposed_t),
        escalation_cost=cost,
    )
    by_name = {sid: sid.split("/", 1)[-1] for sid in domains}
    proposal = Proposal(
        policy=policy.id.split("/", 1)[-1],
        recommendations=recs,
        new_examples={by_name[s]: ex for s, ex in result.candidates.examples.items() if ex},
        new_negatives=result.candidates.negatives,
        current=result.current,
        proposed=result.proposed,
        outcomes=len(mine),
    )
    # Answers: calibrated on every outcome. Routing: on the re-learned classifier's
    # out-of-fold confidences when there are some (that is the classifier proposed).
    cals = calibrate_outcomes(mine)
    if oof:
        key = f"{policy.model_name}/routing"
        fresh = [g for g in calibrate_outcomes(oof) if g.key == key]
        cals = [g for g in cals if g.key != key] + fresh
    by_key = {g.key: g.fitted.calibrator for g in cals}
    for rec in recs:  # where the proposed threshold lands on the calibrated scale
        key = (
            f"{policy.model_name}/routing"
            if rec.kind == "routing_threshold"
            else f"{policy.model_name}/answer/{rec.tier}/{rec.label}"
        )
        if rec.proposed is not None and key in by_key:
            rec.calibrated = apply(by_key[key], rec.proposed)
    return proposal, cals
