"""What a request is charged: tokens generated before an error or a disconnect too."""

from __future__ import annotations

import asyncio

import pytest

from slmfleet.api.routerconfig import BudgetConfig, RouterConfig
from slmfleet.budget.amounts import Amount
from slmfleet.budget.ledger import BudgetLimits
from slmfleet.router.accounting import LedgerAccounting, SpendRefused
from slmfleet.router.engine import Decision, Engine
from slmfleet.router.errors import RouterError, UpstreamError
from slmfleet.router.external import ExternalClients
from slmfleet.router.protocol import parse_chat
from slmfleet.router.snapshot import build_snapshot
from tests.unit.router_fakes import (
    CONFIG,
    MONEY,
    Clock,
    FakePool,
    PartialPool,
    cfg_with,
    held,
    make,
    one_tier,
    run,
    spent,
    words,
)


async def test_tokens_before_an_upstream_error_are_charged():
    snap = build_snapshot(RouterConfig.model_validate(MONEY))
    pool = PartialPool(["a ", "b ", "c ", "d "], UpstreamError("slow", timeout=True))
    eng = Engine(pool, ExternalClients())
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "x", "money")
    assert e.value.status == 504
    d = e.value.decision
    assert d.completion_tokens == 4 and d.cost_usd > 0
    assert spent(eng, "ns/cash") == pytest.approx(d.cost_usd)


async def test_tokens_before_a_client_disconnect_are_charged():
    class Gone(Exception):
        pass

    snap = build_snapshot(RouterConfig.model_validate(MONEY))
    eng = Engine(PartialPool(["a ", "b ", "c "], UpstreamError("never")), ExternalClients())
    n = 0

    async def emit(delta):
        nonlocal n
        n += 1
        if n == 2:
            raise Gone()

    req = parse_chat(
        {"model": "money", "messages": [{"role": "user", "content": "x"}]}, max_messages=4
    )
    d = Decision("r")
    with pytest.raises(Gone):
        await eng.run(snap, req, d, emit)
    assert d.completion_tokens == 2 and d.cost_usd > 0
    assert spent(eng, "ns/cash") == pytest.approx(d.cost_usd)


# ---- reserve before a tier call, settle after it ---------------------------------------


async def test_a_hold_counts_against_the_windows_until_it_is_settled():
    acc = LedgerAccounting()
    b = BudgetConfig.model_validate(
        {"id": "ns/b", "spend": [{"window": "1h", "limitUsd": 1.0, "action": "reject"}]}
    )
    limits = [BudgetLimits.from_config(b)]

    def window():
        return acc.ledger.view(limits)[("ns/b", "1h")]

    hold = await acc.reserve([b, b], Amount(0.75), ttl_s=30, request_id="r1")  # held once
    assert window().reserved.usd == pytest.approx(0.75)
    with pytest.raises(SpendRefused) as e:  # 0.75 held + 0.5 > 1.0: refused, atomically
        await acc.reserve([b], Amount(0.5), ttl_s=30, request_id="r2")
    assert e.value.admission.reason == "limit"
    assert e.value.admission.refused_by == ("ns/b/1h",)
    assert e.value.admission.retry_after_s >= 1
    await acc.settle(hold, Amount(0.25))
    assert window().reserved.usd == 0.0 and window().spent.usd == pytest.approx(0.25)
    await acc.settle(hold, Amount(0.25))  # settling twice (a retry) counts once
    assert window().spent.usd == pytest.approx(0.25)
    again = await acc.reserve([b], Amount(0.5), ttl_s=30, request_id="r3")  # room again
    await acc.settle(again, Amount(0.0))
    with pytest.raises(SpendRefused) as e:  # more than the whole limit: never admitted
        await acc.reserve([b], Amount(1.5), ttl_s=30, request_id="r4")
    assert e.value.admission.reason == "too_large"
    # No spend windows: nothing to hold, nothing to settle.
    free = BudgetConfig.model_validate({"id": "ns/free", "perRequest": {"maxOutputTokens": 5}})
    none = await acc.reserve([free], Amount(9.0), ttl_s=30, request_id="r5")
    assert none.budgets == ()
    await acc.settle(none, Amount(9.0))
    assert window().spent.usd == pytest.approx(0.25)


async def test_a_request_in_flight_holds_its_worst_case_against_concurrent_ones():
    config = cfg_with(
        policies=[one_tier("money", "ns/a", budgets=["ns/cash"])],
        # worst case of one call: 17 prompt tokens (byte bound) x 1 + 4079 output tokens
        # (what the 4096 context leaves after them: no cap) x 2 per 1M; two do not fit
        # in $0.01
        budgets=[
            {"id": "ns/cash", "spend": [{"window": "1h", "limitUsd": 0.01, "action": "reject"}]}
        ],
    )
    gate = asyncio.Event()

    class Gated(FakePool):
        async def stream(self, *a, **kw):
            await gate.wait()
            async for p in super().stream(*a, **kw):
                yield p

    snap, _pool, eng = make({"ma": words("ok", 0.99)}, config)
    eng.specialist_tier.pool = Gated({"ma": words("ok", 0.99)})
    first = asyncio.create_task(run(eng, snap, "x", "money"))
    await asyncio.sleep(0.01)
    assert held(eng, "ns/cash") == pytest.approx((17 + (4096 - 17) * 2) / 1e6)
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "x", "money")
    assert e.value.status == 429
    gate.set()
    _, d = await first
    assert held(eng, "ns/cash") == 0.0
    assert spent(eng, "ns/cash") == pytest.approx(d.cost_usd) and d.cost_usd < 0.005
    await run(eng, snap, "x", "money")  # the hold is gone: admitted again


# ---- a reasoning continuation that generates nothing costs nothing ----------------------


def cut_thought(clock=None, advance=0.0, answer=None):
    """A reasoner cut at its cap (3 reasoning tokens); the answer-only call gets ``answer``
    (an error). ``advance``: seconds the first generation takes on ``clock``."""

    def think(prompt, sampling):
        if prompt.endswith("</think>"):
            return answer
        if clock is not None:
            clock.t += advance
        return [("<think> ", None), *words("w1 w2 w3 w4 w5"), ("</think> ", None)]

    return think


async def test_a_continuation_that_fails_before_generating_adds_no_prompt():
    down = UpstreamError("triton: UNAVAILABLE: connection refused")
    snap, pool, eng = make({"mthink": cut_thought(answer=down)})
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "2+3?", model="t")
    d = e.value.decision
    assert len(pool.calls) == 2  # the second call was sent, and failed at once
    # The first generation's prompt (1 token, as the backend counted it) and its 4
    # tokens; the continuation's prompt (26 bytes) is not charged.
    assert (d.prompt_tokens, d.completion_tokens) == (1, 4)


async def test_no_time_for_the_answer_charges_no_continuation():
    clock = Clock()
    snap, pool, eng = make({"mthink": cut_thought(clock, 3600.0, words("5"))}, CONFIG, clock=clock)
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "2+3?", model="t")
    d = e.value.decision
    assert e.value.status == 504 and len(pool.calls) == 1  # no second call sent
    assert (d.prompt_tokens, d.completion_tokens) == (1, 4)
