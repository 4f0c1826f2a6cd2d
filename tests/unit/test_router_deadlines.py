"""maxLatencyMs is for the whole request: every tier gets what is left of it."""

from __future__ import annotations

import pytest

from slmfleet.router.errors import RouterError, UpstreamError
from tests.unit.router_fakes import (
    Clock,
    cfg_with,
    make,
    run,
    words,
)

LATENCY_CFG = cfg_with(
    policies=[
        {
            "modelName": "p",
            "id": "ns/p",
            "specialists": ["ns/a"],
            "routing": {"semantic": {"enabled": False}},
            "budgets": ["ns/fast"],
            "cascade": [
                {"name": "routed", "routed": True, "accept": {"minAnswerConfidence": 0.8}},
                {"name": "large", "specialist": "ns/big"},
            ],
        }
    ],
    budgets=[{"id": "ns/fast", "perRequest": {"maxLatencyMs": 1000}}],
)


def slow(clock, seconds, result):
    def script(prompt, sampling):
        clock.t += seconds
        return result

    return script


async def test_max_latency_spans_every_tier():
    clock = Clock()
    script = {"ma": slow(clock, 0.7, words("meh", 0.1)), "mbig": words("fine", 0.99)}
    snap, pool, eng = make(script, LATENCY_CFG, clock=clock)
    _, d = await run(eng, snap, "x", "p")
    assert d.tier == "large"
    assert pool.timeouts[0] == pytest.approx(1.0)
    assert pool.timeouts[1] == pytest.approx(0.3)


async def test_no_time_left_returns_last_answer_or_504():
    clock = Clock()
    script = {"ma": slow(clock, 1.1, words("meh", 0.1)), "mbig": words("fine", 0.99)}
    snap, pool, eng = make(script, LATENCY_CFG, clock=clock)
    out, d = await run(eng, snap, "x", "p")
    assert out.text.strip() == "meh" and not d.accepted and d.tier == "routed"
    assert len(pool.calls) == 1  # no escalation once the time is up

    clock = Clock()
    script = {"ma": slow(clock, 1.1, UpstreamError("boom")), "mbig": words("fine", 0.99)}
    snap, pool, eng = make(script, LATENCY_CFG, clock=clock)
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "x", "p")
    assert e.value.status == 504 and e.value.code == "upstream_timeout"
    assert len(pool.calls) == 1
