"""Budget.status written from the shared ledger on the real API server: a limit crossed
shows as Exceeded within 10 s, nothing is written while nothing changes, and the Argo CD
health check reads the objects as they really are."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from slmfleet.api.budget import BudgetSpec
from slmfleet.budget.amounts import Amount
from slmfleet.budget.ledger import BudgetLimits
from slmfleet.budget.redis_ledger import RedisLedger, RedisSettings
from slmfleet.budget.statusloop import StatusSync, budget_status_loop
from slmfleet.clients.kube import KubeClient
from slmfleet.local.cluster import free_port
from tests.unit.test_cli_examples import GITOPS, load, run_health

pytestmark = pytest.mark.integration

SPEC = {
    "spend": [
        {"window": "1h", "limitUsd": 1, "action": "reject"},
        {"window": "day", "timeZone": "Europe/Berlin", "limitUsd": 50, "limitTokens": 10**6},
    ],
    "ladder": [{"atPercent": 50, "action": "halveReasoning"}],
}


def manifest(name: str) -> dict:
    return {
        "apiVersion": "slmfleet.io/v1alpha1",
        "kind": "Budget",
        "metadata": {"name": name},
        "spec": SPEC,
    }


def accept(kube, name: str, ns: str) -> None:
    """What the fleet loop writes: Ready for the current generation."""
    status = {
        "observedGeneration": 1,
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Accepted", "message": "applies",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ],
    }  # fmt: skip
    kube("patch", "budget", name, "-n", ns, "--subresource=status", "--type=merge",
         "-p", json.dumps({"status": status}))  # fmt: skip


def health(body: dict) -> tuple[str, str]:
    cm = load(GITOPS / "argocd" / "argocd-cm-health.yaml")
    return run_health(cm["data"]["resource.customizations.health.slmfleet.io_Budget"], body)


def conditions(body: dict) -> dict:
    return {c["type"]: c for c in body["status"].get("conditions", [])}


async def charge(url: str, budget_id: str, usd: float) -> None:
    led = RedisLedger(RedisSettings(url=url))
    b = BudgetLimits.from_spec(budget_id, BudgetSpec.model_validate(SPEC))
    adm = await led.reserve([b], Amount(usd, 1000), ttl_s=30)
    assert adm.admitted
    await led.settle(adm.reservation, Amount(usd, 1000))
    await led.close()


def test_status_follows_the_shared_ledger(cluster, kube, namespace, redis_server, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    ns, name = namespace, "team-spend"
    kube.apply(manifest(name), ns)
    accept(kube, name, ns)
    bid = f"{ns}/{name}"
    get = lambda: kube.get("budget", name, ns)  # noqa: E731

    async def scenario() -> dict:
        client = KubeClient.from_environment()
        ledger = RedisLedger(RedisSettings(url=redis_server.url))
        sync = StatusSync(client, ledger)
        stop = asyncio.Event()

        async def budgets():
            return await client.list("Budget", ns)

        loop = asyncio.create_task(
            budget_status_loop(client, budgets, ledger, interval_s=1.0, stop=stop, sync=sync)
        )

        async def until(pred, what: str, timeout: float = 15.0) -> float:
            t0 = time.monotonic()
            while not pred(await asyncio.to_thread(get)):
                assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
                await asyncio.sleep(0.1)
            return time.monotonic() - t0

        out: dict = {}
        try:
            await until(lambda b: b["status"].get("state") == "Ok", "state Ok")
            out["ok"] = await asyncio.to_thread(get)
            await charge(redis_server.url, bid, 0.6)
            await until(lambda b: b["status"].get("state") == "Degraded", "ladder step")
            out["degraded"] = await asyncio.to_thread(get)
            t0 = time.monotonic()
            await charge(redis_server.url, bid, 0.4)  # exactly the limit
            await until(lambda b: b["status"].get("state") == "Exceeded", "Exceeded", 20)
            out["lag_s"] = time.monotonic() - t0
            out["exceeded"] = await asyncio.to_thread(get)
            # Nothing changes now: no write for several ticks.
            writes, rv = sync.writes, out["exceeded"]["metadata"]["resourceVersion"]
            await asyncio.sleep(4.0)
            out["quiet_writes"] = sync.writes - writes
            out["quiet_rv_same"] = (await asyncio.to_thread(get))["metadata"][
                "resourceVersion"
            ] == rv
        finally:
            stop.set()
            await loop
            await ledger.close()
            await client.close()
        return out

    out = asyncio.run(scenario())

    ok = out["ok"]
    assert conditions(ok)["Ready"]["status"] == "True"  # the fleet loop's condition kept
    assert conditions(ok)["LedgerAvailable"]["status"] == "True"
    assert [w["window"] for w in ok["status"]["spend"]] == ["1h", "day"]
    assert ok["status"]["spend"][1]["resetsAt"].endswith(("T22:00:00Z", "T23:00:00Z"))
    # The fleet loop of the session's operator may have rewritten Ready's message since.
    assert health(ok) == ("Healthy", conditions(ok)["Ready"]["message"])

    deg = out["degraded"]
    assert deg["status"]["step"] == "halveReasoning" and deg["status"]["percent"] == 60
    assert deg["status"]["spend"][0]["spentUsd"] == pytest.approx(0.6)
    assert deg["status"]["spend"][1]["spentTokens"] == 1000
    status, message = health(deg)
    assert status == "Healthy" and "halveReasoning" in message

    exc = out["exceeded"]
    assert out["lag_s"] <= 10.0, out["lag_s"]
    cond = conditions(exc)["Exceeded"]
    assert cond["status"] == "True" and cond["reason"] == "Rejecting"  # action: reject
    print(f"status lag: {out['lag_s']:.2f} s")
    assert exc["status"]["spend"][0]["percent"] == 100
    assert exc["status"]["spend"][0]["resetsAt"]  # when the hour's spend ages out
    assert health(exc)[0] == "Degraded"
    assert out["quiet_writes"] == 0 and out["quiet_rv_same"]
    # kubectl shows the state.
    assert "Exceeded" in kube("get", "budget", name, "-n", ns)


def test_unreachable_ledger_is_unknown_and_degraded_health(cluster, kube, namespace, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    ns, name = namespace, "orphan"
    kube.apply(manifest(name), ns)
    accept(kube, name, ns)

    async def tick() -> int:
        client = KubeClient.from_environment()
        ledger = RedisLedger(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0"))
        sync = StatusSync(client, ledger)
        n = await sync.tick(await client.list("Budget", ns))
        n += await sync.tick(await client.list("Budget", ns))  # unchanged: no write
        await ledger.close()
        await client.close()
        return n

    assert asyncio.run(tick()) == 1
    body = kube.get("budget", name, ns)
    assert body["status"]["state"] == "Unknown"
    assert conditions(body)["LedgerAvailable"]["status"] == "False"
    status, message = health(body)
    assert status == "Degraded" and "unreachable" in message


def test_a_budget_the_runtime_cannot_compute_leaves_the_others_alone(
    cluster, kube, namespace, redis_server, monkeypatch
):
    """A Budget stored before the API refused windows over a year (9999d): the tick
    leaves its status alone and still writes every other Budget's."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    ns = namespace
    for name in ("fine", "stale"):
        kube.apply(manifest(name), ns)
        accept(kube, name, ns)

    async def tick() -> int:
        client = KubeClient.from_environment()
        ledger = RedisLedger(RedisSettings(url=redis_server.url))
        bodies = await client.list("Budget", ns)
        for body in bodies:  # as an older CRD let it in
            if body["metadata"]["name"] == "stale":
                body["spec"]["spend"][0]["window"] = "9999d"
        n = await StatusSync(client, ledger).tick(bodies)
        await ledger.close()
        await client.close()
        return n

    assert asyncio.run(tick()) == 1
    assert kube.get("budget", "fine", ns)["status"]["state"] == "Ok"
    assert "state" not in kube.get("budget", "stale", ns)["status"]
