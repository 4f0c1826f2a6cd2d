"""What a request is charged: tokens generated before an error or a disconnect too."""

from __future__ import annotations

import asyncio
import time

import pytest

from slmfleet.api.routerconfig import RouterConfig
from slmfleet.router.engine import Decision, Engine
from slmfleet.router.errors import RouterError, UpstreamError
from slmfleet.router.external import ExternalClients
from slmfleet.router.protocol import parse_chat
from slmfleet.router.snapshot import build_snapshot
from tests.unit.router_fakes import (
    MONEY,
    FakePool,
    PartialPool,
    cfg_with,
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


def test_a_hold_counts_against_the_windows_until_it_is_settled():
    from slmfleet.api.routerconfig import BudgetConfig
    from slmfleet.router.accounting import InProcessAccounting

    acc = InProcessAccounting()
    b = BudgetConfig.model_validate(
        {"id": "ns/b", "spend": [{"window": "1h", "limitUsd": 1.0, "action": "reject"}]}
    )
    assert not acc.verdict([b]).reject
    hold = acc.reserve([b, b], 1.5)  # a Budget listed twice is held once
    assert acc.held("ns/b") == 1.5
    v = acc.verdict([b])
    assert v.reject and v.exceeded == ("ns/b/1h",)
    acc.settle(hold, 0.25)
    assert acc.held("ns/b") == 0.0 and not acc.verdict([b]).reject
    assert spent_total(acc, b) == pytest.approx(0.25)
    acc.settle(hold, 0.25)  # settling twice charges twice but releases nothing more
    assert acc.held("ns/b") == 0.0
    # No spend windows: nothing to hold.
    free = BudgetConfig.model_validate({"id": "ns/free", "perRequest": {"maxOutputTokens": 5}})
    assert acc.reserve([free], 9.0).amount_usd == 0.0


def spent_total(acc, b):
    return acc.window(b.id, b.spend[0]).total(time.time())


async def test_a_request_in_flight_holds_its_worst_case_against_concurrent_ones():
    config = cfg_with(
        policies=[one_tier("money", "ns/a", budgets=["ns/cash"])],
        # worst case of one call: 1 prompt token x 1 + 4096 output tokens x 2 per 1M
        budgets=[
            {"id": "ns/cash", "spend": [{"window": "1h", "limitUsd": 0.005, "action": "reject"}]}
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
    assert eng.accounting.held("ns/cash") == pytest.approx((1 + 4096 * 2) / 1e6)
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "x", "money")
    assert e.value.status == 429
    gate.set()
    _, d = await first
    assert eng.accounting.held("ns/cash") == 0.0
    assert spent(eng, "ns/cash") == pytest.approx(d.cost_usd) and d.cost_usd < 0.005
    await run(eng, snap, "x", "money")  # the hold is gone: admitted again
