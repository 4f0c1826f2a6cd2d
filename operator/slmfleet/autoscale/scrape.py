"""Scrape the router Pods' and Triton's ``/metrics`` and keep a trailing window per source.

The I/O half of the signals: fetch every target concurrently (bounded time, size per
target and per round, and how many at once), parse with ``signals.parse``, keep the
samples of the longest window any specialist can ask for, and answer ``Signals`` per
specialist, or why there are none. Missing data is explicit: when any router target
failed its latest scrape the answer is "no signals" (the autoscaler holds), because the
traffic of the missing router would be unseen and could look like a lull; a Triton
target that fails only drops the queue signal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from ..clients.bounded import ByteBudget, read_capped
from .decide import Signals
from .signals import NAMES, MetricNames, Sample, parse, signals_for, source_window

#: Longest window a spec may ask for (AutoscalingSpec.window_seconds), plus a margin.
HISTORY_S = 660.0
MAX_BYTES = 16 << 20  # a scrape larger than this is refused, not parsed
#: All targets of one round together (the targets include tenants' Triton Pods), and
#: how many are read at once: a round costs at most this much memory, whatever answers.
ROUND_BYTES = 64 << 20
CONCURRENCY = 32


@dataclass(frozen=True)
class ScrapeTargets:
    """Where to scrape: every router Pod, and the Triton Pods of each specialist id."""

    router: Sequence[str]
    triton: Mapping[str, Sequence[str]] = field(default_factory=dict)
    unavailable: str = ""
    """Why there are no targets, when discovering them failed."""


class Collector:
    def __init__(
        self,
        *,
        names: MetricNames = NAMES,
        timeout_s: float = 2.0,
        history_s: float = HISTORY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.names = names
        self.timeout_s = timeout_s
        self.history_s = history_s
        self.clock = clock
        self.samples: dict[str, list[Sample]] = {}
        self.errors: dict[str, str] = {}  # url -> why its latest scrape failed
        self.targets = ScrapeTargets(router=())
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _fetch(self, url: str, budget: ByteBudget | None = None) -> str:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"Accept": "text/plain;version=0.0.4"},
            )
        async with self._session.get(url) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = await read_capped(response, MAX_BYTES, budget)
            return body.decode("utf-8", errors="replace")

    async def _one(self, url: str, budget: ByteBudget, slots: asyncio.Semaphore) -> None:
        try:
            async with slots:
                text = await self._fetch(url, budget)
            sample = parse(text, self.clock(), self.names)
        except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeError) as err:
            self.errors[url] = f"{type(err).__name__}: {err}".rstrip(": ")
            return
        self.errors.pop(url, None)
        ring = self.samples.setdefault(url, [])
        ring.append(sample)
        horizon = sample.at - self.history_s
        while len(ring) > 2 and ring[1].at <= horizon:
            ring.pop(0)

    async def scrape(self, targets: ScrapeTargets) -> None:
        """One round over every target (each URL once); forget targets that are gone."""
        self.targets = targets
        urls = {*targets.router, *(u for us in targets.triton.values() for u in us)}
        for gone in set(self.samples) - urls:
            del self.samples[gone]
        for gone in set(self.errors) - urls:
            del self.errors[gone]
        budget, slots = ByteBudget(ROUND_BYTES), asyncio.Semaphore(CONCURRENCY)
        await asyncio.gather(*(self._one(u, budget, slots) for u in sorted(urls)))

    def warming(self) -> bool:
        """A router target answers but has not given a whole first window yet (the
        operator just started, or a router Pod is new)."""
        return any(
            u not in self.errors and len(self.samples.get(u, [])) < 2 for u in self.targets.router
        )

    def signals(
        self,
        specialist: str,
        *,
        triton_model: str | None,
        window_s: float,
        feeds: Sequence[tuple[str, str]] = (),
    ) -> tuple[Signals | None, str]:
        """The specialist's Signals over ``window_s``, or None and why not."""
        routers = self.targets.router
        if not routers:
            return None, self.targets.unavailable or "no router to scrape"
        failed = [f"{u}: {self.errors[u]}" for u in routers if u in self.errors]
        if failed:
            return None, "router metrics unreachable (" + "; ".join(failed) + ")"
        router = [source_window(self.samples.get(u, []), window_s) for u in routers]
        if any(w is None for w in router):
            return None, "collecting a first window of router metrics"
        triton = []
        for url in self.targets.triton.get(specialist, ()):
            w = None if url in self.errors else source_window(self.samples.get(url, []), window_s)
            if w is not None:
                triton.append(w)
        windows = [w for w in router if w is not None]
        return signals_for(specialist, triton_model, windows, triton, feeds), ""
