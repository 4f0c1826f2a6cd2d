"""The decision record: built from the router's Decision, tier attempts from its
escalations, the content policy (off, hashed, full with a cap), the row layout."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest

from slmfleet.router.engine import Decision
from slmfleet.telemetry.privacy import content_field, content_hash
from slmfleet.telemetry.record import (
    COLUMNS,
    DecisionRecord,
    TierAttempt,
    attempts_from_escalations,
    record_from_decision,
    record_json,
    to_row,
)
from slmfleet.telemetry.settings import ContentPolicy


def outcomes(attempts: list[TierAttempt]) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(a.tier, a.outcome, a.reasons) for a in attempts]


@pytest.mark.parametrize(
    ("escalations", "tier", "accepted", "status", "want"),
    [
        ([], "small", True, 200, [("small", "accepted", ())]),
        (
            ["small:label_threshold:refund"],
            "large",
            True,
            200,
            [("small", "rejected", ("label_threshold:refund",)), ("large", "accepted", ())],
        ),
        (
            ["routing:out_of_domain"],
            "large",
            True,
            200,
            [("large", "accepted", ())],
        ),
        (
            ["small:validator:order-json", "small:low_answer_confidence", "large:error"],
            "small",
            False,
            200,
            [
                ("small", "returned", ("validator:order-json", "low_answer_confidence")),
                ("large", "failed", ("error",)),
            ],
        ),
        (
            ["small:low_routing_confidence", "vendor:budget_degrade", "review:timeout"],
            "-",
            True,
            504,
            [
                ("small", "skipped", ("low_routing_confidence",)),
                ("vendor", "skipped", ("budget_degrade",)),
                ("review", "failed", ("timeout",)),
            ],
        ),
        (
            ["a:circuit_open", "b:unready"],
            "c",
            True,
            200,
            [
                ("a", "failed", ("circuit_open",)),
                ("b", "failed", ("unready",)),
                ("c", "accepted", ()),
            ],
        ),
    ],
)
def test_attempts_from_escalations(escalations, tier, accepted, status, want):
    assert outcomes(attempts_from_escalations(escalations, tier, accepted, status)) == want


def test_failed_validators_are_recorded_as_false():
    [a] = attempts_from_escalations(["small:validator:json", "small:validator:len"], "x", True, 500)
    assert a.validators == {"json": False, "len": False}


def routed_decision() -> Decision:
    d = Decision("req-7")
    d.policy = d.metric_policy = "support"
    d.route, d.route_source, d.confidence = "shop/billing", "rule:refunds", 1.0
    d.tier, d.target, d.accepted = "large", "shop/generalist", True
    d.answer_confidence = 0.93
    d.prompt_tokens, d.completion_tokens, d.reasoning_tokens = 40, 12, 5
    d.cost_usd, d.truncated, d.degraded = 0.0031, True, True
    d.escalations = ["small:label_threshold:refund"]
    d.budget_exceeded = ("shop/b:1h",)
    d.upstream_s = 0.25
    return d


def test_record_from_the_routers_decision():
    r = record_from_decision(
        routed_decision(),
        started_at=1_700_000_000.0,
        duration_s=0.3,
        content=ContentPolicy(content="full", maxChars=8),
        prompt="I want a refund now",
        answer="Refunded.",
        route_scores={"shop/billing": 0.7},
        case_id=None,
    )
    doc = record_json(r)
    assert doc["route"] == {
        "specialist": "shop/billing",
        "source": "rule:refunds",
        "confidence": 1.0,
        "scores": {"shop/billing": 0.7},
    }
    assert (doc["tier"], doc["target"], doc["accepted"]) == ("large", "shop/generalist", True)
    assert doc["tokens"] == {"input": 40, "output": 12, "reasoning": 5}
    assert doc["latency_ms"] == {"total": 300.0, "router": 50.0, "upstream": 250.0}
    assert doc["budget"] == {"degraded": True, "exceeded": ["shop/b:1h"]}
    assert [a["outcome"] for a in doc["attempts"]] == ["rejected", "accepted"]
    assert doc["prompt"] == {"text": "I want a", "chars": 19, "cut": True}
    assert doc["answer"] == {"text": "Refunded", "chars": 9, "cut": True}
    assert doc["v"] == 1 and doc["truncated"] is True


def test_content_off_keeps_no_reference_to_the_text():
    r = record_from_decision(
        routed_decision(), started_at=0.0, duration_s=0.1, prompt="secret", answer="secret"
    )
    assert r.prompt is None and r.answer is None
    assert "prompt" not in record_json(r) and "answer" not in record_json(r)
    assert "secret" not in to_row(r)[-1]


@pytest.mark.parametrize(
    ("policy", "text", "want"),
    [
        (ContentPolicy(), "hi", None),
        (
            ContentPolicy(content="full", maxChars=10),
            "hi",
            {"text": "hi", "chars": 2, "cut": False},
        ),
        (ContentPolicy(content="full", maxChars=0), "hi", {"text": "", "chars": 2, "cut": True}),
        (ContentPolicy(content="full"), None, None),
    ],
)
def test_content_field(policy, text, want):
    assert content_field(text, policy) == want


def test_hashes_are_keyed_when_a_key_is_set():
    plain = content_field("hello", ContentPolicy(content="hashed"))
    keyed = content_field("hello", ContentPolicy(content="hashed"), b"k")
    assert plain == {"sha256": hashlib.sha256(b"hello").hexdigest(), "chars": 5}
    assert keyed["sha256"] == hmac.new(b"k", b"hello", hashlib.sha256).hexdigest()
    assert content_hash("hello", b"k") != content_hash("hello", b"other")


def test_row_matches_the_columns():
    r = DecisionRecord("r", 1.0, "p", error="x" * 5000)
    row = to_row(r)
    assert len(row) == len(COLUMNS)
    doc = orjson.loads(row[COLUMNS.index("record")])
    assert len(doc["error"]) == 2048  # bounded
    assert row[COLUMNS.index("request_id")] == "r"


def test_size_hint_counts_the_text_held():
    small = DecisionRecord("r", 0, "p")
    big = DecisionRecord("r", 0, "p", prompt="x" * 10_000, answer="y" * 500)
    assert big.size_hint() - small.size_hint() == 10_500
