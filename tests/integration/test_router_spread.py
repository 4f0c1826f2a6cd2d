"""Load over every replica: requests are balanced per request over a specialist's Triton
servers, and replicas added under steady load take their share within seconds.

Four real tritonserver processes serve the same slow stand-in; the router starts with
two of them listed (``SpecialistConfig.replicas``, as the local fleet lists its own
servers), then the config lists all four. Shares are counted by Triton itself."""

from __future__ import annotations

import asyncio
import copy
import re
import time
import urllib.request

import httpx
import pytest

from slmfleet.local.models import StandIn
from slmfleet.router import metrics as m

from .router_support import RouterThread, wait_for, write_config

pytestmark = pytest.mark.integration

_SUCCESS = re.compile(r'^nv_inference_request_success\{model="gen",version="1"\} (\S+)$', re.M)


def served(server) -> int:
    """Requests the server's model completed, from Triton's own metrics."""
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    found = _SUCCESS.search(text)
    return int(float(found.group(1))) if found else 0


def config(replicas: list[str]) -> dict:
    return {
        "version": 1,
        "specialists": [
            {
                "id": "shop/gen",
                "endpoint": "gen.shop.svc:8001",
                "replicas": replicas,
                "tritonModel": "gen",
                "backend": "python",
                "ready": True,
            }
        ],
        "policies": [
            {
                "modelName": "gen",
                "id": "shop/gen",
                "specialists": ["shop/gen"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [{"name": "routed", "routed": True}],
            }
        ],
    }


async def test_new_replicas_take_their_share_within_seconds(start_triton, tmp_path):
    model = {"gen": StandIn("generalist", {"token_delay_ms": "10"})}
    servers = [start_triton(model) for _ in range(4)]
    path = tmp_path / "router.json"
    write_config(path, config([s.grpc_url for s in servers[:2]]))
    body = {"model": "gen", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    with RouterThread(path, poll_s=0.1) as r:
        stop = False
        statuses: list[int] = []

        async def worker(c: httpx.AsyncClient) -> None:
            while not stop:
                resp = await c.post("/v1/chat/completions", json=body)
                statuses.append(resp.status_code)

        async with httpx.AsyncClient(base_url=r.url, timeout=30) as c:
            tasks = [asyncio.create_task(worker(c)) for _ in range(8)]
            await asyncio.sleep(3)
            assert [served(s) for s in servers[2:]] == [0, 0]  # not listed yet
            digest = r.app.snapshot.digest
            write_config(path, config([s.grpc_url for s in servers]))
            await wait_for(lambda: r.app.snapshot.digest != digest, timeout=10)
            scaled = time.monotonic()
            await asyncio.sleep(1)
            start = [served(s) for s in servers]
            await asyncio.sleep(4)
            end = [served(s) for s in servers]
            stop = True
            await asyncio.gather(*tasks)
        counts = [b - a for a, b in zip(start, end, strict=True)]
        total = sum(counts)
        assert total > 40, counts
        fair = total / 4
        # Every replica, the two new ones included, works within seconds of the change.
        assert all(c >= 0.5 * fair for c in counts), (counts, time.monotonic() - scaled)
        assert set(statuses) == {200}
        assert m.REPLICAS.labels("gen.shop.svc:8001", "active")._value.get() == 4

        # Removing two replicas drains them: they get no new requests, nothing fails.
        new_cfg = copy.deepcopy(config([s.grpc_url for s in servers[2:]]))
        digest = r.app.snapshot.digest
        write_config(path, new_cfg)
        await wait_for(lambda: r.app.snapshot.digest != digest, timeout=10)
        await asyncio.sleep(0.5)
        before = [served(s) for s in servers[:2]]
        async with httpx.AsyncClient(base_url=r.url, timeout=30) as c:
            got = await asyncio.gather(
                *(c.post("/v1/chat/completions", json=body) for _ in range(20))
            )
        assert {g.status_code for g in got} == {200}
        assert [served(s) for s in servers[:2]] == before
        await wait_for(
            lambda: m.REPLICAS.labels("gen.shop.svc:8001", "active")._value.get() == 2, 5
        )
