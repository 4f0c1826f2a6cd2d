"""Replay, candidate examples, cross-fitting and the proposal documents, as tables."""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import pytest

from slmfleet.api.policy import RouterPolicySpec
from slmfleet.api.routerconfig import DomainConfig
from slmfleet.api.specialist import SLMSpecialistSpec
from slmfleet.learn.outcomes import OUT_OF_DOMAIN, OutcomeRecord
from slmfleet.learn.propose import Proposal, revise, status_patch
from slmfleet.learn.recommend import Recommendation
from slmfleet.learn.relearn import (
    MAX_EXAMPLE_CHARS,
    MAX_EXAMPLES,
    MAX_NEGATIVE_CHARS,
    MAX_NEGATIVES,
    candidates,
    cross_fitted,
    extended,
    split,
)
from slmfleet.learn.replay import observed_costs, replay, replayable


def rec(i, text, truth, **kw) -> OutcomeRecord:
    return OutcomeRecord.model_validate(
        {"request_id": f"r{i}", "policy": "p", "routing_text": text, "true_route": truth} | kw
    )


RECORDS = [
    rec(0, "refund me", "a", target="a", cost_usd=0.01),
    rec(1, "where is my parcel", "b", target="b", cost_usd=0.03),
    rec(2, "tell me a joke", OUT_OF_DOMAIN, target="human:q", cost_usd=0.5),
    rec(3, "refund please", "a", route_source="rule:refunds"),
    rec(4, "weather?", OUT_OF_DOMAIN),
]
SCORES = [
    {"a": 0.9, "b": 0.1},  # right, confident
    {"a": 0.6, "b": 0.2},  # wrong route above the threshold: a misroute
    {"a": 0.1, "b": 0.2},  # out of domain, escalated at 0.3
    {"a": 1.0, "b": 0.0},
    {"a": 0.35, "b": 0.0},  # out of domain, let through at 0.3
]


def test_replay_table():
    rows = replayable(RECORDS)
    assert [r.request_id for r in rows] == ["r0", "r1", "r2", "r4"]  # the rule is not replayed
    scores = [SCORES[int(r.request_id[1:])] for r in rows]
    costs = observed_costs(RECORDS)
    assert costs == {"a": 0.01, "b": 0.03, "human:q": 0.5}
    res = replay("now", rows, scores, 0.3, specialists=["a", "b"], costs=costs, escalation_cost=0.5)
    assert res.routed == {"a": 3} and res.escalated == 1 and res.misrouted == 1
    assert res.in_scope_accuracy == 0.5 and res.ood_recall == 0.5
    assert res.escalation_rate == 0.25
    assert res.cost_per_thousand_usd == pytest.approx(1000 * (0.01 * 3 + 0.5) / 4)
    strict = replay("strict", rows, scores, 0.95, specialists=["a", "b"], costs=costs)
    assert strict.escalated == 4 and strict.ood_recall == 1.0 and strict.in_scope_accuracy == 0
    assert strict.cost_per_thousand_usd is None  # escalation cost unknown
    lo, hi = res.in_scope_interval
    assert lo < 0.5 < hi
    with pytest.raises(ValueError):
        replay("x", rows, scores[:2], 0.3, specialists=["a"])


def test_candidates_rules():
    domains = {"a": DomainConfig(examples=["refund me"]), "b": DomainConfig()}
    recs = [
        rec(0, "refund me", "a"),  # already an example
        rec(1, "money back", "a"),
        rec(2, "money back", "a"),  # duplicate
        rec(3, "parcel late", None, outcome="correct", route="b"),  # feedback-confirmed
        rec(4, "parcel lost", None, outcome="incorrect", route="b"),  # route unknown
        rec(5, "joke", OUT_OF_DOMAIN),
        rec(6, "cancel plan", None, outcome="correct", route="a", route_source="rule:x"),
        rec(7, "", "a"),
        rec(8, "elsewhere", "c"),
        rec(9, "refund for order 12 and also", "a", routing_text_cut=True),
    ]
    c = candidates(recs, domains, negatives=["weather"])
    assert c.examples == {"a": ["money back"], "b": ["parcel late"]}
    assert c.negatives == ["joke"]
    assert c.skipped == {
        "already an example": 2,
        "route not known": 1,
        "confirmed only a rule's route": 1,
        "no routing text": 1,
        "routing text cut by the decision log": 1,
        "route is not one of the policy's specialists": 1,
    }
    big = {"a": DomainConfig(examples=[f"e{i}" for i in range(MAX_EXAMPLES - 1)])}
    c = candidates([rec(i, f"new {i}", "a") for i in range(3)], big)
    assert c.count == 1 and c.skipped == {"bound reached": 2}
    assert extended(domains, candidates(recs, domains)).get("a").examples == [
        "refund me",
        "money back",
    ]


def test_split_holds_back_the_newest():
    recs = [rec(i, f"t{i}", "a", time=f"2026-01-01T00:00:{59 - i:02d}Z") for i in range(10)]
    older, newest = split(recs, 0.2)
    assert [r.request_id for r in newest] == ["r1", "r0"]
    assert len(older) == 8 and {r.request_id for r in older}.isdisjoint({"r0", "r1"})
    with pytest.raises(ValueError):
        split(recs, 1.0)


@dataclass
class Pred:
    best: str
    confidence: float
    scores: dict


def test_cross_fitting_never_scores_a_fold_with_its_own_examples():
    seen: list[tuple[set[str], set[str]]] = []

    def fit(domains, negatives):
        known = {t for d in domains.values() for t in d.examples} | set(negatives)
        seen.append(known)

        class Clf:
            def predict_many(self, texts):
                for t in texts:
                    assert t not in known, f"{t} was learned by the model scoring it"
                return [Pred("a", 0.5, {"a": 0.5}) for _ in texts]

        return Clf()

    recs = [rec(i, f"text {i}", "a" if i % 3 else OUT_OF_DOMAIN) for i in range(20)]
    out = cross_fitted(recs, {"a": DomainConfig(examples=["seed"])}, [], fit, folds=5)
    assert len(out) == 20 and len(seen) == 5
    assert all(r.routing_confidence == 0.5 and r.route_source == "classifier" for r in out)


POLICY = {
    "apiVersion": "slmfleet.io/v1alpha1",
    "kind": "RouterPolicy",
    "metadata": {
        "name": "support",
        "uid": "x",
        "resourceVersion": "9",
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
    },
    "spec": {
        "specialists": {"names": ["a"]},
        "cascade": [
            {"name": "routed", "routed": True, "accept": {"labelThresholds": {"Refund": 0.9}}}
        ],
    },
    "status": {"conditions": []},
}


def _rec(kind, proposed, **kw):
    return Recommendation(
        kind=kind,
        path="p",
        target="t",
        confidence=0.95,
        samples=10,
        proposed=proposed,
        bound=0.01,
        **kw,
    )


def test_revise_and_status():
    p = Proposal(
        policy="support",
        recommendations=[
            _rec("routing_threshold", 0.25),
            _rec("label_threshold", 0.97, tier="routed", label="refund"),
            _rec("label_threshold", None, tier="routed", label="sizing", refused="too few"),
        ],
        new_examples={"a": ["x"]},
        new_negatives=["joke"],
    )
    spec_a = {
        "apiVersion": "slmfleet.io/v1alpha1",
        "kind": "SLMSpecialist",
        "metadata": {"name": "a"},
        "spec": {"domain": {"examples": ["e"]}},
    }
    docs = revise(POLICY, {"a": spec_a}, p)
    pol = docs[0]
    assert "status" not in pol and set(pol["metadata"]) == {"name"}
    assert pol["spec"]["routing"]["semantic"] == {
        "minConfidence": 0.25,
        "outOfDomainExamples": ["joke"],
    }
    assert pol["spec"]["cascade"][0]["accept"]["labelThresholds"] == {"Refund": 0.97}
    assert docs[1]["spec"]["domain"]["examples"] == ["e", "x"]
    assert POLICY["spec"]["cascade"][0]["accept"]["labelThresholds"] == {"Refund": 0.9}  # a copy
    st = status_patch(p)["status"]
    assert [x["proposed"] for x in st["thresholdProposals"]] == [0.25, 0.97]
    assert st["learning"]["refusals"] == ["p: too few"]
    assert st["learning"]["learnedExamples"] == 1
    p.recommendations.append(_rec("label_threshold", 0.5, tier="nope", label="x"))
    with pytest.raises(ValueError, match="no cascade tier 'nope'"):
        revise(POLICY, {"a": spec_a}, p)
    with pytest.raises(ValueError, match="no SLMSpecialist 'zz'"):
        revise(
            POLICY, {}, Proposal(policy="support", recommendations=[], new_examples={"zz": ["t"]})
        )


def test_the_bounds_are_the_apis():
    """Read from the models the CRDs are generated from (2,000 items of 1,024 characters
    today): a changed bound in the API moves these with it."""
    assert (MAX_EXAMPLES, MAX_EXAMPLE_CHARS) == (2000, 1024)
    assert (MAX_NEGATIVES, MAX_NEGATIVE_CHARS) == (2000, 1024)


def at(i: int) -> str:
    return f"2026-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"


def test_a_bound_that_binds_keeps_the_newest_and_the_revision_validates():
    """The audit's case: 1,990 examples and 50 candidates, the newest of them 1,439
    characters long; 1,997 out-of-domain examples and 6 candidates. The long text is
    skipped (never trimmed), the newest candidates that fit are kept, and the revised
    documents validate against the API models."""
    have = [f"e{i}" for i in range(MAX_EXAMPLES - 10)]
    negs = [f"n{i}" for i in range(MAX_NEGATIVES - 3)]
    long_text = "long text " * 144
    recs = [rec(i, f"new {i}", "a", time=at(i)) for i in range(49)]
    recs += [rec(49, long_text, "a", time=at(49))]
    recs += [rec(50 + i, f"off {i}", OUT_OF_DOMAIN, time=at(50 + i)) for i in range(6)]
    random.Random(0).shuffle(recs)  # decision time decides, not input order
    c = candidates(recs, {"a": DomainConfig(examples=have)}, negs)
    assert c.examples == {"a": [f"new {i}" for i in range(39, 49)]}  # in decision order
    assert c.negatives == ["off 3", "off 4", "off 5"]
    assert c.skipped == {"longer than the API's 1024 characters": 1, "bound reached": 39 + 3}

    policy = copy.deepcopy(POLICY)
    policy["spec"]["routing"] = {"semantic": {"outOfDomainExamples": negs}}
    specialist = {
        "apiVersion": "slmfleet.io/v1alpha1",
        "kind": "SLMSpecialist",
        "metadata": {"name": "a"},
        "spec": {
            "model": {"uri": "pvc://models/a", "backend": "python"},
            "domain": {"examples": have},
        },
    }
    p = Proposal(
        policy="support", recommendations=[], new_examples=c.examples, new_negatives=c.negatives
    )
    pol, spec_a = revise(policy, {"a": specialist}, p)
    assert len(spec_a["spec"]["domain"]["examples"]) == MAX_EXAMPLES
    assert len(pol["spec"]["routing"]["semantic"]["outOfDomainExamples"]) == MAX_NEGATIVES
    SLMSpecialistSpec.model_validate(spec_a["spec"])
    RouterPolicySpec.model_validate(pol["spec"])


@pytest.mark.parametrize(
    ("have", "new", "per_run", "kept"),
    [
        (0, 5, 1000, 5),  # room for all
        (MAX_EXAMPLES - 2, 5, 1000, 2),  # the API's bound binds
        (MAX_EXAMPLES, 5, 1000, 0),  # full
        (MAX_EXAMPLES + 3, 5, 1000, 0),  # over (examplesFrom lines count): nothing added
        (0, 5, 3, 3),  # the per-run bound binds
    ],
)
def test_room_table(have, new, per_run, kept):
    domains = {"a": DomainConfig(examples=[f"e{i}" for i in range(have)])}
    recs = [rec(i, f"new {i}", "a", time=at(i)) for i in range(new)]
    c = candidates(recs, domains, max_per_domain=per_run)
    assert c.examples.get("a", []) == [f"new {i}" for i in range(new - kept, new)]
    assert c.skipped.get("bound reached", 0) == new - kept
