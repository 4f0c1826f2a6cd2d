"""``slmfleet calibrate`` and ``slmfleet learn``: the learning loop from the command line.

slmfleet calibrate [OUTCOMES | --store URL] [--out DIR]
    reliability and ECE per policy (routing) and per tier and label (answers), the
    calibrator chosen by held-out likelihood, diagrams as PNG, calibration.json.
slmfleet learn MANIFESTS [OUTCOMES | --store URL] --policy NAME --risk RISK --out DIR [--apply]
    thresholds from stated risk (with bounds), re-learned routing examples, replay on
    held-out traffic, and a proposal: revision.yaml (commit it, or --apply writes it
    into MANIFESTS), status.yaml (what the operator writes), evidence and README.md.

Outcomes come from a labelled JSONL file or from the decision store (``--store
sqlite:///path.db`` or ``postgresql://...``: decisions joined to feedback and review
resolutions, see learn/store_outcomes.py).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ..learn.outcomes import JsonlOutcomes, OutcomeError, OutcomeSource
from ..learn.risk import RiskError, load_risk

Say = Any  # the CLI's Console


def add_parsers(sub: argparse._SubParsersAction) -> None:
    cal = sub.add_parser(
        "calibrate",
        help="reliability, ECE and fitted calibrators from labelled outcomes",
        description="Calibrate routing and answer confidences against labelled outcomes "
        "(a JSONL file; see docs/learning.md for the record schema).",
    )
    _outcome_args(cal)
    cal.add_argument("--policy", default=None, help="only this policy (model name)")
    cal.add_argument("--out", default="calibration", help="directory for PNGs and JSON")
    cal.add_argument("--bins", type=int, default=10, help="reliability bins (default 10)")

    lrn = sub.add_parser(
        "learn",
        help="propose thresholds and routing examples learned from labelled outcomes",
        description="Recommend thresholds from stated risk, re-learn routing from "
        "confirmed outcomes, replay on held-out traffic, and write a reviewable proposal.",
    )
    lrn.add_argument("manifests", metavar="MANIFESTS", help="folder (or file) of manifests")
    _outcome_args(lrn)
    lrn.add_argument("--policy", required=True, help="RouterPolicy (model name or name)")
    lrn.add_argument("--risk", required=True, help="risk file (YAML; see docs/learning.md)")
    lrn.add_argument("--out", default="proposal", help="directory for the proposal")
    lrn.add_argument("--namespace", default=None, help="namespace (default: the folder's name)")
    lrn.add_argument(
        "--held-out", type=float, default=0.2, help="newest fraction replayed, never learned"
    )
    lrn.add_argument("--folds", type=int, default=5, help="cross-fitting folds (default 5)")
    lrn.add_argument(
        "--no-embed", action="store_true", help="TF-IDF-only classifier (no embedding model)"
    )
    lrn.add_argument("--apply", action="store_true", help="also write the revision into MANIFESTS")


def _outcome_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("outcomes", metavar="OUTCOMES", nargs="?", help="labelled outcomes (JSONL)")
    p.add_argument(
        "--store", default=None, help="read outcomes from the decision store at this URL"
    )
    p.add_argument("--store-password-file", default=None, help="the store's password")


def _read_errors() -> tuple[type[Exception], ...]:
    """What reading outcomes may raise (the store's errors imported only when used)."""
    from ..telemetry.store.base import StoreError

    return (OSError, OutcomeError, StoreError)


def outcome_source(args: argparse.Namespace) -> OutcomeSource:
    """The file or the store the arguments name (exactly one)."""
    if (args.outcomes is None) == (args.store is None):
        raise OutcomeError("give either an OUTCOMES file or --store URL")
    if args.store is not None:
        from ..learn.store_outcomes import StoreOutcomes

        return StoreOutcomes(args.store, password_file=args.store_password_file)
    return JsonlOutcomes(args.outcomes)


def cmd_calibrate(args: argparse.Namespace, say: Say) -> int:
    from ..learn.pipeline import calibrate_outcomes, save_diagrams

    try:
        records = list(outcome_source(args).outcomes(policy=args.policy))
    except (*_read_errors(), ValueError) as exc:
        say(f"error: {exc}")
        return 2
    if not records:
        say("error: no outcome records" + (f" for policy {args.policy}" if args.policy else ""))
        return 2
    out = Path(args.out)
    cals = calibrate_outcomes(records, n_bins=args.bins)
    pngs = save_diagrams(cals, out)
    say(f"{len(records)} outcomes; ECE on {args.bins} bins, 'after' cross-validated:")
    say(f"  {'group':<44} {'n':>6} {'acc':>6} {'ECE':>6} {'method':>11} {'ECE after':>9}")
    for g in cals:
        f = g.fitted
        say(
            f"  {g.key:<44} {f.before.samples:>6} {f.before.accuracy:>6.1%} "
            f"{f.before.ece:>6.3f} {f.calibrator.method:>11} {f.after_cv.ece:>9.3f}"
        )
        for note in f.notes:
            say(f"    ({note})")
    table = {
        g.key: {
            "calibrator": g.fitted.calibrator.wire(),
            "samples": g.fitted.before.samples,
            "eceBefore": round(g.fitted.before.ece, 5),
            "eceAfterCrossValidated": round(g.fitted.after_cv.ece, 5),
            "heldOutNll": {k: round(v, 5) for k, v in g.fitted.held_out_nll.items()},
            "diagram": pngs[g.key].name,
            "bins": [
                {
                    "lo": b.lo,
                    "hi": b.hi,
                    "count": b.count,
                    "meanConfidence": round(b.mean_confidence, 5),
                    "accuracy": round(b.accuracy, 5),
                }
                for b in g.fitted.before.bins
            ],
        }
        for g in cals
    }
    (out / "calibration.json").write_text(json.dumps(table, indent=1) + "\n")
    say(f"wrote {out}/calibration.json and {len(pngs)} reliability diagrams")
    return 0


def _fit(no_embed: bool):
    from ..learn.pipeline import router_fit

    return router_fit(embed=not no_embed)


def cmd_learn(args: argparse.Namespace, say: Say) -> int:
    from ..learn import propose
    from ..learn.pipeline import find_policy, learn, save_diagrams, threshold_diagram
    from ..local.fleet import ManifestError, load_fleet, local_router_config, read_documents

    try:
        risk = load_risk(args.risk)
        fleet = load_fleet(args.manifests, args.namespace)
        config = local_router_config(fleet, "127.0.0.1:8001")
        policy = find_policy(config, args.policy)
        records = list(outcome_source(args).outcomes())
    except (*_read_errors(), RiskError, ManifestError, KeyError) as exc:
        say(f"error: {str(exc).strip(chr(34) + chr(39))}")
        return 2
    name = policy.id.split("/", 1)[-1]
    spec = next(p.spec for p in fleet.policies if p.name == name)
    docs = {
        (d.body.get("kind"), (d.body.get("metadata") or {}).get("name")): d.body
        for d in read_documents(args.manifests)
    }
    proposal, cals = learn(
        records,
        config,
        policy,
        spec,
        risk,
        _fit(args.no_embed),
        held_out=args.held_out,
        folds=args.folds,
    )
    if not proposal.outcomes:
        say(f"error: no outcome records for policy {policy.model_name}")
        return 2
    out = Path(args.out)
    evidence_dir = out / "evidence"
    for rec in proposal.recommendations:
        png = threshold_diagram(rec, evidence_dir)
        proposal.evidence[propose.key_of(rec)] = f"evidence/{png.name}"
    save_diagrams(cals, evidence_dir)
    proposal.calibrators = {g.key: g.fitted.calibrator.wire() for g in cals}
    specialists = {n: b for (k, n), b in docs.items() if k == "SLMSpecialist"}
    try:
        revision = propose.revise(docs[("RouterPolicy", name)], specialists, proposal)
    except ValueError as exc:
        say(f"error: {exc}")
        return 2
    files = propose.write(out, proposal, revision)
    report(proposal, say)
    say(f"wrote {files['revision']}, {files['status']}, {files['readme']} and evidence/")
    if args.apply:
        changed = apply_revision(Path(args.manifests), revision)
        say(f"applied the revision to {', '.join(str(p) for p in changed) or 'nothing'}")
    return 0


def report(p: Any, say: Say) -> None:
    say(f"RouterPolicy {p.policy}: {p.outcomes} labelled outcomes")
    if p.calibration is not None:
        say("  propose spec.calibration (thresholds below are on its calibrated scale)")
    for r in p.recommendations:
        if r.ok:
            raw = (
                f", raw {r.raw:.3f}" if r.raw is not None and abs(r.raw - r.proposed) > 5e-4 else ""
            )
            say(
                f"  propose {r.path} = {r.proposed:.6g} (now {_f(r.current)}{raw}): {r.target} "
                f"with {r.confidence:.0%} confidence, bound {r.bound:.3f}, n={r.samples}, "
                f"escalates {_pct(r.escalation_rate_tier)} of the tier"
            )
        else:
            say(f"  no proposal for {r.path}: {r.refused}")
    for r in (p.current, p.proposed):
        if r is not None:
            say(
                f"  replay {r.name:<8} raw threshold {r.threshold:.3f}: {r.requests} held-out "
                f"requests, in-scope {r.in_scope_accuracy:.1%}, out-of-domain recall "
                f"{_pct(r.ood_recall)}, escalation {r.escalation_rate:.1%}"
            )
    n = sum(len(v) for v in p.new_examples.values())
    say(f"  learned {n} domain examples and {len(p.new_negatives)} out-of-domain examples")


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


_SEPARATOR = re.compile(r"^---\s*$", re.MULTILINE)


def apply_revision(path: Path, revision: Sequence[Mapping[str, Any]]) -> list[Path]:
    """Replace the revised objects in the manifest files they came from. Other documents
    are kept byte for byte; a replaced document keeps its leading comment lines but loses
    comments inside it (YAML round trips drop them)."""
    from ..local.fleet import manifest_files

    wanted = {(d["kind"], d["metadata"]["name"]): d for d in revision}
    changed = []
    for file in manifest_files(path):
        text = file.read_text()
        chunks = _SEPARATOR.split(text)
        hit = False
        for i, chunk in enumerate(chunks):
            try:
                body = yaml.safe_load(chunk)
            except yaml.YAMLError:
                continue
            if not isinstance(body, dict):
                continue
            key = (body.get("kind"), (body.get("metadata") or {}).get("name"))
            if key in wanted:
                lead = []
                for ln in chunk.lstrip("\n").splitlines():
                    if not ln.startswith("#"):
                        break
                    lead.append(ln)
                dumped = yaml.safe_dump(wanted[key], sort_keys=False, width=100)
                chunks[i] = ("\n" if i else "") + "\n".join([*lead, dumped]).rstrip("\n") + "\n"
                hit = True
        if hit:
            file.write_text("---".join(chunks))
            changed.append(file)
    return changed
