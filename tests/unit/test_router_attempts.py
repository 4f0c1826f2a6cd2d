"""Every tier a request reaches is one Attempt on its Decision (what the decision log
keeps): the outcome, why it escalated, validator results, latency, tokens and cost of
that tier alone; the record built from it; and the human tier filing through a review
service (a stand-in here: the real one is tested on SQLite/PostgreSQL)."""

from __future__ import annotations

import pytest

from slmfleet.router.decision import Decision
from slmfleet.router.errors import RouterError, UpstreamError
from slmfleet.router.protocol import parse_chat
from slmfleet.telemetry.record import record_from_decision, record_json
from slmfleet.telemetry.review.cases import Case
from slmfleet.telemetry.review.service import HumanOutcome
from slmfleet.telemetry.store import StoreUnavailable
from tests.unit.router_fakes import CONFIG, Clock, cfg_with, make, run, spec, words

EXTRACT = cfg_with(
    policies=[
        {
            "modelName": "x",
            "id": "ns/x",
            "specialists": ["ns/a"],
            "routing": {"semantic": {"enabled": False}},
            "cascade": [
                {
                    "name": "small",
                    "routed": True,
                    "accept": {
                        "validators": [
                            {"name": "has-id", "regex": ".*id.*"},
                            {"name": "json", "jsonSchema": {"type": "object"}},
                        ]
                    },
                },
                {"name": "large", "specialist": "ns/big"},
            ],
        }
    ]
)


def outcomes(d):
    return [(a.tier, a.outcome, a.reasons) for a in d.attempts]


async def test_accepted_first_tier_is_one_attempt_with_its_own_usage():
    snap, _pool, eng = make({"ma": words("alpha answer", 0.95)})
    out, d = await run(eng, snap, "alpha question")
    assert outcomes(d) == [("routed", "accepted", ())]
    a = d.attempts[0]
    assert a.target == "ns/a" and a.answer == out.text and a.answer_confidence == 0.95
    assert a.completion_tokens == d.completion_tokens == 2
    assert a.prompt_tokens == d.prompt_tokens > 0
    assert a.cost_usd == pytest.approx(d.cost_usd) and a.cost_usd > 0
    assert a.latency_s is not None and a.latency_s >= 0 and a.validators is None
    assert d.route_scores == {"ns/a": 0.9, "ns/b": 0.1}


async def test_rejected_then_accepted_splits_tokens_per_tier():
    snap, _pool, eng = make({"ma": words("alpha maybe", 0.3), "mbig": words("big one two")})
    _out, d = await run(eng, snap, "alpha question")
    assert outcomes(d) == [
        ("routed", "rejected", ("low_answer_confidence",)),
        ("large", "accepted", ()),
    ]
    small, large = d.attempts
    assert small.completion_tokens == 2 and large.completion_tokens == 3
    assert small.completion_tokens + large.completion_tokens == d.completion_tokens
    assert small.answer == "alpha maybe " and large.target == "ns/big"
    assert small.cost_usd > 0 and large.cost_usd == 0  # ns/big has no price


async def test_failed_tier_then_next_with_the_failure_reason():
    snap, _pool, eng = make({"ma": UpstreamError("down"), "mbig": words("ok")})
    _out, d = await run(eng, snap, "alpha question")
    assert outcomes(d) == [("routed", "failed", ("error",)), ("large", "accepted", ())]
    assert d.attempts[0].answer is None and d.attempts[0].target == "ns/a"


async def test_validator_results_name_every_validator():
    snap, _pool, eng = make({"ma": words('{"id": 1}'), "mbig": words("fine")}, EXTRACT)
    _out, d = await run(eng, snap, "anything", model="x")
    assert outcomes(d) == [("small", "accepted", ())]
    assert d.attempts[0].validators == {"has-id": True, "json": True}
    snap, _pool, eng = make({"ma": words("no"), "mbig": words("fine")}, EXTRACT)
    _out, d = await run(eng, snap, "anything", model="x")
    assert d.attempts[0].validators == {"has-id": False, "json": False}
    assert d.attempts[0].reasons == ("validator:has-id", "validator:json")
    snap, _pool, eng = make({"ma": words("an id"), "mbig": words("fine")}, EXTRACT)
    _out, d = await run(eng, snap, "anything", model="x")
    assert d.attempts[0].validators == {"has-id": True, "json": False}


async def test_nothing_passes_the_returned_answer_is_marked():
    cfg = cfg_with(
        policies=[
            {
                "modelName": "p",
                "id": "ns/p",
                "specialists": ["ns/a"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [
                    {"name": "small", "routed": True, "accept": {"minAnswerConfidence": 0.9}},
                    {"name": "large", "specialist": "ns/big"},
                ],
            }
        ]
    )
    snap, _pool, eng = make({"ma": words("meh", 0.2), "mbig": UpstreamError("down")}, cfg)
    out, d = await run(eng, snap, "q")
    assert out.text == "meh " and d.tier == "small" and not d.accepted
    assert outcomes(d) == [
        ("small", "returned", ("low_answer_confidence",)),
        ("large", "failed", ("error",)),
    ]


async def test_skipped_tiers_are_attempts_that_were_not_called():
    cfg = {**CONFIG, "policies": [dict(CONFIG["policies"][0], fallback=None)]}
    cfg["policies"][0]["cascade"] = [
        {"name": "routed", "routed": True},
        {"name": "gated", "specialist": "ns/b", "accept": {"minRoutingConfidence": 0.99}},
        {"name": "large", "specialist": "ns/big"},
    ]
    snap, pool, eng = make({"ma": UpstreamError("down"), "mbig": words("big")}, cfg)
    _out, d = await run(eng, snap, "alpha question")  # routed at 0.9 < 0.99
    assert outcomes(d) == [
        ("routed", "failed", ("error",)),
        ("gated", "skipped", ("low_routing_confidence",)),
        ("large", "accepted", ()),
    ]
    assert [c[0] for c in pool.calls] == ["ma", "mbig"]  # ns/b was never called
    gated = d.attempts[1]
    assert gated.latency_s is None and gated.target is None and gated.prompt_tokens is None


async def test_deadline_passed_before_a_tier_is_a_skipped_attempt():
    clock = Clock()

    def slow(answer):
        def go(prompt, sampling):
            clock.t += 10  # the tier answers after the request's time is up
            return answer

        return go

    snap, _pool, eng = make(
        {"ma": slow(words("alpha maybe", 0.3)), "mbig": words("big")}, clock=clock
    )
    req = parse_chat(
        {"model": "p", "messages": [{"role": "user", "content": "alpha"}]}, max_messages=8
    )
    d = Decision("rid")
    out = await eng.run(snap, req, d, deadline=clock.t + 5)
    assert out.text == "alpha maybe " and not d.accepted
    assert outcomes(d) == [
        ("routed", "returned", ("low_answer_confidence",)),
        ("large", "skipped", ("timeout",)),
    ]
    # A failure past the deadline ends the cascade there: nothing after it is listed.
    snap, _pool, eng = make({"ma": slow(UpstreamError("slow")), "mbig": words("big")}, clock=clock)
    d = Decision("rid2")
    with pytest.raises(RouterError):
        await eng.run(snap, req, d, deadline=clock.t + 5)
    assert outcomes(d) == [("routed", "failed", ("error",))]


async def test_the_record_keeps_attempts_scores_stage_and_case():
    snap, _pool, eng = make({"ma": words("alpha maybe", 0.3), "mbig": words("big")})
    _out, d = await run(eng, snap, "alpha question")
    d.classifier_stage = "full"
    rec = record_from_decision(d, started_at=1.0, duration_s=0.02)
    doc = record_json(rec)
    assert doc["route"]["scores"] == {"ns/a": 0.9, "ns/b": 0.1}
    assert doc["route"]["stage"] == "full"
    first, second = doc["attempts"]
    assert first["outcome"] == "rejected" and first["reasons"] == ["low_answer_confidence"]
    assert first["latency_ms"] >= 0 and first["completion_tokens"] == 2
    assert first["answer_confidence"] == 0.3 and "answer" not in first  # never the text
    assert second["outcome"] == "accepted" and second["target"] == "ns/big"
    assert "prompt" not in doc and "answer" not in doc  # content off by default


# -- the human tier ---------------------------------------------------------------------


class FakeReview:
    """Records what the tier files; answers like ReviewService (or raises)."""

    def __init__(self, status=200, text="held", fail=False):
        self.filed = []
        self.status, self.text, self.fail = status, text, fail

    async def answer(self, inp, policy, *, max_wait_s=None):
        if self.fail:
            raise StoreUnavailable("database is down")
        self.filed.append((inp, policy, max_wait_s))
        case = Case(
            id="c123",
            queue=inp.queue,
            policy=inp.policy,
            request_id=inp.request_id,
            status="open",
            created_at=0.0,
            sla_due_at=1.0,
            reason="",
        )
        text = None if self.status == 202 else self.text
        return HumanOutcome(case, self.status, text, False, "/v1/cases/c123")


REVIEW = cfg_with(
    policies=[
        {
            "modelName": "r",
            "id": "ns/r",
            "specialists": ["ns/a"],
            "routing": {"semantic": {"enabled": False}},
            "cascade": [
                {"name": "small", "routed": True, "accept": {"minAnswerConfidence": 0.9}},
                {
                    "name": "review",
                    "human": {"queue": "q", "mode": "async"},
                    "timeoutMs": 5000,
                },
                {"name": "large", "specialist": "ns/big"},
            ],
        }
    ],
    specialists=[spec("a", "ma"), spec("big", "mbig")],
)


async def test_human_tier_files_the_conversation_and_earlier_answers():
    review = FakeReview()
    snap, _pool, eng = make({"ma": words("refund maybe", 0.4)}, REVIEW, review=review)
    out, d = await run(eng, snap, "I want my money", model="r")
    ((inp, policy, max_wait),) = review.filed
    assert inp.conversation == [{"role": "user", "content": "I want my money"}]
    assert inp.answers == [
        {
            "tier": "small",
            "target": "ns/a",
            "answer": "refund maybe ",
            "confidence": 0.4,
            "reasons": ["low_answer_confidence"],
        }
    ]
    assert inp.escalations == ("small:low_answer_confidence",) and inp.queue == "q"
    assert policy.mode == "async" and 0 < max_wait <= 5.0  # the tier's own time
    assert out.status == 200 and out.text == "held"
    assert d.case_id == "c123" and d.target == "human:q"
    assert (b"x-slmfleet-review-case", b"c123") in d.headers()


async def test_async_mode_answers_202_with_the_case_url():
    review = FakeReview(status=202)
    snap, _pool, eng = make({"ma": words("refund maybe", 0.4)}, REVIEW, review=review)
    out, d = await run(eng, snap, "I want my money", model="r")
    assert out.status == 202 and out.location == "/v1/cases/c123"
    assert out.body["id"] == "c123" and out.body["object"] == "review.case"
    assert d.accepted and outcomes(d)[-1] == ("review", "accepted", ())


async def test_a_stream_cannot_get_a_202_and_is_held():
    review = FakeReview()
    snap, _pool, eng = make({"ma": words("refund maybe", 0.4)}, REVIEW, review=review)
    sent = []

    async def emit(text):
        sent.append(text)

    await run(eng, snap, "I want my money", model="r", emit=emit, stream=True)
    ((_inp, policy, _w),) = review.filed
    assert policy.mode == "hold" and "".join(sent) == "held"


async def test_store_down_fails_the_human_tier_like_any_other():
    review = FakeReview(fail=True)
    snap, _pool, eng = make(
        {"ma": words("maybe", 0.4), "mbig": words("big")}, REVIEW, review=review
    )
    out, d = await run(eng, snap, "hello", model="r")
    assert out.text == "big " and d.tier == "large" and d.case_id is None
    assert ("review", "failed", ("review_unavailable",)) in outcomes(d)
