"""Table tests of the router's pure decisions: routing, acceptance, cascade planning."""

from __future__ import annotations

import pytest

from slmfleet.api.routerconfig import AcceptanceConfig as Acceptance
from slmfleet.api.routerconfig import FallbackConfig as FallbackSpec
from slmfleet.api.routerconfig import RuleConfig as Rule
from slmfleet.api.routerconfig import TierConfig as CascadeTier
from slmfleet.api.routerconfig import ValidatorConfig as Validator
from slmfleet.router.acceptance import compile_acceptance, evaluate, label_of
from slmfleet.router.cascade import next_index, skip_reason, start_index
from slmfleet.router.routing import Candidate, choose_route, compile_rule

C = Candidate


@pytest.mark.parametrize(
    ("keywords", "regex", "text", "hit"),
    [
        (["refund"], None, "I want a REFUND now", True),
        (["refund"], None, "refunded already", False),  # whole words only
        (["c++"], None, "help with c++ code", True),
        (["c++"], None, "abc++ x", False),
        (["two words"], None, "say two words please", True),
        ([], r"order #\d+", "where is order #123", True),
        ([], r"order #\d+", "where is my order", False),
    ],
)
def test_rule_matching(keywords, regex, text, hit):
    rule = compile_rule(Rule(name="r", keywords=keywords, regex=regex, specialist="ns/a"))
    assert rule.matches(text) is hit


RULES = [compile_rule(Rule(name="billing-kw", keywords=["invoice"], specialist="ns/billing"))]
CANDS = {
    "ns/billing": C(True, 1.0),
    "ns/shipping": C(True, 0.5),
    "ns/big": C(True, 20.0),
    "ns/down": C(False, 0.1),
}


@pytest.mark.parametrize(
    ("text", "scores", "kw", "expected"),
    [
        # a rule wins before the classifier, with confidence 1
        ("my invoice", {"ns/shipping": 0.9}, {}, ("ns/billing", 1.0, "rule:billing-kw")),
        # classifier's best
        ("parcel", {"ns/billing": 0.2, "ns/shipping": 0.8}, {}, ("ns/shipping", 0.8, "classifier")),
        # below min confidence: out of domain
        ("hello", {"ns/billing": 0.2, "ns/shipping": 0.3}, {}, (None, 0.3, "out_of_domain")),
        # the best is unready: next best in domain
        ("x", {"ns/down": 0.95, "ns/billing": 0.7}, {}, ("ns/billing", 0.7, "classifier")),
        # only an unready one is in domain
        ("x", {"ns/down": 0.95, "ns/billing": 0.1}, {}, (None, 0.95, "unready")),
        # cost-aware: cheaper within tolerance
        (
            "x",
            {"ns/big": 0.9, "ns/shipping": 0.87},
            {"cost_aware": True, "tolerance": 0.05},
            ("ns/shipping", 0.87, "cost"),
        ),
        # cost-aware: cheaper but too far below
        (
            "x",
            {"ns/big": 0.9, "ns/shipping": 0.7},
            {"cost_aware": True, "tolerance": 0.05},
            ("ns/big", 0.9, "classifier"),
        ),
        # degrade: cheapest in domain whatever the tolerance
        ("x", {"ns/big": 0.9, "ns/shipping": 0.6}, {"degrade": True}, ("ns/shipping", 0.6, "cost")),
        # semantic routing off, several specialists: out of domain
        ("x", None, {}, (None, 0.0, "out_of_domain")),
    ],
)
def test_choose_route(text, scores, kw, expected):
    d = choose_route(text, rules=RULES, scores=scores, candidates=CANDS, min_confidence=0.5, **kw)
    assert (d.specialist, d.confidence, d.source) == expected


def test_rule_to_unready_specialist_falls_through_and_classifier_is_lazy():
    calls = []
    rules = [compile_rule(Rule(name="r", keywords=["x"], specialist="ns/down"))]

    def scores():
        calls.append(1)
        return {"ns/billing": 0.9}

    d = choose_route("x", rules=rules, scores=scores, candidates=CANDS, min_confidence=0.5)
    assert d.specialist == "ns/billing" and calls == [1]
    d = choose_route("invoice", rules=RULES, scores=scores, candidates=CANDS, min_confidence=0.5)
    assert d.source == "rule:billing-kw" and calls == [1]  # classifier not called


def test_single_specialist_without_classifier():
    d = choose_route(
        "x", rules=[], scores=None, candidates={"ns/a": C(True, 0)}, min_confidence=0.5
    )
    assert (d.specialist, d.confidence, d.source) == ("ns/a", 1.0, "only")


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("refund: This is a refund request.", "refund"),
        ("  Invoice.", "invoice"),
        ('{"label": "Payment_Method", "x": 1}', "payment_method"),
        ('{"x": 1}', "x"),  # JSON without a label: first word, punctuation stripped
        ("", ""),
    ],
)
def test_label_of(answer, label):
    assert label_of(answer) == label


SCHEMA = {"type": "object", "required": ["order_id"]}


@pytest.mark.parametrize(
    ("acc", "rc", "answer", "conf", "reasons"),
    [
        (Acceptance(), 0.1, "anything", None, ()),
        (Acceptance(min_routing_confidence=0.8), 0.7, "a", None, ("low_routing_confidence",)),
        (Acceptance(min_answer_confidence=0.8), 1.0, "a", 0.79, ("low_answer_confidence",)),
        (Acceptance(min_answer_confidence=0.8), 1.0, "a", 0.8, ()),
        # no confidence reported: thresholds do not apply
        (Acceptance(min_answer_confidence=0.8), 1.0, "a", None, ()),
        # asymmetric per-label thresholds replace the tier minimum
        (
            Acceptance(min_answer_confidence=0.5, label_thresholds={"refund": 0.97}),
            1.0,
            "refund: yes",
            0.9,
            ("label_threshold:refund",),
        ),
        (
            Acceptance(min_answer_confidence=0.95, label_thresholds={"greeting": 0.8}),
            1.0,
            "greeting: hi",
            0.85,
            (),
        ),
        (
            Acceptance(validators=[Validator(name="j", json_schema=SCHEMA)]),
            1.0,
            '{"order_id": "A-1"}',
            None,
            (),
        ),
        (
            Acceptance(validators=[Validator(name="j", json_schema=SCHEMA)]),
            1.0,
            '```json\n{"order_id": "A-1"}\n```',
            None,
            (),
        ),
        (
            Acceptance(validators=[Validator(name="j", json_schema=SCHEMA)]),
            1.0,
            '{"email": "x"}',
            None,
            ("validator:j",),
        ),
        (
            Acceptance(validators=[Validator(name="j", json_schema=SCHEMA)]),
            1.0,
            "not json",
            None,
            ("validator:j",),
        ),
        (Acceptance(validators=[Validator(name="yn", regex="(yes|no)")]), 1.0, " yes ", None, ()),
        (
            Acceptance(validators=[Validator(name="yn", regex="(yes|no)")]),
            1.0,
            "yes!",
            None,
            ("validator:yn",),
        ),
        (
            Acceptance(
                min_routing_confidence=0.9,
                min_answer_confidence=0.9,
                validators=[Validator(name="yn", regex="yes")],
            ),
            0.5,
            "no",
            0.1,
            ("low_routing_confidence", "validator:yn", "low_answer_confidence"),
        ),
    ],
)
def test_evaluate(acc, rc, answer, conf, reasons):
    assert (
        evaluate(
            compile_acceptance(acc), routing_confidence=rc, answer=answer, answer_confidence=conf
        )
        == reasons
    )


def T(name, **kw):
    return CascadeTier(name=name, **kw)


TIERS = [
    T("routed", routed=True),
    T("large", specialist="ns/big"),
    T("vendor", external={"base_url": "https://x.example/v1", "model": "m"}),
    T("review", human={}),
]


@pytest.mark.parametrize(
    ("fallback", "routed", "expected"),
    [
        (None, True, 0),
        (None, False, 1),  # out of domain: the tier after the routed one
        (FallbackSpec(on_unknown_domain="review"), False, 3),
        (FallbackSpec(on_unknown_domain="nope"), False, 1),
    ],
)
def test_start_index(fallback, routed, expected):
    assert start_index(TIERS, fallback, routed) == expected


def test_start_index_routed_last_tier_has_nowhere_to_go():
    assert start_index([T("only", routed=True)], None, False) is None


@pytest.mark.parametrize(
    ("fallback", "current", "failed", "expected"),
    [
        (None, 0, False, 1),
        (None, 0, True, 1),
        (FallbackSpec(on_error="review"), 0, True, 3),
        (FallbackSpec(on_error="review"), 0, False, 1),  # escalation is not an error
        (FallbackSpec(on_error="routed"), 1, True, 2),  # never backwards
        (None, 3, False, None),
    ],
)
def test_next_index(fallback, current, failed, expected):
    assert next_index(TIERS, fallback, current, failed=failed) == expected


@pytest.mark.parametrize(
    ("tier", "routed", "degrade", "reason"),
    [
        (0, None, False, "out_of_domain"),
        (0, "ns/small", True, None),
        (1, "ns/small", False, None),
        (1, "ns/small", True, "budget_degrade"),  # costlier than the routed one
        (1, "ns/huge", True, None),  # not costlier
        (2, "ns/small", True, "budget_degrade"),  # external
        (3, "ns/small", True, None),  # human review stays
    ],
)
def test_skip_reason(tier, routed, degrade, reason):
    cost = {"ns/small": 1.0, "ns/big": 10.0, "ns/huge": 50.0}
    assert (
        skip_reason(TIERS[tier], routed_specialist=routed, degrade=degrade, cost_of=cost) == reason
    )
