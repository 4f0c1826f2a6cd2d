"""``slmfleet calibrate`` and ``slmfleet learn`` end to end on a labelled file (TF-IDF
classifier, the stand-ins' own scorer for answers: no Triton, no encoder)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from slmfleet.api.policy import RouterPolicyStatus
from slmfleet.api.routerconfig import DomainConfig
from slmfleet.cli.main import main
from slmfleet.learn.outcomes import OUT_OF_DOMAIN, OutcomeRecord, write_jsonl
from slmfleet.local.fleet import load_fleet
from slmfleet.local.models import BILLING_EXAMPLES, SHIPPING_EXAMPLES
from slmfleet.local.models.standin import DomainScorer
from slmfleet.router.classify import DomainClassifier
from tests.learn_traffic import RISK, labelled, write_manifests

PNG = b"\x89PNG\r\n\x1a\n"


def simulated_outcomes() -> list[OutcomeRecord]:
    """What the router would log for the labelled traffic, joined to the truth."""
    domains = {
        "shop/domain-billing": DomainConfig(
            examples=[e for v in BILLING_EXAMPLES.values() for e in v]
        ),
        "shop/domain-shipping": DomainConfig(
            examples=[e for v in SHIPPING_EXAMPLES.values() for e in v]
        ),
    }
    clf = DomainClassifier.fit(domains, embed=False)
    scorers = {
        "shop/domain-billing": DomainScorer(BILLING_EXAMPLES),
        "shop/domain-shipping": DomainScorer(SHIPPING_EXAMPLES),
    }
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    out = []
    for i, (text, model, label) in enumerate(labelled(1)):
        rs = clf.predict(text)
        routed = rs.best if rs.confidence >= 0.3 else None
        rec = {
            "request_id": f"r{i}",
            "policy": "support",
            "time": t0 + timedelta(minutes=i),
            "route": rs.best,
            "route_source": "classifier",
            "routing_confidence": round(rs.confidence, 4),
            "true_route": f"shop/{model}" if model else OUT_OF_DOMAIN,
            "true_label": label,
            "routing_text": text,
            "source": "eval",
        }
        if routed is None:
            rec |= {
                "tier": "large",
                "target": "shop/generalist",
                "cost_usd": 0.002,
                "answer_label": "here",
                "answer_confidence": 0.99,
            }
        else:
            lab, conf = scorers[routed].classify(text)
            rec |= {
                "tier": "routed",
                "target": routed,
                "cost_usd": 0.0001,
                "answer_label": lab,
                "answer_confidence": conf,
            }
        out.append(OutcomeRecord.model_validate(rec))
    return out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    d = tmp_path_factory.mktemp("learn")
    write_manifests(d / "fleet")
    write_jsonl(d / "outcomes.jsonl", simulated_outcomes())
    (d / "risk.yaml").write_text(yaml.safe_dump(RISK))
    return d


def test_calibrate_writes_tables_and_diagrams(workspace, capsys):
    out = workspace / "cal"
    assert main(["calibrate", str(workspace / "outcomes.jsonl"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "support/routing" in text and "support/answer/routed/*" in text
    table = json.loads((out / "calibration.json").read_text())
    routing = table["support/routing"]
    assert routing["samples"] > 200 and 0 <= routing["eceBefore"] <= 1
    assert routing["calibrator"]["method"] in ("identity", "temperature", "platt", "isotonic")
    assert sum(b["count"] for b in routing["bins"]) == routing["samples"]
    for entry in table.values():
        assert (out / entry["diagram"]).read_bytes().startswith(PNG)


def test_calibrate_refuses_bad_input(workspace, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"request_id": "a", "policy": "p"}\n{"request_id": "b", "policy": "p", '
        '"routing_confidence": 1.5}\n'
    )
    assert main(["calibrate", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:2: field routing_confidence" in capsys.readouterr().out
    assert main(["calibrate", str(workspace / "outcomes.jsonl"), "--policy", "nope"]) == 2


def test_learn_proposes_a_reviewable_revision(workspace, capsys):
    out = workspace / "proposal"
    args = [
        "learn",
        str(workspace / "fleet"),
        str(workspace / "outcomes.jsonl"),
        "--policy",
        "support",
        "--risk",
        str(workspace / "risk.yaml"),
        "--out",
        str(out),
        "--no-embed",
        "--namespace",
        "shop",
    ]
    assert main(args) == 0
    said = capsys.readouterr().out
    # refund asks for 5% errors: too few refund outcomes, and the CLI says how many more
    assert "no proposal for spec.cascade[routed].accept.labelThresholds.refund" in said
    assert "more labelled outcomes" in said or "at least" in said
    docs = list(yaml.safe_load_all((out / "revision.yaml").read_text()))
    policy = docs[0]
    assert policy["kind"] == "RouterPolicy" and "status" not in policy
    thresholds = policy["spec"]["cascade"][0]["accept"]["labelThresholds"]
    assert thresholds["refund"] == 0.97  # refused: unchanged
    assert {"invoice", "damaged"} <= set(thresholds)  # 20% default risk: proposed
    assert policy["spec"]["routing"]["semantic"]["outOfDomainExamples"]  # learned negatives
    learned = {d["metadata"]["name"]: d for d in docs[1:]}
    assert set(learned) == {"domain-billing", "domain-shipping"}
    assert len(learned["domain-billing"]["spec"]["domain"]["examples"]) > 12
    status = yaml.safe_load((out / "status.yaml").read_text())["status"]
    parsed = RouterPolicyStatus.model_validate(status)  # the CRD's own model
    assert parsed.learning is not None and parsed.learning.learned_examples > 0
    assert parsed.learning.current and parsed.learning.proposed
    assert any("refund" in r for r in parsed.learning.refusals)
    for p in parsed.threshold_proposals:
        assert p.bound is not None and p.samples > 0 and p.evidence
        assert (out / p.evidence).read_bytes().startswith(PNG)
    readme = (out / "README.md").read_text()
    assert "Replay on held-out traffic" in readme and "Not proposed yet" in readme
    assert json.loads((out / "calibration.json").read_text())


def test_learn_apply_rewrites_only_the_revised_objects(workspace, tmp_path):
    fleet = tmp_path / "fleet"
    write_manifests(fleet)
    before_spec = (fleet / "specialists.yaml").read_text()
    args = [
        "learn",
        str(fleet),
        str(workspace / "outcomes.jsonl"),
        "--policy",
        "support",
        "--risk",
        str(workspace / "risk.yaml"),
        "--out",
        str(tmp_path / "p"),
        "--no-embed",
        "--namespace",
        "shop",
        "--apply",
    ]
    assert main(args) == 0
    pol = (fleet / "policy.yaml").read_text()
    assert pol.startswith("# routing for the shop")  # the leading comment survives
    revised = yaml.safe_load(pol)
    assert revised["spec"]["routing"]["semantic"]["outOfDomainExamples"]
    after = list(yaml.safe_load_all((fleet / "specialists.yaml").read_text()))
    assert after[2] == list(yaml.safe_load_all(before_spec))[2]  # generalist untouched
    assert len(after[0]["spec"]["domain"]["examples"]) > 12
    load_fleet(fleet, "shop")  # still valid manifests


def test_learn_errors_name_the_problem(workspace, tmp_path, capsys):
    def run(policy: str, risk: Path) -> int:
        return main(
            [
                "learn",
                str(workspace / "fleet"),
                str(workspace / "outcomes.jsonl"),
                "--risk",
                str(risk),
                "--out",
                str(tmp_path / "p"),
                "--no-embed",
                "--policy",
                policy,
            ]
        )

    assert run("nope", workspace / "risk.yaml") == 2
    assert "no RouterPolicy 'nope'" in capsys.readouterr().out
    (tmp_path / "risk.yaml").write_text("tiers: {routed: {default: {maxErrorRate: 2}}}\n")
    assert run("support", tmp_path / "risk.yaml") == 2
    assert "field tiers.routed.default.maxErrorRate" in capsys.readouterr().out
    assert not (tmp_path / "p").exists()  # nothing written on bad input
