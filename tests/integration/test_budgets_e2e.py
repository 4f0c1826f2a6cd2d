"""Budgets that hold across router replicas, end to end on real parts: several router
processes (``python -m slmfleet.router``, started like the chart starts them) in front
of the real tritonserver (CPU stand-ins), sharing one real redis-server, and the real
operator writing Budget.status on the real API server.

The file sorts after test_budget_status.py on purpose: that one runs its own status
writers, this one the shared operator (whose ledger is the session's Redis).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from slmfleet.local.cluster import free_port
from slmfleet.local.fleet import LocalFleet
from slmfleet.local.router import RouterProcess
from tests.integration.budget_fleet import (
    access_lines,
    ask,
    budget,
    client,
    false_rejects,
    load,
    policy,
    settled,
    specialist,
    start_router,
    window,
    write_manifests,
)
from tests.unit.test_cli_examples import GITOPS, run_health
from tests.unit.test_cli_examples import load as load_yaml

pytestmark = pytest.mark.integration

NS = f"spend-{uuid.uuid4().hex[:6]}"
CAP = 0.5  # USD: a few hundred requests of the priced stand-in
LAG_CAP = 0.2  # every request fits it empty: its 429s are the window binding


def manifests() -> list[dict]:
    return [
        specialist("writer"),
        specialist("slowpoke", token_delay_ms="40"),
        policy("spend", "writer"),
        policy("lagging", "writer"),
        policy("open", "writer", timeout_ms=3000),
        policy("closed", "writer", timeout_ms=3000),
        policy("slow", "slowpoke", timeout_ms=3000),
        budget("cap", "spend", CAP, ladder=[{"atPercent": 50, "action": "alert"}]),
        budget("lag", "lagging", LAG_CAP),
        budget("opencap", "open", 100.0),
        budget("closedcap", "closed", 100.0, failMode="failClosed"),
        budget("slowcap", "slow", 100.0),
    ]


@dataclass
class Fleet:
    local: LocalFleet
    routers: list[RouterProcess]
    redis_url: str
    config: Path
    logs: list[Path]

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.routers]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, redis_server, kube) -> Iterator[Fleet]:
    kube("create", "namespace", NS)
    tmp = tmp_path_factory.mktemp("budget-fleet")
    local = LocalFleet(
        write_manifests(tmp / "manifests", manifests()),
        port=free_port(),
        namespace=NS,
        workdir=tmp / "work",
        ledger_url=redis_server.url,
        startup_timeout=300,
    )
    extra: list[RouterProcess] = []
    try:
        local.start()
        config = local.workdir / "router.json"
        for i in (1, 2):
            extra.append(start_router(config, redis_server.url, tmp / f"router-{i}.log"))
        assert local.router is not None
        yield Fleet(
            local,
            [local.router, *extra],
            redis_server.url,
            config,
            [local.router_log, *(tmp / f"router-{i}.log" for i in (1, 2))],
        )
    finally:
        for r in extra:
            r.stop()
        local.stop()
        kube("delete", "namespace", NS, "--wait=false", check=False)


def metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name))


def test_concurrent_replicas_never_pass_the_limit_and_never_reject_falsely(fleet):
    """Three routers x 12 clients, requests of random size, one $0.5 window."""
    out = asyncio.run(
        load(fleet.urls, "spend", clients_per_router=12, max_requests=600, stop_after_429s=4)
    )
    ok = [o for o in out if o.status == 200]
    refused = [o for o in out if o.status == 429]
    assert len(ok) + len(refused) == len(out), {o.status for o in out}
    st = asyncio.run(settled(fleet.redis_url, f"{NS}/cap", CAP))
    # Never past the limit, nothing left held, every answered request counted once.
    assert st.spent.usd <= CAP, st
    assert st.reserved.usd == 0, st
    assert st.spent.usd == pytest.approx(sum(o.cost for o in ok), abs=1e-7)
    # The limit was really reached: the last refusals could not fit even a small request.
    assert len(ok) > 30 and refused, (len(ok), len(refused))
    assert st.spent.usd > CAP - 0.05
    for o in refused:
        assert o.code == "budget_exceeded" and int(o.headers["retry-after"]) >= 1
        assert o.headers["x-slmfleet-budget-step"] == "reject"
    # No false reject: every 429 is justified by the window as the atomic reserve saw it.
    lines = [rec for log in fleet.logs for rec in access_lines(log) if rec["policy"] == "spend"]
    assert sum(1 for rec in lines if rec["status"] == 429) == len(refused)
    assert false_rejects(lines, f"{NS}/cap/1h", CAP) == []
    # Every replica took part, and the alert step at 50% shows in headers and metrics.
    assert {o.router for o in ok} == {0, 1, 2}
    assert any(o.headers.get("x-slmfleet-budget-step") == "alert" for o in ok)
    steps = sum(metric(u, 'slmfleet_router_budget_step_requests_total{policy="spend",step="alert"}')
                for u in fleet.urls)  # fmt: skip
    assert steps > 0


def test_a_killed_router_reservations_expire_and_nothing_is_counted_twice(fleet, tmp_path):
    """kill -9 a router with calls in flight: its holds block room until they expire
    (tier timeout + grace), then free it; only answered requests are ever charged."""
    doomed = start_router(fleet.config, fleet.redis_url, tmp_path / "doomed.log")
    bid = f"{NS}/slowcap"
    before = asyncio.run(window(fleet.redis_url, bid)).spent.usd

    async def scenario() -> tuple[list, float, float]:
        rng = random.Random(3)
        victim = client(doomed.url)
        # One stand-in instance generates one request at a time (40 ms a token): the
        # first is generating, the others wait in Triton, all of them hold room.
        doomed_calls = [asyncio.create_task(ask(victim, "slow", rng)) for _ in range(3)]
        deadline = time.monotonic() + 20
        while (await window(fleet.redis_url, bid)).reserved.usd == 0:
            assert time.monotonic() < deadline, "no reservation showed up"
            await asyncio.sleep(0.02)
        os.kill(doomed.pid, signal.SIGKILL)  # mid-traffic, no goodbye
        held = (await window(fleet.redis_url, bid)).reserved.usd
        results = await asyncio.gather(*doomed_calls, return_exceptions=True)
        answered = [r for r in results if not isinstance(r, BaseException)]
        t0 = time.monotonic()
        while (await window(fleet.redis_url, bid)).reserved.usd > 0:
            assert time.monotonic() - t0 < 30, "the dead router's holds never expired"
            await asyncio.sleep(0.25)
        await victim.close()
        return answered, held, time.monotonic() - t0

    answered, held, expiry_s = asyncio.run(scenario())
    doomed.stop()
    assert held > 0
    assert expiry_s <= 3 + 10 + 2  # the tier's 3 s timeout + the grace, and a poll
    st = asyncio.run(window(fleet.redis_url, bid))
    costs = sum(o.cost for o in answered if o.status == 200)
    assert st.spent.usd - before == pytest.approx(costs, abs=1e-7)
    # And the room is back: a new request is admitted and charged once.
    o = asyncio.run(_one(fleet.urls[0], "slow"))
    assert o.status == 200
    after = asyncio.run(settled(fleet.redis_url, bid)).spent.usd
    assert after - before == pytest.approx(costs + o.cost, abs=1e-7)


async def _one(url: str, model: str):
    c = client(url)
    try:
        return await ask(c, model, random.Random(11))
    finally:
        await c.close()


def test_redis_restart_mid_traffic_keeps_the_spend_and_applies_the_fail_modes(
    fleet, start_redis, tmp_path
):
    """Two routers on a Redis of their own that restarts under traffic: failOpen serves
    and reconciles later, failClosed answers 429; no spend is lost or counted twice."""
    redis = start_redis()
    routers = [start_router(fleet.config, redis.url, tmp_path / f"r{i}.log") for i in range(2)]
    phase = {"now": "up"}

    async def traffic(stop: asyncio.Event) -> list[tuple[str, str, object]]:
        seen: list[tuple[str, str, object]] = []
        cs = [client(r.url) for r in routers]

        async def worker(i: int) -> None:
            rng = random.Random(100 + i)
            model = ("open", "closed")[i % 2]
            while not stop.is_set():
                o = await ask(cs[i % 2], model, rng)
                seen.append((phase["now"], model, o))
                await asyncio.sleep(0.02)

        tasks = [asyncio.create_task(worker(i)) for i in range(4)]
        await stop.wait()
        await asyncio.gather(*tasks)
        for c in cs:
            await c.close()
        return seen

    async def scenario() -> list:
        stop = asyncio.Event()
        running = asyncio.create_task(traffic(stop))
        await asyncio.sleep(1.5)
        phase["now"] = "down"
        await asyncio.to_thread(redis.stop)  # SIGTERM: the AOF is flushed
        await asyncio.sleep(2.5)
        redis.start()  # same port, same data; on this thread (it dies with its starter)
        phase["now"] = "back"
        await asyncio.sleep(2.5)
        stop.set()
        return await running

    try:
        seen = asyncio.run(scenario())
        during = [(m, o) for p, m, o in seen if p == "down"]
        assert all(o.status in (200, 429) for _, _, o in seen), {o.status for _, _, o in seen}
        # During the gap: failOpen served on the local count, and said so; failClosed
        # refused.
        assert any(
            m == "open" and o.status == 200 and o.headers.get("x-slmfleet-ledger") == "unavailable"
            for m, o in during
        )
        assert any(
            m == "closed" and o.status == 429 and o.code == "budget_ledger_unavailable"
            for m, o in during
        )
        assert not [o for m, o in during if m == "open" and o.status != 200]
        # Reconciled: every answered request's cost is in Redis once, the gap's included,
        # and nothing stays held: holds settled during the gap are released on replay; a
        # hold whose reply the stopping Redis never sent expires (3 s timeout + grace).
        for model, bid in (("open", "opencap"), ("closed", "closedcap")):
            expected = sum(o.cost for _, m, o in seen if m == model and o.status == 200)
            deadline = time.monotonic() + 20
            while True:
                st = asyncio.run(window(redis.url, f"{NS}/{bid}"))
                settled = abs(st.spent.usd - expected) < 1e-7 and st.reserved.usd == 0
                if settled or time.monotonic() > deadline:
                    break
                time.sleep(0.25)
            assert st.spent.usd == pytest.approx(expected, abs=1e-7), model
            assert st.reserved.usd == 0, model
    finally:
        for r in routers:
            r.stop()


def test_the_api_server_shows_exceeded_within_ten_seconds(fleet, kube, operator):
    """Routers spend past a window; the operator reads the shared ledger and the Budget
    on the real API server says Exceeded (and kubectl and Argo CD show it)."""
    doc = next(d for d in manifests() if d["kind"] == "Budget" and d["metadata"]["name"] == "lag")
    kube.apply(doc, NS)

    def status() -> dict:
        return (kube.get("budget.slmfleet.io", "lag", NS) or {}).get("status") or {}

    deadline = time.monotonic() + 60
    while status().get("state") != "Ok":
        assert time.monotonic() < deadline, status()
        time.sleep(0.5)

    async def until_refused() -> float:
        c = client(fleet.urls[2])
        rng = random.Random(5)
        try:
            for _ in range(500):
                o = await ask(c, "lagging", rng)
                if o.status == 429:
                    return time.monotonic()
            raise AssertionError("the window never filled")
        finally:
            await c.close()

    crossed = asyncio.run(until_refused())
    while status().get("state") != "Exceeded":
        assert time.monotonic() - crossed < 15, status()
        time.sleep(0.1)
    lag = time.monotonic() - crossed
    print(f"status lag: {lag:.2f} s")
    assert lag <= 10.0
    body = kube.get("budget.slmfleet.io", "lag", NS)
    conds = {c["type"]: c for c in body["status"]["conditions"]}
    assert conds["Exceeded"]["status"] == "True" and conds["Exceeded"]["reason"] == "Rejecting"
    assert conds["Ready"]["status"] == "True" and conds["LedgerAvailable"]["status"] == "True"
    assert body["status"]["step"] == "reject"
    assert body["status"]["spend"][0]["spentUsd"] <= LAG_CAP
    cm = load_yaml(GITOPS / "argocd" / "argocd-cm-health.yaml")
    script = cm["data"]["resource.customizations.health.slmfleet.io_Budget"]
    assert run_health(script, body)[0] == "Degraded"
    assert "Exceeded" in kube("get", "budget.slmfleet.io", "lag", "-n", NS)
