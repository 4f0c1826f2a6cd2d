"""What a split request's response and record say about its parts: the review case a
part filed, the ledger and ladder facts of each part, the attempts, the metrics label."""

from __future__ import annotations

import httpx
import orjson
import pytest

from slmfleet.router import metrics as m
from slmfleet.router.app import RouterApp, Settings
from slmfleet.router.decision import Attempt, Decision
from slmfleet.router.errors import RouterError, UpstreamError
from slmfleet.router.routing import RouteDecision
from slmfleet.router.split_run import fold
from slmfleet.router.splitting import Part, Segment
from slmfleet.telemetry.record import record_from_decision, record_json
from tests.unit.router_fakes import CONFIG, cfg_with, make, run, words
from tests.unit.test_router_attempts import FakeReview

TWO = "tell me about the alpha thing, and also the beta thing please"
ASYNC_REVIEW = {
    "modelName": "s",
    "id": "ns/s",
    "specialists": ["ns/a", "ns/b"],
    "routing": {"split": {"enabled": True}},
    "cascade": [
        {"name": "routed", "routed": True},
        {"name": "review", "human": {"queue": "q", "mode": "async"}},
    ],
}


async def test_a_part_escalated_to_async_review_is_held_and_names_its_case():
    review = FakeReview()  # answers with the holding message, as ReviewService does in hold
    cfg = cfg_with(policies=[ASYNC_REVIEW], specialists=CONFIG["specialists"])
    snap, _pool, eng = make(
        {"ma": words("alpha answer", 0.95), "mb": UpstreamError("down")}, cfg, review=review
    )
    out, d = await run(eng, snap, TWO, model="s")
    ((_inp, policy, _wait),) = review.filed
    assert policy.mode == "hold"  # a part cannot turn the response into a 202
    assert out.status == 200 and out.text == "alpha answer \n\nheld"
    assert d.case_id == "c123" and d.human_queue == "q"
    headers = dict(d.headers())
    assert headers[b"x-slmfleet-review-case"] == b"c123"
    assert headers[b"x-slmfleet-human-review"] == b"q"
    parts = d.summary()["split"]
    assert [(p["review_case"], p["human_review"]) for p in parts] == [(None, None), ("c123", "q")]
    doc = record_json(record_from_decision(d, started_at=0.0, duration_s=0.1))
    assert doc["review"] == {"queue": "q", "case_id": "c123"}
    assert [(a["tier"], a["outcome"]) for a in doc["attempts"]] == [
        ("part1/routed", "accepted"),
        ("part2/routed", "failed"),
        ("part2/review", "accepted"),
    ]
    assert doc["attempts"][1]["target"] == "ns/b"


async def test_a_whole_request_still_gets_the_202():
    review = FakeReview(status=202)
    cfg = cfg_with(policies=[ASYNC_REVIEW], specialists=CONFIG["specialists"])
    snap, _pool, eng = make({"ma": UpstreamError("down")}, cfg, review=review)
    out, d = await run(eng, snap, "alpha only here", model="s")
    assert out.status == 202 and d.case_id == "c123" and "split" not in d.extra_headers


def _part(start: int, end: int, sid: str) -> Part:
    return Part(Segment(start, end, "x"), RouteDecision(sid, 0.9, "classifier"))


def test_fold_keeps_every_fact_any_part_carries():
    d = Decision("r")
    d.budget_step, d.budget_steps, d.budget_percent = "alert", ("ns/pol:alert@50",), 55
    one, two = Decision("r.1", split_part=True), Decision("r.2", split_part=True)
    one.tier, two.tier = "routed", "large"
    one.accepted, two.accepted = True, False
    one.ledger_available = False  # served on this replica's local count
    one.reasoning_halved = True
    one.attempts = [Attempt("routed", "accepted", target="ns/a")]
    one.budget_step, one.budget_steps, one.budget_percent = (
        "halveReasoning",
        ("ns/a-b:halveReasoning@80",),
        85,
    )
    two.budget_refusal = {"refused_by": ["ns/big-b"]}
    two.budget_step, two.budget_steps = "reject", ("ns/big-b:reject",)
    two.budget_exceeded = ("ns/big-b",)
    two.attempts = [Attempt("routed", "failed", ("error",)), Attempt("large", "skipped")]
    fold(d, [_part(0, 5, "ns/a"), _part(6, 9, "ns/b")], [one, two])
    assert not d.ledger_available and d.reasoning_halved and not d.accepted
    assert d.budget_refusal == {"refused_by": ["ns/big-b"]}
    assert d.budget_step == "reject" and d.budget_percent == 85
    assert d.budget_steps == ("ns/pol:alert@50", "ns/a-b:halveReasoning@80", "ns/big-b:reject")
    assert d.budget_exceeded == ("ns/big-b",)
    assert [(a.tier, a.outcome) for a in d.attempts] == [
        ("part1/routed", "accepted"),
        ("part2/routed", "failed"),
        ("part2/large", "skipped"),
    ]
    assert one.attempts[0].tier == "routed"  # the parts' own records are left alone
    headers = dict(d.headers())
    assert headers[b"x-slmfleet-ledger"] == b"unavailable"
    assert headers[b"x-slmfleet-reasoning-halved"] == b"true"
    assert headers[b"x-slmfleet-budget-step"] == b"reject"
    assert d.case_id is None and b"x-slmfleet-review-case" not in headers


def test_fold_joins_the_parts_review_cases():
    d = Decision("r")
    kids = [Decision(f"r.{i}", split_part=True) for i in (1, 2, 3)]
    kids[0].case_id, kids[0].human_queue = "c1", "q"
    kids[2].case_id, kids[2].human_queue = "c3", "q"
    fold(d, [_part(0, 1, "ns/a"), _part(2, 3, "ns/b"), _part(4, 5, "ns/a")], kids)
    assert d.case_id == "c1,c3" and d.human_queue == "q"


def test_the_metrics_tier_of_a_split_request_is_split():
    d = Decision("r")
    d.tier = "routed"
    assert d.metric_tier == "routed"
    fold(d, [_part(0, 1, "ns/a"), _part(2, 3, "ns/b")], [Decision("r.1"), Decision("r.2")])
    assert d.tier == "-,-" and d.metric_tier == "split"


async def test_a_split_request_is_counted_under_tier_split():
    cfg = cfg_with(
        policies=[{**ASYNC_REVIEW, "cascade": [{"name": "routed", "routed": True}]}],
        specialists=CONFIG["specialists"],
    )
    snap, _pool, eng = make({"ma": words("alpha answer", 0.95), "mb": words("beta answer")}, cfg)
    app = RouterApp(settings=Settings(), engine=eng)
    app.snapshot = snap

    def count(tier: str) -> float:
        return (
            m.REGISTRY.get_sample_value(
                "slmfleet_router_requests_total", {"policy": "s", "tier": tier, "status": "200"}
            )
            or 0.0
        )

    before = count("split")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c:
        r = await c.post(
            "/v1/chat/completions",
            json={"model": "s", "messages": [{"role": "user", "content": TWO}]},
        )
    assert r.status_code == 200 and r.headers["x-slmfleet-split"] == "2"
    assert r.headers["x-slmfleet-tier"] == "routed,routed"  # the header lists the parts
    assert orjson.loads(r.content)["choices"][0]["message"]["content"].count("answer") == 2
    assert count("split") == before + 1 and count("routed,routed") == 0.0


async def test_a_part_refused_by_its_budget_records_the_refusal():
    policy = {**ASYNC_REVIEW, "cascade": [{"name": "routed", "routed": True}]}
    budget = {
        "id": "ns/a-cash",
        "specialists": ["ns/a"],
        "spend": [{"window": "1h", "limitUsd": 0.000000001, "action": "reject"}],
        "perRequest": {"maxOutputTokens": 8},
    }
    cfg = cfg_with(policies=[policy], budgets=[budget], specialists=CONFIG["specialists"])
    snap, pool, eng = make({"ma": words("alpha answer"), "mb": words("beta answer")}, cfg)
    with pytest.raises(RouterError) as err:
        await run(eng, snap, TWO, model="s")
    d = err.value.decision
    assert err.value.status == 429 and "ma" not in [c[0] for c in pool.calls]
    assert d.budget_step == "reject" and "ns/a-cash/1h:reject" in d.budget_steps
    assert d.budget_refusal is not None and "ns/a-cash/1h" in d.budget_exceeded
    assert dict(d.headers())[b"x-slmfleet-budget-step"] == b"reject"
    assert [
        a["tier"]
        for a in record_json(record_from_decision(d, started_at=0.0, duration_s=0.1))["attempts"]
    ][:1] == ["part1/routed"]
