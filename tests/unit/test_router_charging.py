"""What a request is charged: tokens generated before an error or a disconnect too."""

from __future__ import annotations

import pytest

from slmfleet.api.routerconfig import RouterConfig
from slmfleet.router.engine import Decision, Engine
from slmfleet.router.errors import RouterError, UpstreamError
from slmfleet.router.external import ExternalClients
from slmfleet.router.protocol import parse_chat
from slmfleet.router.snapshot import build_snapshot
from tests.unit.router_fakes import (
    MONEY,
    PartialPool,
    run,
    spent,
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
