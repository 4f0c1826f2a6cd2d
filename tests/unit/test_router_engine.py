"""The engine over a scripted upstream: routing, acceptance, escalation, the trace budget."""

from __future__ import annotations

import pytest

from slmfleet.router.errors import RouterError, UpstreamError
from tests.unit.router_fakes import (
    CONFIG,
    cfg_with,
    make,
    run,
    words,
)


async def test_routes_and_accepts():
    snap, _pool, eng = make({"ma": words("alpha answer", 0.95)})
    out, d = await run(eng, snap, "about alpha")
    assert out.text == "alpha answer " and d.route == "ns/a" and d.tier == "routed"
    # The backend's counts (the fake counts words, as the stand-ins do).
    assert d.escalations == [] and d.prompt_tokens == 2 and d.completion_tokens == 2
    assert d.cost_usd == pytest.approx((2 * 1 + 2 * 2) / 1e6)


async def test_low_answer_confidence_escalates_with_reason():
    snap, _pool, eng = make({"mb": words("unsure", 0.3), "mbig": words("sure", 0.99)})
    out, d = await run(eng, snap, "beta thing")
    assert out.text.strip() == "sure" and d.tier == "large" and d.target == "ns/big"
    assert d.escalations == ["routed:low_answer_confidence"]


async def test_out_of_domain_and_errors_fall_through_to_human():
    snap, _pool, eng = make({"mbig": UpstreamError("boom")})
    out, d = await run(eng, snap, "gamma")
    assert d.escalations == ["routing:out_of_domain", "large:error"]
    assert out.text == "later" and d.human_queue == "q" and d.target == "human:q"


async def test_all_tiers_fail_is_502_and_timeout_504():
    cfg = {
        **CONFIG,
        "policies": [
            {
                "modelName": "p",
                "id": "ns/p",
                "specialists": ["ns/a"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [{"name": "routed", "routed": True}],
            }
        ],
    }
    snap, _pool, eng = make({"ma": UpstreamError("boom")}, cfg)
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "x")
    assert e.value.status == 502
    snap, _pool, eng = make({"ma": UpstreamError("slow", timeout=True)}, cfg)
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "x")
    assert e.value.status == 504


async def test_trace_budget_cuts_and_answers():
    def think(prompt, sampling):
        if prompt.endswith("</think>"):
            return words("the answer is 5 and more words here")[: sampling["max_tokens"]]
        return [("<think> ", None), *words("w1 w2 w3 w4 w5"), ("</think> ", None), *words("late")]

    snap, pool, eng = make({"mthink": think})
    out, d = await run(eng, snap, "2+3?", model="t")
    assert d.truncated and out.text == "the answer is " and out.reasoning == "w1 w2"
    assert pool.calls[1][1] == "2+3?<think> w1 w2 </think>"
    assert pool.calls[1][2]["max_tokens"] == 3
    # Every token the backend generated: "<think>", w1, w2 and w3 (cut on arrival), then
    # three answer tokens.
    assert d.reasoning_tokens == 2 and d.completion_tokens == 7
    # The answer stopped at its max_tokens (the backend holds it there: no piece past
    # the cap ever arrives to tell), so it is cut: "length".
    assert out.finish_reason == "length"


async def test_a_continuation_that_ends_within_its_cap_stops():
    def think(prompt, sampling):
        if prompt.endswith("</think>"):
            return words("five")
        return [("<think> ", None), *words("w1 w2 w3 w4 w5"), ("</think> ", None), *words("late")]

    snap, pool, eng = make({"mthink": think})
    out, d = await run(eng, snap, "2+3?", model="t")
    assert d.truncated and out.text == "five " and pool.calls[1][2]["max_tokens"] == 3
    assert out.finish_reason == "stop"


async def test_request_max_tokens_lowers_the_cap():
    snap, pool, eng = make({"ma": words("one two three four", 0.99)})
    out, _d = await run(eng, snap, "alpha", max_tokens=2)
    assert pool.calls[0][2]["max_tokens"] == 2
    assert out.text == "one two " and out.finish_reason == "length"


async def test_fallback_to_earlier_answer_restores_its_headers():
    config = cfg_with(
        policies=[
            {
                "modelName": "p",
                "id": "ns/p",
                "specialists": ["ns/think"],
                "routing": {"semantic": {"enabled": False}},
                "budgets": ["ns/bud"],
                "cascade": [
                    {"name": "routed", "routed": True, "accept": {"minAnswerConfidence": 0.8}},
                    {"name": "large", "specialist": "ns/big"},
                ],
            }
        ],
        budgets=[{"id": "ns/bud", "perRequest": {"maxReasoningTokens": 1, "answerTokens": 3}}],
    )

    def think(prompt, sampling):
        if prompt.endswith("</think>"):
            return words("short answer", 0.2)
        return [("<think> ", None), *words("w1 w2 w3"), ("</think> ", None)]

    snap, _pool, eng = make({"mthink": think, "mbig": UpstreamError("down")}, config)
    out, d = await run(eng, snap, "x", "p")
    assert out.text.strip() == "short answer" and not d.accepted
    assert (d.tier, d.target, d.truncated) == ("routed", "ns/think", True)
    assert d.answer_confidence == pytest.approx(0.2)
    headers = dict(d.headers())
    assert headers[b"x-slmfleet-tier"] == b"routed"
    assert headers[b"x-slmfleet-target"] == b"ns/think"
