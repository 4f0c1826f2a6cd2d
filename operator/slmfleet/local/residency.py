"""Scale to zero on a laptop: Triton's explicit model control stands in for replicas.

In a cluster a specialist at zero replicas has no Pod; on ``slmfleet up`` it is a model
unloaded from the local Triton server(s). The contract is the cluster's, on the same
parts: the router holds a request for it (``slmfleet_router_waiting_requests``) or
cascades it (``slmfleet_router_no_replica_total``), as its policy says; this loop reads
those metrics with the built-in autoscaler's own collector and decision function
(``autoscale.scrape``, ``autoscale.decide``), and acts as the operator and the
Deployment would: from zero it loads the model (Triton's repository API) and then tells
the router it is servable again; to zero (after ``scaleToZeroAfterSeconds`` without
demand) it first tells the router (``scaledToZero`` in its configuration, as the
operator renders it) and then unloads the model.

Only specialists with ``serving.replicas.min: 0`` (and the builtin mode) take part;
locally "replicas" are 0 (unloaded) or 1 (loaded on every local Triton server).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiohttp

from ..api.routerconfig import RouterConfig
from ..autoscale.decide import ScalePolicy, ScalerState, decide
from ..autoscale.scrape import Collector, ScrapeTargets
from .background import BackgroundLoop

log = logging.getLogger("slmfleet.local")


@dataclass
class Member:
    """One specialist that may be unloaded."""

    sid: str
    model: str
    """Its model name inside Triton."""
    policy: ScalePolicy
    """Its spec's policy, at most one replica (loaded or not)."""
    window_s: float
    loaded: bool = True
    state: ScalerState = field(default_factory=ScalerState)


@dataclass(frozen=True)
class Change:
    """What one tick did to one member (for the console, tests and the benchmark)."""

    sid: str
    loaded: bool
    reason: str
    message: str
    seconds: float
    """How long loading (or unloading) took."""


def with_scaled_to_zero(config: RouterConfig, zero: set[str]) -> RouterConfig:
    """The router configuration with the specialists in ``zero`` not Ready and scaled to
    zero, the others Ready: what the operator renders from their status."""
    return config.model_copy(
        update={
            "specialists": [
                s.model_copy(update={"ready": s.id not in zero, "scaled_to_zero": s.id in zero})
                for s in config.specialists
            ]
        }
    )


def write_config(path: Path, config: RouterConfig) -> None:
    """Written whole, then renamed into place: the router never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(config.model_dump_json(by_alias=True, exclude_none=True))
    tmp.replace(path)


def local_policy(policy: ScalePolicy) -> ScalePolicy:
    """The spec's policy with at most one replica: a model is loaded or it is not."""
    return replace(policy, max_replicas=1, min_replicas=min(policy.min_replicas, 1))


class Residency(BackgroundLoop):
    """Load and unload idle models as their demand says; ``tick`` once, or ``start``."""

    thread_name = "residency"
    join_timeout_s = 10.0

    def __init__(
        self,
        members: Sequence[Member],
        *,
        router_metrics: str,
        triton_http: Sequence[str],
        publish: Callable[[set[str]], None],
        on_change: Callable[[Change], None] | None = None,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.members = {m.sid: m for m in members}
        self.router_metrics = router_metrics
        self.triton_http = list(triton_http)
        self.publish = publish
        """Writes the router configuration with these specialists scaled to zero."""
        self.on_change = on_change or (lambda _c: None)
        self.interval_s = interval_s
        self.clock = clock
        self.collector = Collector(clock=clock)
        self._session: aiohttp.ClientSession | None = None

    @property
    def unloaded(self) -> set[str]:
        return {sid for sid, m in self.members.items() if not m.loaded}

    async def tick(self) -> list[Change]:
        await self.collector.scrape(ScrapeTargets(router=[self.router_metrics]))
        changes = []
        for m in self.members.values():
            signals, why = self.collector.signals(m.sid, triton_model=None, window_s=m.window_s)
            current = 1 if m.loaded else 0
            d = decide(
                signals,
                current=current,
                ready=current,
                policy=m.policy,
                state=m.state,
                now=self.clock(),
                missing=why or "no metrics",
            )
            m.state = d.state
            if d.replicas == current:
                continue
            began = time.monotonic()
            if d.replicas > current:
                await self._repository(m.model, "load")
                m.loaded = True
                self.publish(self.unloaded)
            else:
                m.loaded = False
                self.publish(self.unloaded)
                await asyncio.sleep(1.0)  # the router reloads its configuration first
                await self._repository(m.model, "unload")
            change = Change(m.sid, m.loaded, d.reason, d.message, time.monotonic() - began)
            log.info("%s: %s (%s: %s)", m.sid, "loaded" if m.loaded else "unloaded",
                     d.reason, d.message)  # fmt: skip
            self.on_change(change)
            changes.append(change)
        return changes

    async def _repository(self, model: str, action: str) -> None:
        """Load or unload on every local Triton server (each holds every model)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))

        async def one(base: str) -> None:
            assert self._session is not None
            url = f"{base}/v2/repository/models/{model}/{action}"
            async with self._session.post(url, json={}) as r:
                if r.status != 200:
                    raise RuntimeError(f"{action} {model} on {base}: HTTP {r.status}")

        await asyncio.gather(*(one(b) for b in self.triton_http))

    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    await self.tick()
                except (aiohttp.ClientError, RuntimeError, OSError) as exc:
                    log.warning("residency: %s", exc)
                await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))
        finally:
            await self.close()

    async def close(self) -> None:
        await self.collector.close()
        if self._session is not None:
            await self._session.close()
