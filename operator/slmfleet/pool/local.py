"""A pool's residency loop outside Kubernetes: the same collector, plan and repository
calls the operator's ``pool-residency`` loop makes, against Triton servers and a router
given by address (tests, benchmarks and a laptop pool).

Each tick: scrape the router's metrics, turn them into demand per member, tick the
``PoolResidency`` against the servers, then ``publish`` the member states (the caller
rewrites the router configuration: a Loaded member is Ready, an Unloaded one is
scaled to zero, so the router holds or cascades its requests).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

import aiohttp

from ..autoscale.scrape import Collector, ScrapeTargets
from ..local.background import BackgroundLoop
from .demand import WINDOW_S, demand
from .repository import Repository, RepositoryError
from .residency import Change, PoolResidency

log = logging.getLogger("slmfleet.pool")


class PoolLoop(BackgroundLoop):
    thread_name = "pool-residency"
    join_timeout_s = 15.0

    def __init__(
        self,
        residency: PoolResidency,
        *,
        servers: Sequence[str],
        router_metrics: str,
        sids: Mapping[str, str],
        publish: Callable[[dict[str, str]], None],
        on_change: Callable[[Change], None] | None = None,
        interval_s: float = 0.5,
        window_s: float = WINDOW_S,
    ) -> None:
        super().__init__()
        self.residency = residency
        self.servers = list(servers)
        self.router_metrics = router_metrics
        self.sids = dict(sids)
        """Member name -> specialist id (its label in the router's metrics)."""
        self.publish = publish
        """Called with member name -> state after every tick that changed one."""
        self.on_change = on_change or (lambda _c: None)
        self.interval_s = interval_s
        self.window_s = window_s
        self._published: dict[str, str] | None = None

    def states(self) -> dict[str, str]:
        return {n: m.state for n, m in self.residency.members.items()}

    async def tick(self, collector: Collector, session: aiohttp.ClientSession) -> None:
        await collector.scrape(ScrapeTargets(router=[self.router_metrics]))
        wanted, used = demand(collector, self.sids, self.window_s)
        servers = [Repository(s, session) for s in self.servers]
        for change in await self.residency.tick(servers, wanted, used):
            self.on_change(change)
        states = self.states()
        if states != self._published:
            self.publish(states)
            self._published = states

    async def run(self) -> None:
        collector = Collector()
        async with aiohttp.ClientSession() as session:
            try:
                while not self._stop.is_set():
                    try:
                        await self.tick(collector, session)
                    except (RepositoryError, aiohttp.ClientError, OSError) as exc:
                        log.warning("pool %s: %s", self.residency.pool, exc)
                    await asyncio.sleep(self.interval_s)
            finally:
                await collector.close()
