"""The replicas behind one endpoint: per-request choice, waiting while there are none,
ejection of a failing Pod, and draining of a removed one."""

from __future__ import annotations

import asyncio

import pytest

from slmfleet.router import metrics as m
from slmfleet.router.breaker import BreakerConfig
from slmfleet.router.errors import UpstreamError
from slmfleet.router.triton.replicas import ReplicaSet


class Clock:
    t = 100.0

    def __call__(self):
        return self.t


async def test_requests_spread_by_least_outstanding_and_new_replicas_are_used_at_once():
    rs = ReplicaSet("svc:1")
    rs.update(["a:1", "b:1"], source="static")
    loop = asyncio.get_running_loop()
    held = [await rs.acquire(loop.time() + 1) for _ in range(4)]
    assert sorted(r.address for r in held) == ["a:1", "a:1", "b:1", "b:1"]
    rs.update(["a:1", "b:1", "c:1", "d:1"], source="static")
    new = [await rs.acquire(loop.time() + 1) for _ in range(4)]
    # Both new replicas are idle: they take the next requests, in turn.
    assert sorted(r.address for r in new) == ["c:1", "c:1", "d:1", "d:1"]
    for r in held + new:
        rs.release(r, ok=True, fault=False)
    assert [r.outstanding for r in rs.replicas] == [0, 0, 0, 0]
    assert m.REPLICAS.labels("svc:1", "active")._value.get() == 4


async def test_a_removed_replica_drains_then_closes():
    rs = ReplicaSet("svc:2")
    rs.update(["a:1", "b:1"], source="static")
    loop = asyncio.get_running_loop()
    a = await rs.acquire(loop.time() + 1)
    assert a.address == "a:1"
    rs.update(["b:1"], source="static")
    assert a.state == "draining" and [r.address for r in rs.active()] == ["b:1"]
    # No new request goes to it, the one in flight finishes there.
    assert (await rs.acquire(loop.time() + 1)).address == "b:1"
    assert a in rs.replicas
    rs.release(a, ok=True, fault=False)
    await asyncio.sleep(0)
    assert a.state == "closed" and a not in rs.replicas


async def test_without_replicas_requests_wait_for_one_until_their_deadline():
    rs = ReplicaSet("svc:3")
    rs.update([], source="endpointslices")  # scaled to zero
    loop = asyncio.get_running_loop()
    waiting = m.WAITING.labels("ns/x")
    task = asyncio.create_task(rs.acquire(loop.time() + 2, specialist="ns/x"))
    await asyncio.sleep(0.05)
    assert not task.done() and waiting._value.get() == 1
    rs.update(["a:1"], source="endpointslices")
    r = await asyncio.wait_for(task, 1)
    assert r.address == "a:1" and waiting._value.get() == 0
    rs.release(r, ok=True, fault=False)

    rs.update([], source="endpointslices")
    t0 = loop.time()
    with pytest.raises(UpstreamError) as e:
        await rs.acquire(loop.time() + 0.1, specialist="ns/x")
    # No replica in time is its own reason (503 + Retry-After), not an upstream timeout.
    assert e.value.reason == "no_replica" and not e.value.timeout
    assert loop.time() - t0 < 0.5 and waiting._value.get() == 0


async def test_a_failing_replica_is_ejected_and_probed_after_the_cooldown():
    clock = Clock()
    rs = ReplicaSet("svc:4", breaker_config=BreakerConfig(threshold=2, cooldown_s=5), clock=clock)
    rs.update(["a:1", "b:1"], source="static")
    loop = asyncio.get_running_loop()
    for _ in range(2):
        r = await rs.acquire(loop.time() + 1, exclude=[rs.replicas[1]])
        assert r.address == "a:1"
        rs.release(r, ok=False, fault=True)
    assert rs.replicas[0].breaker.state == "open"
    picks = []
    for _ in range(3):
        r = await rs.acquire(loop.time() + 1)
        picks.append(r.address)
        rs.release(r, ok=True, fault=False)
    assert picks == ["b:1"] * 3  # ejected: nothing goes to a:1
    with pytest.raises(UpstreamError) as e:
        await rs.acquire(loop.time() + 1, exclude=[rs.replicas[1]])
    assert e.value.reason == "circuit_open"
    clock.t += 6  # cooldown over: one probe may go to a:1, a success closes its circuit
    r = await rs.acquire(loop.time() + 1, exclude=[rs.replicas[1]])
    assert r.address == "a:1" and r.breaker.state == "half_open"
    rs.release(r, ok=True, fault=False)
    assert r.breaker.state == "closed"


async def test_only_the_probe_itself_frees_a_half_open_replica():
    """A request admitted before the circuit opened, ending 'neither ok nor a fault'
    (client gone) while the half-open probe runs, must not let a second probe in."""
    clock = Clock()
    rs = ReplicaSet("svc:5", breaker_config=BreakerConfig(threshold=1, cooldown_s=5), clock=clock)
    rs.update(["a:1"], source="static")
    loop = asyncio.get_running_loop()
    old, old_probe = await rs.acquire_probe(loop.time() + 1)  # in flight since before
    assert old_probe is None
    r = await rs.acquire(loop.time() + 1)
    rs.release(r, ok=False, fault=True)  # the circuit opens
    clock.t += 6
    probe_r, probe = await rs.acquire_probe(loop.time() + 1)
    assert probe is not None and probe_r.breaker.probing
    rs.release(old, ok=False, fault=False, probe=old_probe)  # the old request: client gone
    assert probe_r.breaker.probing  # still the probe's slot
    with pytest.raises(UpstreamError):  # no second probe
        await rs.acquire(loop.time() + 1)
    rs.release(probe_r, ok=False, fault=False, probe=probe)  # the probe itself gave up
    assert not probe_r.breaker.probing
    r2, p2 = await rs.acquire_probe(loop.time() + 1)  # the next one may probe
    assert p2 is not None
    rs.release(r2, ok=True, fault=False, probe=p2)
    assert r2.breaker.state == "closed"
