"""The learning run end to end, as functions the CLI (and later the operator) call:
outcomes in, calibrations, recommendations, a re-learned classifier and a proposal out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..api.learning import Calibration, CalibratorConfig, TierCalibration
from ..api.policy import RouterPolicySpec
from ..api.routerconfig import DomainConfig, PolicyConfig, RouterConfig
from . import diagram
from .calibrate import MIN_SAMPLES, Fitted, fit_best
from .calibrator import apply, threshold_on_raw
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
        f"{rec.path} ({rec.samples} outcomes; raw confidence)",
        ts,
        series,
        chosen=rec.raw if rec.raw is not None else rec.proposed,
        target=target,
    )


Fit = Callable[[Mapping[str, DomainConfig], Sequence[str]], Any]


def router_fit(*, embed: bool = True) -> Fit:
    """The classifier the router fits (``snapshot.default_classifier_factory``: staged,
    MiniLM + TF-IDF), so replayed decisions and proposed thresholds are on its scale;
    ``embed=False``: TF-IDF only (no embedding model installed)."""
    from ..router.classify import DomainClassifier
    from ..router.snapshot import default_classifier_factory

    def fit(domains: Mapping[str, DomainConfig], negatives: Sequence[str]) -> Any:
        if not embed:
            return DomainClassifier.fit(domains, negatives=tuple(negatives), embed=False)
        return default_classifier_factory(domains, tuple(negatives))

    return fit


def find_policy(config: RouterConfig, name: str) -> PolicyConfig:
    for p in config.policies:
        if name in (p.model_name, p.id, p.id.split("/", 1)[-1]):
            return p
    known = ", ".join(p.model_name for p in config.policies)
    raise KeyError(f"no RouterPolicy {name!r} in the manifests (policies: {known})")


def calibration_of(cals: Sequence[GroupCalibration], policy: PolicyConfig) -> Calibration | None:
    """The ``spec.calibration`` the fitted groups make for ``policy``: the routing
    calibrator, and per cascade tier its all-labels calibrator as ``default`` and each
    label's own when it had at least ``MIN_SAMPLES`` outcomes (else the default covers
    it; at most the API's 64 labels, the best-sampled). Identity maps are left out (the
    raw value is then passed on); None when nothing is calibrated."""
    prefix = f"{policy.model_name}/"
    tiers = {t.name for t in policy.cascade}
    routing = None
    per_tier: dict[str, dict[str, Any]] = {}
    for g in cals:
        if not g.key.startswith(prefix):
            continue
        c = g.fitted.calibrator
        parts = g.key[len(prefix) :].split("/")
        if parts == ["routing"]:
            routing = c if c.method != "identity" else None
        elif len(parts) == 3 and parts[0] == "answer" and parts[1] in tiers:
            tier, label = parts[1], parts[2]
            entry = per_tier.setdefault(tier, {"default": None, "labels": {}})
            if label == "*":
                entry["default"] = c if c.method != "identity" else None
            elif g.fitted.before.samples >= MIN_SAMPLES:
                entry["labels"][label] = (g.fitted.before.samples, c)
    out_tiers = {}
    for tier, entry in sorted(per_tier.items()):
        best = sorted(entry["labels"].items(), key=lambda kv: (-kv[1][0], kv[0]))[:64]
        labels = {k: c for k, (_, c) in best if c.method != "identity" or entry["default"]}
        if entry["default"] is not None or labels:
            out_tiers[tier] = TierCalibration(default=entry["default"], labels=labels)
    if routing is None and not out_tiers:
        return None
    return Calibration(routing=routing, tiers=out_tiers)


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
    """Fit calibrators, recommend thresholds, re-learn routing and replay both
    configurations.

    The records' confidences are raw (the decision store keeps them before the current
    calibrators). The answer calibrators are fitted on every outcome of the policy; the
    routing calibrator on the re-learned classifier's out-of-fold confidences (that is
    the classifier proposed). Thresholds are recommended on the raw confidences (the
    grid and the bounds as tested) and then expressed on the proposed calibration's
    scale: ``on_scale`` maps each up, so the router, comparing calibrated values,
    accepts exactly the requests the recommender tested (or, where a calibrator is
    flat, a subset). The revision carries both.
    """
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
    oof: list[OutcomeRecord] = []
    routing_on = (
        policy.routing.semantic.enabled and len(domains) > 0 and risk.out_of_domain is not None
    )
    if routing_on:
        oof = cross_fitted(older, domains, negatives, fit, folds=folds)
    cals = calibrate_outcomes(mine)
    if oof:
        key = f"{policy.model_name}/routing"
        fresh = [g for g in calibrate_outcomes(oof) if g.key == key]
        cals = [g for g in cals if g.key != key] + fresh
    cal = calibration_of(cals, policy)
    recs: list[Recommendation] = recommend_labels(mine, risk, spec=spec)
    routing_rec = None
    if routing_on:
        routing_rec = recommend_routing(oof, risk, spec=spec)
    if routing_rec is not None:
        recs.insert(0, routing_rec)
    new_routing = cal.routing if cal is not None else None
    old_routing = policy.calibration.routing if policy.calibration is not None else None
    for rec in recs:  # the raw threshold tested, on the calibrated scale
        if rec.proposed is not None:
            c = new_routing if rec.kind == "routing_threshold" else _answer_cal(cal, rec)
            served = on_scale(c, rec.proposed)
            # what the router will do: the smallest raw value reaching the served one
            rec.raw = threshold_on_raw(c, served) if c is not None else rec.proposed
            rec.proposed = served
    current_t = policy.routing.semantic.min_confidence
    # Replay decides on raw classifier scores: each threshold on the raw scale of its
    # configuration (the current calibrator, the proposed one).
    current_raw = threshold_on_raw(old_routing, current_t) if old_routing else current_t
    ok = routing_rec is not None and routing_rec.ok and routing_rec.raw is not None
    proposed_raw = routing_rec.raw if ok else current_raw
    cost = risk.escalation_cost_usd.get("routing")
    result = relearn(
        older,
        newest,
        domains,
        negatives,
        fit,
        current_threshold=current_raw,
        proposed_threshold=float(proposed_raw),
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
        calibration=cal,
    )
    return proposal, cals


#: Decimals of a proposed threshold (the calibrated scale can be steep: 4 are too few).
DECIMALS = 6


def on_scale(c: CalibratorConfig | None, raw: float) -> float:
    """A raw threshold on ``c``'s calibrated scale, rounded *up* to ``DECIMALS``: every
    calibrator is monotone, so ``calibrated >= on_scale(c, t)`` accepts no request that
    ``raw >= t`` rejects (where a steep calibrator squeezes values below the last
    decimal, it accepts fewer)."""
    value = raw if c is None else apply(c, raw)
    unit = 10**DECIMALS
    k = math.ceil(value * unit)
    if (k - 1) / unit >= value:  # float noise above an exact decimal
        k -= 1
    return min(1.0, k / unit)


def _answer_cal(cal: Calibration | None, rec: Recommendation) -> CalibratorConfig | None:
    if cal is None or rec.tier is None or rec.tier not in cal.tiers:
        return None
    t = cal.tiers[rec.tier]
    return (t.labels.get(rec.label or "") if rec.label else None) or t.default
