"""The operator's learning loop on real parts: outcomes in a real decision store
(SQLite for the session's operator; PostgreSQL for the store source), the loop's child
process learning from them, and the proposals written through the status subresource
of the real API server, next to the fleet loop's conditions, without touching the spec."""

from __future__ import annotations

import time

import pytest

from slmfleet.cli.main import main
from slmfleet.learn.store_outcomes import StoreOutcomes
from slmfleet.telemetry.record import DecisionRecord, to_row
from slmfleet.telemetry.settings import ContentPolicy
from slmfleet.telemetry.store import FeedbackInput, open_store
from tests.fixtures.cluster import wait_for
from tests.learn_traffic import RISK, labelled, manifests

pytestmark = pytest.mark.integration


def fill_store(url: str, model: str, namespace: str, *, seed: int = 5) -> int:
    """Logged decisions of policy ``model`` with client feedback, as the router writes
    them with decisionLog content full: 9 in 10 in-domain requests routed right (their
    answers right, confident), the rest misrouted (the other specialist's label, wrong,
    less confident); off-topic
    requests escalated to the large tier and marked out_of_domain by feedback."""
    store = open_store(url)
    full = ContentPolicy(content="full")
    now = time.time() - 10_000
    n = 0
    try:
        for i, (text, spec, label) in enumerate(labelled(seed)):
            rid = f"{model}-{i}"
            if spec is None:
                rec = DecisionRecord(
                    request_id=rid, time=now + i, policy=model, route=None,
                    route_source="out_of_domain", routing_confidence=0.2, tier="large",
                    target=f"{namespace}/generalist", routing_text=text, content=full,
                    answer="I can help with that.",
                )  # fmt: skip
                fb = FeedbackInput(rid, label="out_of_domain")
            else:
                right = i % 10 != 0
                truth = f"{namespace}/{spec}"
                other = f"{namespace}/domain-{'shipping' if 'billing' in spec else 'billing'}"
                wrong = "tracking" if "billing" in spec else "invoice"  # the other's label
                rec = DecisionRecord(
                    request_id=rid, time=now + i, policy=model,
                    route=truth if right else other, route_source="classifier",
                    routing_confidence=0.9 if right else 0.5, tier="routed",
                    target=truth if right else other,
                    answer=f"{label}: done" if right else f"{wrong}: done",
                    answer_confidence=0.95 if right else 0.55,
                    routing_text=text, content=full, cost_usd=0.0001,
                )  # fmt: skip
                fb = FeedbackInput(rid, rating=1 if right else -1, label=label)
            store.write_decisions([to_row(rec)])
            store.put_feedback(fb, now + i + 0.5)
            n += 1
    finally:
        store.close()
    return n


def test_store_outcomes_on_postgresql(pg_url, tmp_path):
    n = fill_store(pg_url, "pg-support", "shop")
    recs = list(StoreOutcomes(pg_url).outcomes(policy="pg-support"))
    assert len(recs) == n
    assert sum(r.out_of_domain is True for r in recs) == 84
    assert all(r.routing_text for r in recs)
    right = [r for r in recs if r.outcome == "correct"]
    assert right and all(r.known_route == r.route for r in right)
    assert main(["calibrate", "--store", pg_url, "--out", str(tmp_path / "cal")]) == 0


def condition(body: dict, type_: str) -> dict:
    conditions = (body.get("status") or {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == type_), {})


def test_operator_proposes_in_the_status_and_never_changes_the_spec(
    kube, operator, namespace, learning_store_url
):
    model = f"support-{namespace}"
    docs = manifests(
        namespace,
        modelName=model,
        learning={"enabled": True, "intervalSeconds": 3600, "minOutcomes": 50, "risk": RISK},
    )
    for doc in docs:
        kube.apply(doc, namespace)
    applied = kube.get("routerpolicy", "support", namespace)
    # no outcomes yet: the loop says so
    body = wait_for(
        lambda: (
            (b := kube.get("routerpolicy", "support", namespace))
            and condition(b, "Learned").get("reason") == "TooFewOutcomes"
            and b
        ),
        timeout=120,
        what="Learned=False TooFewOutcomes",
    )
    assert "thresholdProposals" not in body["status"]
    fill_store(learning_store_url, model, namespace)
    # the next run is an hour away (intervalSeconds); a new object is learned at once
    kube("delete", "routerpolicy", "support", "-n", namespace)
    kube.apply(docs[-1], namespace)
    body = wait_for(
        lambda: (
            (b := kube.get("routerpolicy", "support", namespace))
            and condition(b, "Learned").get("status") == "True"
            and b
        ),
        timeout=300,
        what="Learned=True",
    )
    status = body["status"]
    learned = condition(body, "Learned")
    assert learned["reason"] == "Proposed" and "nothing is applied" in learned["message"]
    assert condition(body, "Ready"), "the fleet loop's conditions are kept"
    assert status["learning"]["outcomes"] == 336
    assert status["learning"]["learnedExamples"] > 0
    assert status["learning"]["learnedOutOfDomainExamples"] > 0
    paths = {p["path"] for p in status["thresholdProposals"]}
    assert "spec.routing.semantic.minConfidence" in paths
    # proposed on the scale of the calibration proposed with them, raw value alongside
    cal = status["learning"]["calibration"]
    assert cal["routing"]["method"] != "identity"
    routing = next(p for p in status["thresholdProposals"] if "label" not in p)
    assert routing["raw"] != routing["proposed"]
    assert all("evidence" not in p for p in status["thresholdProposals"])
    # proposed, never applied: the spec is as the user wrote it
    assert body["spec"] == applied["spec"]
    assert "calibration" not in body["spec"]
