"""maxLatencyMs is for the whole request: every tier gets what is left of it."""

from __future__ import annotations

import pytest

from slmfleet.router.accounting import LedgerAccounting
from slmfleet.router.errors import RouterError, UpstreamError
from slmfleet.router.external import ExternalAnswer
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
EXTERNAL_CFG = cfg_with(
    policies=[
        {
            "modelName": "p",
            "id": "ns/p",
            "specialists": ["ns/a"],
            "routing": {"semantic": {"enabled": False}},
            "budgets": ["ns/fast"],
            "cascade": [{"name": "vendor", "external": {"baseUrl": "https://x/v1", "model": "m"}}],
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


class SlowReserve(LedgerAccounting):
    """A ledger whose reservation takes ``seconds`` of the clock (a Redis round trip, a
    previous tier's settle to wait for)."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds

    async def reserve(self, budgets, worst, *, ttl_s, request_id):
        self.clock.t += self.seconds
        return await super().reserve(budgets, worst, ttl_s=ttl_s, request_id=request_id)


async def test_a_call_gets_the_time_left_after_its_reservation():
    clock = Clock()
    acc = SlowReserve(clock, 0.4)
    snap, pool, eng = make({"ma": words("fine", 0.99)}, LATENCY_CFG, clock=clock, accounting=acc)
    await run(eng, snap, "x", "p")
    assert pool.timeouts[0] == pytest.approx(0.6)

    # The external tier alike.
    seen = []

    async def chat(ext, messages, *, timeout_s, **kw):
        seen.append(timeout_s)
        return ExternalAnswer("fine", 1, 1, "stop")

    clock = Clock()
    snap, pool, eng = make({}, EXTERNAL_CFG, clock=clock, accounting=SlowReserve(clock, 0.4))
    eng.external_tier.clients.chat = chat
    await run(eng, snap, "x", "p")
    assert seen == [pytest.approx(0.6)]


async def test_a_reservation_that_outlasts_the_deadline_sends_nothing():
    clock = Clock()
    acc = SlowReserve(clock, 1.1)
    snap, pool, eng = make({"ma": words("fine", 0.99)}, LATENCY_CFG, clock=clock, accounting=acc)
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "x", "p")
    assert e.value.status == 504 and pool.calls == []
