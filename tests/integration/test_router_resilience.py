"""Hot reload under load, and a Triton server that goes away and comes back."""

from __future__ import annotations

import asyncio
import copy
import time

import httpx
import pytest

from slmfleet.local import TritonServer
from slmfleet.local.models import BILLING_EXAMPLES, StandIn

from .router_support import RouterThread, fleet_config, wait_for, write_config

pytestmark = pytest.mark.integration


async def test_hot_reload_under_load_loses_no_request(triton, tmp_path):
    path = tmp_path / "router.json"
    cfg = fleet_config(triton.grpc_url)
    write_config(path, cfg)
    with RouterThread(path, poll_s=0.05) as r:
        results: list[int] = []
        stop = False

        async def worker(ac: httpx.AsyncClient) -> None:
            while not stop:
                resp = await ac.post(
                    "/v1/chat/completions",
                    json={
                        "model": "support",
                        "messages": [{"role": "user", "content": "where is my package"}],
                    },
                )
                results.append(resp.status_code)

        async with httpx.AsyncClient(base_url=r.url, timeout=30) as ac:
            tasks = [asyncio.create_task(worker(ac)) for _ in range(6)]
            digests = {r.app.snapshot.digest}
            for i in range(5):
                new = copy.deepcopy(cfg)
                new["policies"].append(
                    {
                        "modelName": f"extra-{i}",
                        "id": f"shop/extra-{i}",
                        "specialists": ["shop/generalist"],
                        "routing": {"semantic": {"enabled": False}},
                        "cascade": [{"name": "routed", "routed": True}],
                    }
                )
                write_config(path, new)
                await wait_for(lambda: r.app.snapshot.digest not in digests, timeout=10)
                digests.add(r.app.snapshot.digest)
                resp = await ac.post(
                    "/v1/chat/completions",
                    json={"model": f"extra-{i}", "messages": [{"role": "user", "content": "hi"}]},
                )
                assert resp.status_code == 200
                await asyncio.sleep(0.2)
            stop = True
            await asyncio.gather(*tasks)
        assert len(results) > 20
        assert set(results) == {200}
        # a broken config is refused; the old snapshot keeps serving
        before = r.app.snapshot.digest
        path.write_text("{not valid")
        await asyncio.sleep(0.4)
        assert r.app.snapshot.digest == before


async def test_triton_stopped_mid_run_falls_back_and_recovers(start_triton, tmp_path):
    models = {"domain-billing": StandIn.domain(BILLING_EXAMPLES)}
    server = start_triton(models)
    port = server.grpc_port
    cfg = fleet_config(server.grpc_url)
    cfg["policies"] = [
        {
            "modelName": "billing",
            "id": "shop/b",
            "specialists": ["shop/billing"],
            "routing": {"semantic": {"enabled": False}},
            "cascade": [
                {"name": "routed", "routed": True, "timeoutMs": 2000},
                {"name": "review", "human": {"queue": "ops", "message": "queued"}},
            ],
        }
    ]
    path = tmp_path / "router.json"
    write_config(path, cfg)
    body = {"model": "billing", "messages": [{"role": "user", "content": "refund my invoice"}]}
    with RouterThread(path) as r, httpx.Client(base_url=r.url, timeout=30) as c:
        resp = c.post("/v1/chat/completions", json=body)
        assert resp.headers["x-slmfleet-tier"] == "routed"
        server.stop()
        tiers = []
        for _ in range(6):
            resp = c.post("/v1/chat/completions", json=body)
            assert resp.status_code == 200
            tiers.append((resp.headers["x-slmfleet-tier"], resp.headers["x-slmfleet-escalations"]))
        assert all(t == "review" for t, _ in tiers)
        reasons = {e for _, e in tiers}
        assert "routed:error" in reasons and "routed:circuit_open" in reasons
        # bring it back on the same port (the router's config does not change)
        restarted = TritonServer(
            server.model_repository,
            grpc_port=port,
            log_path=tmp_path / "triton2.log",
            startup_timeout=180,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                restarted.start()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)  # the old server may still hold the port
        try:
            recovered_at = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                resp = c.post("/v1/chat/completions", json=body)
                assert resp.status_code == 200
                if resp.headers["x-slmfleet-tier"] == "routed":
                    recovered_at = time.monotonic()
                    break
                time.sleep(0.2)
            assert recovered_at is not None, "router never went back to the specialist"
        finally:
            restarted.stop()
