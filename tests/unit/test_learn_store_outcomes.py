"""Outcomes from the decision store's labelled rows, pure (and one real SQLite store)."""

from __future__ import annotations

import time

import pytest

from slmfleet.cli.main import main
from slmfleet.learn.outcomes import OUT_OF_DOMAIN
from slmfleet.learn.store_outcomes import StoreOutcomes, merged, outcome_of, outcomes_of
from slmfleet.telemetry.record import DecisionRecord, to_row
from slmfleet.telemetry.settings import ContentPolicy
from slmfleet.telemetry.store import FeedbackInput, open_store


def decision(**kw) -> dict:
    d = {
        "request_id": "r1",
        "time": 1_700_000_000.0,
        "policy": "support",
        "route": {"specialist": "shop/billing", "source": "classifier", "confidence": 0.8},
        "tier": "routed",
        "target": "shop/billing",
        "answer_confidence": 0.7,
        "cost_usd": 0.001,
    }
    return d | kw


def row(source="feedback", rating=None, label=None, **dec) -> dict:
    return {
        "source": source,
        "request_id": "r1",
        "policy": "support",
        "rating": rating,
        "correct_label": label,
        "decision": decision(**dec),
    }


@pytest.mark.parametrize(
    ("r", "want"),
    [
        # a positive rating: correct, and the route is confirmed
        (row(rating=1), {"outcome": "correct", "known_route": "shop/billing"}),
        (row(rating=-1), {"outcome": "incorrect", "known_route": None}),
        (row(rating=0), {"outcome": None}),
        # the feedback's label is the true label; out_of_domain marks an off-topic request
        (row(label="refund"), {"true_label": "refund", "true_route": None}),
        (row(label="out_of_domain"), {"true_label": None, "true_route": OUT_OF_DOMAIN}),
        # the raw confidences, when the policy had calibrators, are what outcomes carry
        (
            row(
                rating=1,
                route={"specialist": "shop/b", "confidence": 0.9, "raw_confidence": 0.6},
                raw_answer_confidence=0.4,
            ),
            {"routing_confidence": 0.6, "answer_confidence": 0.4},
        ),
        (row(rating=1), {"routing_confidence": 0.8, "answer_confidence": 0.7}),
        # escalated by routing: the best of the scores is the classifier's top specialist
        (
            row(
                label="out_of_domain",
                route={
                    "specialist": None,
                    "source": "out_of_domain",
                    "confidence": 0.2,
                    "scores": {"shop/a": 0.2, "shop/b": 0.1},
                },
            ),
            {"route": None, "best_route": "shop/a", "best_correct": False},
        ),
        # texts only with content full: the answer's label and the routing text
        (
            row(
                rating=1,
                answer={"text": "Refund: on its way", "chars": 18, "cut": False},
                routing_text={"text": "money back please", "chars": 17, "cut": False},
            ),
            {
                "answer_label": "refund",
                "routing_text": "money back please",
                "routing_text_cut": False,
            },
        ),
        # a routing text the log cut at its maxChars: kept for replay, marked cut
        (
            row(rating=1, routing_text={"text": "money back", "chars": 4000, "cut": True}),
            {"routing_text": "money back", "routing_text_cut": True},
        ),
        (
            row(rating=1, answer={"sha256": "ab", "chars": 3}),
            {"answer_label": None, "routing_text": None},
        ),
    ],
)
def test_outcome_of_a_labelled_row(r, want):
    rec = outcome_of(r)
    assert rec is not None and rec.request_id == "r1" and rec.policy == "support"
    for key, value in want.items():
        assert getattr(rec, key) == value, key


def test_rows_without_a_decision_are_skipped():
    assert outcome_of({"source": "feedback", "request_id": "x", "decision": None}) is None


def test_review_and_feedback_of_one_request_merge_review_first():
    fb = outcome_of(row(rating=-1, label="invoice"))
    rv = outcome_of(row(source="review", label="refund"))
    m = merged(fb, rv)
    assert (m.outcome, m.true_label, m.source) == ("incorrect", "refund", "review")
    recs = outcomes_of([row(source="review", label="refund"), row(rating=-1, label="invoice")])
    assert len(recs) == 1 and recs[0].true_label == "refund" and recs[0].outcome == "incorrect"


def test_outcomes_in_decision_order_and_only_labelled():
    rows = [
        row(rating=1) | {"request_id": "b"} | {"decision": decision(request_id="b", time=20.0)},
        row(rating=1) | {"request_id": "a"} | {"decision": decision(request_id="a", time=10.0)},
        row(rating=0) | {"request_id": "c"} | {"decision": decision(request_id="c", time=5.0)},
    ]
    assert [r.request_id for r in outcomes_of(rows)] == ["a", "b"]


def test_store_source_and_cli_read_a_real_sqlite_store(tmp_path):
    url = f"sqlite:///{tmp_path / 'decisions.db'}"
    store = open_store(url)
    full = ContentPolicy(content="full")
    now = time.time()
    for i in range(40):
        rec = DecisionRecord(
            request_id=f"r{i}",
            time=now + i,
            policy="support",
            route="shop/billing",
            route_source="classifier",
            routing_confidence=0.5 + i / 100,
            raw_routing_confidence=0.3 + i / 100,
            tier="routed",
            answer_confidence=0.9,
            answer=f"refund: case {i}",
            routing_text=f"money back {i}",
            content=full,
        )
        store.write_decisions([to_row(rec)])
        store.put_feedback(FeedbackInput(f"r{i}", rating=1 if i % 4 else -1), now + i)
    store.close()
    recs = list(StoreOutcomes(url).outcomes(policy="support"))
    assert len(recs) == 40
    assert recs[0].routing_confidence == pytest.approx(0.3) and recs[0].outcome == "incorrect"
    assert recs[1].answer_label == "refund" and recs[1].routing_text == "money back 1"
    assert list(StoreOutcomes(url).outcomes(policy="other")) == []
    out = tmp_path / "cal"
    assert main(["calibrate", "--store", url, "--out", str(out)]) == 0
    assert (out / "calibration.json").is_file()


def test_cli_wants_one_source(tmp_path, capsys):
    f = tmp_path / "o.jsonl"
    f.write_text("")
    assert main(["calibrate"]) == 2
    assert main(["calibrate", str(f), "--store", "sqlite:///x.db"]) == 2
    assert "either an OUTCOMES file or --store" in capsys.readouterr().out


def test_a_policys_outcomes_are_not_crowded_out_by_another_policys_volume(tmp_path):
    """The learning job reads its policy's newest rows: another tenant's older flood of
    feedback no longer fills the window (it used to read the oldest N of all)."""
    url = f"sqlite:///{tmp_path / 'decisions.db'}"
    store = open_store(url)
    now = time.time()
    rows = [("loud", i) for i in range(30)] + [("ns/quiet", 30 + i) for i in range(5)]
    for pol, i in rows:
        rec = DecisionRecord(request_id=f"r{i}", time=now + i, policy=pol, route="shop/billing",
                             route_source="classifier", routing_confidence=0.6, tier="routed",
                             answer="refund", content=ContentPolicy(content="full"))  # fmt: skip
        store.write_decisions([to_row(rec)])
        store.put_feedback(FeedbackInput(f"r{i}", rating=1), now + i)
    store.close()
    source = StoreOutcomes(url, limit=10)
    quiet = list(source.outcomes(policies=("quiet", "ns/quiet")))
    assert [r.request_id for r in quiet] == [f"r{i}" for i in range(30, 35)]
    assert list(source.outcomes(policy="ns/quiet")) == quiet
    loud = list(source.outcomes(policy="loud"))
    assert [r.request_id for r in loud] == [f"r{i}" for i in range(20, 30)]  # the newest 10
