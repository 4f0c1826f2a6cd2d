"""The Pods behind a specialist come from its Service's EndpointSlices, watched on the
real API server: the router balances over the ready ones, follows additions and
removals within seconds, and holds requests while there are none (scale from zero).

The slices (a selector-less Service with its own EndpointSlices, as any controller may
write them) describe real tritonserver processes on this machine. The API server refuses
loopback addresses in EndpointSlices, and tests send traffic to loopback only, so each
slice names its server as 192.0.2.N (TEST-NET-1, never contacted) with the server's
port, and the router's discovery maps 192.0.2.N:port to 127.0.0.1:port. The endpoint
the config names (``gen.<namespace>.svc:8001``) resolves nowhere: every answer proves
the router used the discovered addresses."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request

import httpx
import pytest

from slmfleet.local.models import StandIn
from slmfleet.router import metrics as m
from slmfleet.router.triton.discovery import EndpointSlices, kubeconfig_access

from .router_support import RouterThread, wait_for, write_config

pytestmark = pytest.mark.integration

_SUCCESS = re.compile(r'^nv_inference_request_success\{model="gen",version="1"\} (\S+)$', re.M)


def served(server) -> int:
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    found = _SUCCESS.search(text)
    return int(float(found.group(1))) if found else 0


def to_loopback(address: str) -> str:
    host, _, port = address.rpartition(":")
    assert host.startswith("192.0.2."), address
    return f"127.0.0.1:{port}"


def endpoint_slice(name: str, server, *, ready: bool = True) -> dict:
    n = 1 if name.endswith("a") else 2
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/service-name": "gen",
                "endpointslice.kubernetes.io/managed-by": "slmfleet-tests",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": server.grpc_port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [f"192.0.2.{n}"], "conditions": {"ready": ready}}],
    }


def config(namespace: str) -> dict:
    return {
        "version": 1,
        "specialists": [
            {
                "id": f"{namespace}/gen",
                "endpoint": f"gen.{namespace}.svc:8001",
                "tritonModel": "gen",
                "backend": "python",
                "ready": True,
            }
        ],
        "policies": [
            {
                "modelName": "gen",
                "id": f"{namespace}/gen",
                "specialists": [f"{namespace}/gen"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [{"name": "routed", "routed": True, "timeoutMs": 20000}],
            }
        ],
    }


async def test_replicas_follow_the_endpointslices(cluster, kube, namespace, start_triton, tmp_path):
    servers = [start_triton({"gen": StandIn("generalist")}) for _ in range(2)]
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "gen"},
            "spec": {"ports": [{"name": "grpc", "port": 8001, "protocol": "TCP"}]},
        },
        namespace,
    )
    kube.apply(endpoint_slice("gen-a", servers[0]), namespace)
    path = tmp_path / "router.json"
    write_config(path, config(namespace))
    discovery = EndpointSlices(kubeconfig_access(str(cluster.kubeconfig)), map_address=to_loopback)
    key = f"gen.{namespace}.svc:8001"
    body = {"model": "gen", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}

    def active() -> float:
        return m.REPLICAS.labels(key, "active")._value.get()

    with RouterThread(path, discovery=discovery) as r:
        rs = r.app.pool.replica_set(key)
        await wait_for(lambda: rs.source == "endpointslices", timeout=20)
        assert [x.address for x in rs.active()] == [f"127.0.0.1:{servers[0].grpc_port}"]
        async with httpx.AsyncClient(base_url=r.url, timeout=30) as c:

            async def burst(n: int = 24) -> list[int]:
                got = await asyncio.gather(
                    *(c.post("/v1/chat/completions", json=body) for _ in range(n))
                )
                return [g.status_code for g in got]

            assert set(await burst()) == {200}

            # A second Pod appears: it takes requests within seconds.
            kube.apply(endpoint_slice("gen-b", servers[1]), namespace)
            await wait_for(lambda: active() == 2, timeout=10)
            before = served(servers[1])
            assert set(await burst()) == {200}
            assert served(servers[1]) - before >= 6  # a real share of 24, not a trickle

            # The first one goes not-ready: no new requests reach it.
            kube.apply(endpoint_slice("gen-a", servers[0], ready=False), namespace)
            await wait_for(lambda: active() == 1, timeout=10)
            before = served(servers[0])
            assert set(await burst()) == {200}
            assert served(servers[0]) == before

            # Scaled to zero: requests wait for a replica, then get one.
            kube("delete", "endpointslice", "gen-b", "-n", namespace)
            await wait_for(lambda: active() == 0, timeout=10)
            waiting = m.WAITING.labels(f"{namespace}/gen")
            pending = asyncio.create_task(c.post("/v1/chat/completions", json=body))
            await wait_for(lambda: waiting._value.get() == 1, timeout=10)
            kube.apply(endpoint_slice("gen-a", servers[0]), namespace)
            resp = await asyncio.wait_for(pending, 20)
            assert resp.status_code == 200 and waiting._value.get() == 0
    assert json.loads(kube("get", "endpointslices", "-n", namespace, "-o", "json"))["items"]
