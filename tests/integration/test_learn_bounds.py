"""``slmfleet learn`` where the API's bounds bind: a specialist and a policy nearly full of
examples, candidates more than the room left, one text longer than an example may be.
The revision must be one the real API server accepts as it is, holding the newest
candidates that fit (no model or Triton needed: the TF-IDF classifier)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml

from slmfleet.cli.main import main
from slmfleet.learn.outcomes import OUT_OF_DOMAIN, OutcomeRecord, write_jsonl
from slmfleet.learn.relearn import MAX_EXAMPLE_CHARS, MAX_EXAMPLES, MAX_NEGATIVES, split
from tests.learn_traffic import RISK, labelled, manifests

pytestmark = pytest.mark.integration

ROOM = 10
"""Examples the nearly full specialist (and, halved, the policy) has room for."""


def test_learn_near_the_api_bounds_proposes_what_the_api_server_accepts(tmp_path, kube, namespace):
    docs = manifests()
    billing = docs[0]["spec"]["domain"]
    original = set(billing["examples"])
    billing["examples"] += [
        f"billing filler {i}" for i in range(MAX_EXAMPLES - ROOM - len(billing["examples"]))
    ]
    semantic = docs[3]["spec"]["routing"]["semantic"]
    semantic["outOfDomainExamples"] = [f"off filler {i}" for i in range(MAX_NEGATIVES - ROOM // 2)]
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "shop.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))

    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    long_text = "my invoice is wrong, " * 70  # 1,470 characters
    assert len(long_text.strip()) > MAX_EXAMPLE_CHARS
    records = []
    traffic = labelled(0)
    for i, (text, model, _label) in enumerate(traffic):
        if i == len(traffic) // 2:
            text, model = long_text, "domain-billing"  # an older candidate, too long
        route = f"shop/{model}" if model else None
        records.append(
            OutcomeRecord(
                request_id=f"r{i}",
                policy="support",
                time=t0 + timedelta(seconds=i),
                route=route,
                route_source="classifier",
                routing_confidence=0.6 if model else 0.2,
                true_route=route or OUT_OF_DOMAIN,
                routing_text=text,
                source="eval",
            )
        )
    write_jsonl(tmp_path / "outcomes.jsonl", records)
    (tmp_path / "risk.yaml").write_text(yaml.safe_dump(RISK))
    out = tmp_path / "proposal"
    args = ["learn", str(fleet), str(tmp_path / "outcomes.jsonl"), "--policy", "support"]
    args += ["--risk", str(tmp_path / "risk.yaml"), "--out", str(out), "--no-embed"]
    assert main([*args, "--namespace", "shop"]) == 0

    revision = {
        d["metadata"]["name"]: d for d in yaml.safe_load_all((out / "revision.yaml").read_text())
    }
    examples = revision["domain-billing"]["spec"]["domain"]["examples"]
    negatives = revision["support"]["spec"]["routing"]["semantic"]["outOfDomainExamples"]
    assert len(examples) == MAX_EXAMPLES and len(negatives) == MAX_NEGATIVES
    assert max(map(len, examples + negatives)) <= MAX_EXAMPLE_CHARS
    # the newest candidates that fit, in decision order
    older, _ = split(records)
    eligible = [
        r.routing_text
        for r in older
        if r.true_route == "shop/domain-billing"
        and r.routing_text not in original
        and len(r.routing_text) <= MAX_EXAMPLE_CHARS
    ]
    assert len(eligible) > ROOM
    assert examples[-ROOM:] == eligible[-ROOM:]
    off = [r.routing_text for r in older if r.true_route == OUT_OF_DOMAIN]
    assert negatives[-(ROOM // 2) :] == off[-(ROOM // 2) :]

    # the real API server accepts the revision as it is
    kube("apply", "-n", namespace, "-f", str(fleet))
    kube("apply", "--dry-run=server", "-n", namespace, "-f", str(out / "revision.yaml"))
