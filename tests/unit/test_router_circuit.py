"""The circuit breaker per endpoint counts only the endpoint's own faults."""

from __future__ import annotations

import pytest

from slmfleet.api.routerconfig import RouterConfig
from slmfleet.router.breaker import Breaker
from slmfleet.router.engine import Decision, Engine
from slmfleet.router.errors import RouterError, UpstreamError
from slmfleet.router.external import ExternalClients
from slmfleet.router.protocol import parse_chat
from slmfleet.router.snapshot import build_snapshot
from tests.unit.router_fakes import (
    CONFIG,
    MONEY,
    PartialPool,
    cfg_with,
    make,
    one_tier,
    run,
)


async def test_circuit_breaker_opens_and_skips():
    cfg = {
        **CONFIG,
        "policies": [
            {
                "modelName": "p",
                "id": "ns/p",
                "specialists": ["ns/a"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [{"name": "routed", "routed": True}, {"name": "review", "human": {}}],
            }
        ],
    }
    down = UpstreamError("UNAVAILABLE", retryable=True)
    snap, pool, eng = make({"ma": down}, cfg)
    for _ in range(3):
        await run(eng, snap, "x")
    _, d = await run(eng, snap, "x")
    assert d.escalations == ["routed:circuit_open"] and len(pool.calls) == 3


async def test_budget_shortened_timeouts_do_not_open_the_circuit():
    config = cfg_with(
        policies=[one_tier("p", "ns/a", budgets=["ns/fast"])],
        budgets=[{"id": "ns/fast", "perRequest": {"maxLatencyMs": 50}}],
    )
    snap, pool, eng = make({"ma": UpstreamError("slow", timeout=True)}, config)
    for _ in range(4):
        with pytest.raises(RouterError):
            await run(eng, snap, "x", "p")
    assert len(pool.calls) == 4 and eng.breakers["h:1"].state == "closed"

    # The tier's own timeout still counts.
    snap, pool, eng = make({"ma": UpstreamError("slow", timeout=True)}, MONEY)
    for _ in range(4):
        with pytest.raises(RouterError):
            await run(eng, snap, "x", "money")
    assert len(pool.calls) == 3 and eng.breakers["h:1"].state == "open"


async def test_client_gone_is_not_a_success_and_frees_the_probe():
    snap = build_snapshot(RouterConfig.model_validate(MONEY))
    eng = Engine(PartialPool(["a ", "b "], UpstreamError("never")), ExternalClients())
    eng.breakers["h:1"] = Breaker("open", 3, eng.clock() - 10.0, False)

    async def emit(delta):
        raise ConnectionResetError()

    req = parse_chat(
        {"model": "money", "messages": [{"role": "user", "content": "x"}]}, max_messages=4
    )
    with pytest.raises(ConnectionResetError):
        await eng.run(snap, req, Decision("r"), emit)
    b = eng.breakers["h:1"]
    assert b.state == "half_open" and not b.probing
