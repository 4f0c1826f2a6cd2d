"""A specialist that cannot take a request now: the pure rule (capacity.overflow) and the
engine acting on it (wait for a replica, 503 + Retry-After, or cascade at once)."""

from __future__ import annotations

import asyncio

import pytest

from slmfleet.api.routerconfig import CapacityConfig, RouterConfig, SpecialistConfig
from slmfleet.router import metrics as m
from slmfleet.router.capacity import COST_CAPPED, SCALED_TO_ZERO, overflow
from slmfleet.router.engine import Engine
from slmfleet.router.errors import RouterError, UpstreamError
from slmfleet.router.external import ExternalClients
from slmfleet.router.snapshot import build_snapshot
from slmfleet.router.triton.pool import TritonPool
from tests.unit.router_fakes import KeywordClassifier, cfg_with, make, run, spec, words


def specialist(**kw) -> SpecialistConfig:
    base = {"id": "ns/a", "endpoint": "h:1", "tritonModel": "m", "backend": "python"}
    return SpecialistConfig.model_validate(base | kw)


WAIT, CASCADE = CapacityConfig(), CapacityConfig(when_scaled_to_zero="cascade")
OVERFLOW = CapacityConfig(when_cost_capped="cascade")
ZERO = specialist(scaledToZero=True)
CAPPED = specialist(ready=True, costCapped=True, targetInFlight=4)


@pytest.mark.parametrize(
    ("spec_", "capacity", "replicas", "in_flight", "has_next", "expected"),
    [
        (ZERO, WAIT, 0, 0, True, None),  # wait for the replica being started
        (ZERO, CASCADE, 0, 0, True, SCALED_TO_ZERO),
        (ZERO, CASCADE, 0, 0, False, None),  # nowhere to go: wait
        # The config lags the Pods: a replica is up already, so it is served.
        (ZERO, CASCADE, 1, 0, True, None),
        (specialist(ready=True), CASCADE, 0, 0, True, SCALED_TO_ZERO),  # Pods gone first
        (specialist(ready=True), CASCADE, 2, 50, True, None),
        (CAPPED, OVERFLOW, 2, 7, True, None),
        (CAPPED, OVERFLOW, 2, 8, True, COST_CAPPED),  # 2 replicas x 4 in flight: full
        (CAPPED, OVERFLOW, 2, 8, False, None),
        (CAPPED, CapacityConfig(), 2, 80, True, None),  # queue (the default)
        (specialist(ready=True, targetInFlight=4), OVERFLOW, 2, 80, True, None),  # not capped
    ],
)
def test_overflow(spec_, capacity, replicas, in_flight, has_next, expected):
    got = overflow(spec_, capacity, replicas=replicas, in_flight=in_flight, has_next=has_next)
    assert got == expected


def zero_config(capacity: dict, *, next_tier: bool = True) -> dict:
    cascade = [{"name": "small", "routed": True}]
    if next_tier:
        cascade.append({"name": "large", "specialist": "ns/big"})
    return cfg_with(
        policies=[
            {
                "modelName": "p",
                "id": "ns/p",
                "specialists": ["ns/a"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": cascade,
                "capacity": capacity,
            }
        ],
        specialists=[
            spec("a", "ma", ready=False, scaledToZero=True),
            spec("big", "mbig", endpoint="big:1"),
        ],
    )


def value(metric, *labels) -> float:
    return m.bound(metric, *labels)._value.get()


async def test_cascade_goes_to_the_next_tier_at_once_and_signals_demand():
    snap, pool, eng = make({"mbig": words("from the large tier")}, zero_config(
        {"whenScaledToZero": "cascade"}))  # fmt: skip
    pool.loads["h:1"] = (0, 0)
    demand, escalated = value(m.NO_REPLICA, "ns/a"), value(m.ESCALATED, "p", "large")
    out, d = await run(eng, snap, "anything")
    assert out.text.strip() == "from the large tier" and d.tier == "large"
    assert d.escalations == ["small:scaled_to_zero"]
    assert [c[0] for c in pool.calls] == ["mbig"]  # the zero-replica specialist never called
    assert value(m.NO_REPLICA, "ns/a") == demand + 1
    assert value(m.ESCALATED, "p", "large") == escalated + 1


async def test_a_scaled_to_zero_specialist_is_routed_and_called_when_the_policy_waits():
    """Not Ready, yet routable: the call goes to the pool, which holds it for a replica."""
    snap, _pool, eng = make({"ma": words("served after the wait")}, zero_config({}))
    out, d = await run(eng, snap, "anything")
    assert out.text.strip() == "served after the wait" and d.tier == "small"
    assert d.route == "ns/a" and d.escalations == []


async def test_an_unready_specialist_that_is_not_scaled_to_zero_is_still_refused():
    config = zero_config({}, next_tier=False)
    config["specialists"][0] = spec("a", "ma", ready=False)
    snap, pool, eng = make({"ma": words("never")}, config)
    with pytest.raises(RouterError) as err:
        await run(eng, snap, "anything")
    assert pool.calls == []
    assert err.value.status == 502


async def test_waiting_ends_in_503_with_retry_after_and_counts_demand():
    """The real pool with no replica: the request waits (the waiting gauge says so) for
    maxWaitSeconds, then gets 503 + Retry-After, not a 504 after the tier's timeout."""
    cfg = RouterConfig.model_validate(zero_config({"maxWaitSeconds": 1}, next_tier=False))
    snap = build_snapshot(cfg, classifier_factory=KeywordClassifier)
    pool = TritonPool()
    await pool.configure(cfg.specialists)
    assert pool.load("h:1") == (0, 0)  # scaled to zero: not even the DNS name
    eng = Engine(pool, ExternalClients())
    demand = value(m.NO_REPLICA, "ns/a")
    task = asyncio.create_task(run(eng, snap, "anything"))
    await asyncio.sleep(0.3)
    assert value(m.WAITING, "ns/a") == 1 and not task.done()
    with pytest.raises(RouterError) as err:
        await task
    assert err.value.status == 503 and err.value.code == "no_replica"
    assert err.value.headers["retry-after"] == "10"
    assert "h:1" not in err.value.message  # no internal endpoint in the public message
    assert err.value.decision.escalations == ["small:no_replica"]
    assert value(m.WAITING, "ns/a") == 0
    assert value(m.NO_REPLICA, "ns/a") == demand + 1
    await pool.close()


async def test_cost_capped_overflow_cascades_only_where_the_policy_allows():
    def config(when: str) -> dict:
        c = zero_config({"whenCostCapped": when})
        c["specialists"][0] = spec("a", "ma", costCapped=True, targetInFlight=2)
        return c

    for when, tier in (("cascade", "large"), ("queue", "small")):
        snap, pool, eng = make({"ma": words("small"), "mbig": words("large")}, config(when))
        pool.loads["h:1"] = (3, 6)  # three replicas, two in flight on each: full
        _out, d = await run(eng, snap, "anything")
        assert d.tier == tier, when
        if when == "cascade":
            assert d.escalations == ["small:cost_capped"]
        pool.loads["h:1"] = (3, 5)  # room for one more: no overflow
        _out, d = await run(eng, snap, "anything")
        assert d.tier == "small"


async def test_escalated_requests_count_once_per_request_per_tier():
    """Two reasons to leave a tier are two escalation counts but one escalated request."""
    config = cfg_with(
        policies=[
            {
                "modelName": "p",
                "id": "ns/p",
                "specialists": ["ns/a"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [
                    {
                        "name": "small",
                        "routed": True,
                        "accept": {
                            "minAnswerConfidence": 0.9,
                            "validators": [{"name": "digits", "regex": "[0-9]+"}],
                        },
                    },
                    {"name": "large", "specialist": "ns/big"},
                ],
            }
        ]
    )
    snap, _pool, eng = make({"ma": words("unsure", 0.2), "mbig": words("42", 0.99)}, config)
    reasons = value(m.ESCALATIONS, "p", "small", "low_answer_confidence")
    entered, first = value(m.ESCALATED, "p", "large"), value(m.ESCALATED, "p", "small")
    _out, d = await run(eng, snap, "anything")
    assert d.tier == "large" and len(d.escalations) == 2
    assert value(m.ESCALATIONS, "p", "small", "low_answer_confidence") == reasons + 1
    assert value(m.ESCALATED, "p", "large") == entered + 1
    assert value(m.ESCALATED, "p", "small") == first  # the first tier is not an escalation


async def test_a_model_scaled_to_zero_on_a_shared_server_is_held_per_model():
    """Locally one Triton serves every model: the one scaled to zero (unloaded) is held
    until the configuration brings it back; the others keep the server's replica."""

    def cfg(zero: bool) -> RouterConfig:
        a = spec("a", "ma", ready=not zero, scaledToZero=zero)
        return RouterConfig.model_validate({"specialists": [a, spec("b", "mb")]})

    pool = TritonPool()
    await pool.configure(cfg(zero=True).specialists)
    assert pool.load("h:1", "ma") == (0, 0) and pool.load("h:1", "mb") == (1, 0)
    loop = asyncio.get_running_loop()
    held = asyncio.create_task(pool._model_back("h:1", "ma", loop.time() + 5, "ns/a"))
    await asyncio.sleep(0.05)
    assert not held.done() and value(m.WAITING, "ns/a") == 1
    await pool._model_back("h:1", "mb", loop.time() + 5, "ns/b")  # not held
    await pool.configure(cfg(zero=False).specialists)  # loaded again
    await asyncio.wait_for(held, 1)
    assert value(m.WAITING, "ns/a") == 0 and pool.load("h:1", "ma") == (1, 0)
    await pool.configure(cfg(zero=True).specialists)
    with pytest.raises(UpstreamError) as err:
        await pool._model_back("h:1", "ma", loop.time() + 0.1, "ns/a")
    assert err.value.reason == "no_replica"
    await pool.close()
