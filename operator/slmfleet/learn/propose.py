"""Proposals: a reviewable revision of the manifests and the status the operator writes.

Nothing here touches a cluster. ``revise`` returns the revised RouterPolicy and
SLMSpecialist documents (whole objects, ``kubectl apply -f``-able, server-managed
metadata and status dropped) for GitOps users to commit; ``status_patch`` returns the
``RouterPolicy.status`` content (``thresholdProposals`` + ``learning``) the operator will
write (a merge patch body for the status subresource); ``write`` puts both, the evidence
(PNG, JSON) and a README for reviewers in one directory.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ..api.learning import Calibration, LearningStatus, ReplaySummary, ThresholdProposal
from .recommend import Recommendation
from .replay import ReplayResult

SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


@dataclass
class Proposal:
    policy: str
    """metadata.name of the RouterPolicy."""
    recommendations: list[Recommendation]
    new_examples: dict[str, list[str]] = field(default_factory=dict)
    """SLMSpecialist metadata.name -> examples to add."""
    new_negatives: list[str] = field(default_factory=list)
    current: ReplayResult | None = None
    proposed: ReplayResult | None = None
    outcomes: int = 0
    evidence: dict[str, str] = field(default_factory=dict)
    """Recommendation key (``routing`` or ``tier/label``) -> PNG file name."""
    calibrators: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Group -> CalibratorConfig wire form (calibration.json, every group fitted)."""
    calibration: Calibration | None = None
    """The ``spec.calibration`` proposed with the thresholds (None: raw confidences)."""
    created: str = field(
        default_factory=lambda: datetime.now(UTC).replace(microsecond=0).isoformat()
    )


def key_of(rec: Recommendation) -> str:
    return "routing" if rec.kind == "routing_threshold" else f"{rec.tier}/{rec.label}"


def _clean(doc: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(doc))
    out.pop("status", None)
    meta = out.setdefault("metadata", {})
    for k in SERVER_METADATA:
        meta.pop(k, None)
    ann = meta.get("annotations") or {}
    ann.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if "annotations" in meta and not ann:
        meta.pop("annotations")
    return out


def _set_label_threshold(spec: dict[str, Any], tier: str, label: str, value: float) -> bool:
    for t in spec.get("cascade") or []:
        if t.get("name") == tier:
            acc = t.setdefault("accept", {})
            lt = acc.setdefault("labelThresholds", {})
            key = next((k for k in lt if k.lower() == label.lower()), label)
            lt[key] = value
            return True
    return False


def revise(
    policy_doc: Mapping[str, Any],
    specialist_docs: Mapping[str, Mapping[str, Any]],
    proposal: Proposal,
) -> list[dict[str, Any]]:
    """The revised documents: the policy first, then every specialist that gains examples."""
    pol = _clean(policy_doc)
    spec = pol.setdefault("spec", {})
    for rec in proposal.recommendations:
        if not rec.ok or rec.proposed is None:
            continue
        value = round(rec.proposed, 6)
        if rec.kind == "routing_threshold":
            spec.setdefault("routing", {}).setdefault("semantic", {})["minConfidence"] = value
        else:
            assert rec.tier is not None and rec.label is not None
            if not _set_label_threshold(spec, rec.tier, rec.label, value):
                raise ValueError(f"policy {proposal.policy} has no cascade tier {rec.tier!r}")
    if proposal.calibration is not None:
        # the thresholds above are on this calibration's scale: they go together
        spec["calibration"] = proposal.calibration.wire()
    else:
        spec.pop("calibration", None)
    if proposal.new_negatives:
        sem = spec.setdefault("routing", {}).setdefault("semantic", {})
        sem["outOfDomainExamples"] = [*sem.get("outOfDomainExamples", []), *proposal.new_negatives]
    docs = [pol]
    for name, examples in sorted(proposal.new_examples.items()):
        if not examples:
            continue
        if name not in specialist_docs:
            raise ValueError(f"no SLMSpecialist {name!r} among the manifests")
        sp = _clean(specialist_docs[name])
        dom = sp.setdefault("spec", {}).setdefault("domain", {})
        dom["examples"] = [*dom.get("examples", []), *examples]
        docs.append(sp)
    return docs


def threshold_proposals(proposal: Proposal) -> list[ThresholdProposal]:
    out = []
    for rec in proposal.recommendations:
        if not rec.ok or rec.proposed is None:
            continue
        out.append(
            ThresholdProposal(
                tier=rec.tier,
                label=rec.label,
                path=rec.path,
                current=rec.current,
                proposed=round(rec.proposed, 6),
                samples=rec.samples,
                target=rec.target,
                bound=None if rec.bound is None else round(rec.bound, 4),
                confidence=rec.confidence,
                escalation_rate=_r(rec.escalation_rate_tier),
                cost_per_thousand_usd=_r(rec.cost_per_thousand_usd, 6),
                evidence=proposal.evidence.get(key_of(rec)),
                raw=None if rec.raw is None else round(rec.raw, 4),
            )
        )
    return out


def _r(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(v, digits)


def _replay_summary(r: ReplayResult | None) -> ReplaySummary | None:
    if r is None:
        return None
    return ReplaySummary(
        threshold=round(r.threshold, 4),
        requests=r.requests,
        escalation_rate=round(r.escalation_rate, 4),
        in_scope_accuracy=round(r.in_scope_accuracy, 4),
        out_of_domain_recall=_r(r.ood_recall),
        cost_per_thousand_usd=_r(r.cost_per_thousand_usd, 6),
    )


def status_patch(proposal: Proposal) -> dict[str, Any]:
    """``{"status": {"thresholdProposals": [...], "learning": {...}}}`` in wire form."""
    learning = LearningStatus(
        proposed_at=proposal.created,
        outcomes=proposal.outcomes,
        learned_examples=sum(len(v) for v in proposal.new_examples.values()),
        learned_out_of_domain_examples=len(proposal.new_negatives),
        current=_replay_summary(proposal.current),
        proposed=_replay_summary(proposal.proposed),
        refusals=[f"{r.path}: {r.refused}"[:1024] for r in proposal.recommendations if r.refused][
            :64
        ],
        calibration=proposal.calibration,
    )
    return {
        "status": {
            "thresholdProposals": [p.wire() for p in threshold_proposals(proposal)],
            "learning": learning.wire(),
        }
    }


def _dump_all(docs: Sequence[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False, allow_unicode=True, width=100)


def readme(proposal: Proposal) -> str:
    """What a reviewer reads first: every proposal with its evidence, refusals, replay."""
    lines = [
        f"# Proposed revision of RouterPolicy {proposal.policy}",
        "",
        f"Generated by `slmfleet learn` at {proposal.created} from {proposal.outcomes} "
        "labelled outcomes. Nothing is applied: review `revision.yaml`, then commit it "
        "(GitOps) or `kubectl apply -f revision.yaml`. `status.yaml` is what the operator "
        "writes to the policy's status.",
        "",
        "| field | current | proposed | (raw) | target | confidence | bound | samples "
        "| escalation (tier) | cost / 1k req | evidence |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in proposal.recommendations:
        if not r.ok:
            continue
        lines.append(
            f"| `{r.path}` | {_fmt(r.current)} | {_fmt(r.proposed)} | {_fmt(r.raw)} | "
            f"{r.target} | "
            f"{r.confidence:.0%} | {_fmt(r.bound)} | {r.samples} | "
            f"{_pct(r.escalation_rate_tier)} | {_fmt(r.cost_per_thousand_usd, 4)} | "
            f"{proposal.evidence.get(key_of(r), '-')} |"
        )
    refused = [r for r in proposal.recommendations if r.refused]
    if refused:
        lines += ["", "## Not proposed yet", ""]
        lines += [f"- `{r.path}`: {r.refused}" for r in refused]
    if proposal.current is not None and proposal.proposed is not None:
        lines += ["", "## Replay on held-out traffic", ""]
        lines += [
            "| configuration | threshold | requests | in-scope accuracy (95% CI) "
            "| out-of-domain recall (95% CI) | escalation | misrouted | cost / 1k req "
            "| routed to |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in (proposal.current, proposal.proposed):
            ood = (
                "-"
                if r.ood_recall is None or r.ood_recall_interval is None
                else f"{r.ood_recall:.1%} ({r.ood_recall_interval[0]:.1%}-"
                f"{r.ood_recall_interval[1]:.1%})"
            )
            lines.append(
                f"| {r.name} | {r.threshold:.3f} | {r.requests} | {r.in_scope_accuracy:.1%} "
                f"({r.in_scope_interval[0]:.1%}-{r.in_scope_interval[1]:.1%}) | {ood} | "
                f"{r.escalation_rate:.1%} | {r.misrouted} | {_fmt(r.cost_per_thousand_usd, 4)} | "
                + (", ".join(f"{k}: {v}" for k, v in sorted(r.routed.items())) or "-")
                + " |"
            )
    n_ex = sum(len(v) for v in proposal.new_examples.values())
    lines += [
        "",
        f"Learned: {n_ex} domain examples "
        f"({', '.join(f'{k}: {len(v)}' for k, v in sorted(proposal.new_examples.items())) or '-'}),"
        f" {len(proposal.new_negatives)} out-of-domain examples.",
        "",
    ]
    return "\n".join(lines)


def _fmt(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def write(
    out: str | Path,
    proposal: Proposal,
    revision: Sequence[Mapping[str, Any]],
) -> dict[str, Path]:
    """Write revision.yaml, status.yaml, evidence.json, calibration.json and README.md."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    files = {
        "revision": d / "revision.yaml",
        "status": d / "status.yaml",
        "evidence": d / "evidence.json",
        "calibration": d / "calibration.json",
        "readme": d / "README.md",
    }
    files["revision"].write_text(_dump_all(revision))
    files["status"].write_text(yaml.safe_dump(status_patch(proposal), sort_keys=False))
    evidence = {
        "policy": proposal.policy,
        "created": proposal.created,
        "outcomes": proposal.outcomes,
        "recommendations": [
            {k: v for k, v in asdict(r).items() if k != "curve"}
            | {"curve": [asdict(p) for p in r.curve[::4]]}
            for r in proposal.recommendations
        ],
        "replay": {
            r.name: r.summary() for r in (proposal.current, proposal.proposed) if r is not None
        },
    }
    files["evidence"].write_text(json.dumps(evidence, indent=1) + "\n")
    files["calibration"].write_text(json.dumps(proposal.calibrators, indent=1) + "\n")
    files["readme"].write_text(readme(proposal))
    return files
