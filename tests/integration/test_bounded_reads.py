"""Answers from servers a tenant controls are read with bounds, against a real local HTTP
server that answers too much: a pool's repository index (1 MiB), each metrics scrape,
every scrape of a round together, and how many targets are read at once."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from slmfleet.autoscale import scrape
from slmfleet.autoscale.scrape import Collector, ScrapeTargets
from slmfleet.local.triton import free_port
from slmfleet.pool.repository import MAX_ANSWER_BYTES, Repository, RepositoryError

pytestmark = pytest.mark.integration

METRICS = 'slmfleet_router_requests_total{policy="p"} 1\n'


class Server:
    """An aiohttp server whose answers the test sets, streamed in 64 KiB chunks."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.in_flight = self.most_in_flight = 0
        self.delay = 0.0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            body = self.bodies[request.path]
            response = web.StreamResponse()
            await response.prepare(request)
            for i in range(0, len(body), 1 << 16):
                await response.write(body[i : i + (1 << 16)])
            await response.write_eof()
            return response
        finally:
            self.in_flight -= 1


@pytest.fixture
async def server():
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    srv.url = f"http://127.0.0.1:{port}"
    yield srv
    await runner.cleanup()


async def test_a_repository_index_past_its_bound_is_an_error_not_memory(server):
    index = [{"name": f"m{i}", "state": "READY"} for i in range(2000)]
    server.bodies["/v2/repository/index"] = json.dumps(index).encode()
    async with aiohttp.ClientSession() as session:
        repo = Repository(server.url, session)
        got = await repo.index()  # ~70 KiB in many chunks: read whole
        assert len(got) == 2000 and got["m1999"].state == "READY"
        server.bodies["/v2/repository/index"] = b"[" + b" " * (MAX_ANSWER_BYTES + 10) + b"]"
        with pytest.raises(RepositoryError, match=f"larger than {MAX_ANSWER_BYTES} bytes") as err:
            await repo.index()
        assert server.url in str(err.value)  # the pool's server, named


async def test_scrapes_are_bounded_per_target_per_round_and_in_concurrency(server, monkeypatch):
    monkeypatch.setattr(scrape, "MAX_BYTES", 200_000)
    monkeypatch.setattr(scrape, "ROUND_BYTES", 500_000)
    monkeypatch.setattr(scrape, "CONCURRENCY", 2)
    padding = "# " + "x" * 98 + "\n"
    small = (METRICS + padding * 1500).encode()  # 150 KB, many chunks: parsed whole
    server.bodies["/big/metrics"] = small + padding.encode() * 1000  # 250 KB
    urls = []
    for i in range(6):
        server.bodies[f"/r{i}/metrics"] = small
        urls.append(f"{server.url}/r{i}/metrics")
    server.delay = 0.05
    collector = Collector(timeout_s=10)
    try:
        await collector.scrape(ScrapeTargets(router=[f"{server.url}/big/metrics"]))
        assert "larger than 200000 bytes" in collector.errors[f"{server.url}/big/metrics"]
        await collector.scrape(ScrapeTargets(router=urls))
        ok = [u for u in urls if u not in collector.errors]
        spent = [u for u in urls if "byte budget is spent" in collector.errors.get(u, "")]
        # 150 KB each: at most 3 fit the round's 500 KB; the rest are refused, not read
        assert 2 <= len(ok) <= 3 and len(ok) + len(spent) == 6, collector.errors
        assert all(collector.samples[u] for u in ok)
        assert server.most_in_flight == 2
    finally:
        await collector.close()
