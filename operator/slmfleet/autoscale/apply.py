"""The act half of the autoscaler: decide every specialist in ``builtin`` mode each tick
and record it.

Each tick scrapes the router and Triton once (``Collector``), then, per SLMSpecialist:
``decide`` -> the ``scale`` subresource (only when the count changes; an Event says from
what to what and why) -> a server-side apply of the status fields this loop owns
(``desiredReplicas``, ``lastScaleTime``, ``observed``, the ``Scaling`` condition) under
its own field manager, only when they changed. The operator's Deployment follows
``spec.replicas`` (render/specialist.replica_count). Everything the loop needs comes in
as arguments (the Kubernetes client, where the specialists and scrape targets come
from, the escalation feeds, clocks), so it runs the same under the operator's
supervisor, in tests against the real API server, and in benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from ..api.base import API_VERSION, now_rfc3339
from ..api.specialist import SLMSpecialistSpec
from ..clients.kube import ApiError
from ..render.specialist import replica_count
from . import decide as D
from .decide import Decision, ScalePolicy, ScalerState
from .record import (
    MANAGER,
    SCALING,
    claimants,
    event_body,
    observed,
    resource_version,
    scaling_condition,
)
from .scrape import Collector, ScrapeTargets

log = logging.getLogger("slmfleet.autoscaler")

CONFLICT = "ConflictingAutoscaler"
INVALID = "InvalidSpec"
#: A specialist whose decision failed unexpectedly: held, said on its own status.
FAILED = "ScalerError"
#: The Scaling condition's reason when another owner sets the replicas.
EXTERNAL = {"hpa": "ScaledByHPA", "keda": "ScaledByKEDA", "none": "ManualScaling"}
#: Reasons that also get a Warning Event when they start.
WARN = (D.MISSING, CONFLICT, INVALID, FAILED)
#: Outcome of a tick that waits for the first window of a new router's metrics: nothing
#: is decided or written (a restart must not flip every specialist to MetricsUnavailable).
WARMING = "CollectingFirstWindow"


class ScaleClient(Protocol):
    """What the loop needs from a Kubernetes client (clients.kube.KubeClient has it)."""

    async def patch_scale(
        self, kind: str, namespace: str, name: str, replicas: int
    ) -> dict[str, Any]: ...
    async def apply_status(self, obj: dict[str, Any], *, manager: str) -> dict[str, Any]: ...
    async def create(self, obj: dict[str, Any]) -> dict[str, Any]: ...
    async def list(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class AutoscalerConfig:
    interval_s: float = 5.0
    """Time between ticks (scrape + decide + act)."""
    status_refresh_s: float = 60.0
    """observed values and messages alone are rewritten at most this often."""
    detect_conflicts: bool = True
    """List HorizontalPodAutoscalers to find a second owner of a builtin specialist."""


@dataclass
class Tracked:
    """The loop's memory of one specialist."""

    state: ScalerState = field(default_factory=ScalerState)
    written: tuple[int, int, int] | None = None  # (replicas, resourceVersion, generation)
    # of our last scale write
    status_at: float = float("-inf")  # when we last wrote its status
    condition: dict[str, Any] | None = None  # the Scaling condition we last wrote
    sent: tuple[int, dict[str, Any]] | None = None  # (resourceVersion, status) of that write


@dataclass(frozen=True)
class Outcome:
    """What one tick did for one specialist (for logs, tests and benchmarks)."""

    key: str
    replicas: int | None
    reason: str
    scaled: bool
    status_written: bool


class Autoscaler:
    """The built-in autoscaler's loop. ``specialists`` returns the current SLMSpecialist
    bodies (the operator's watch cache), ``targets`` where to scrape, ``feeds`` the
    escalation feeds by specialist id (signals.escalation_feeds of the router config)."""

    def __init__(
        self,
        kube: ScaleClient,
        *,
        specialists: Callable[[], Iterable[dict[str, Any]]],
        targets: Callable[[], Awaitable[ScrapeTargets]],
        feeds: Callable[[], Mapping[str, Sequence[tuple[str, str]]]] = dict,
        collector: Collector | None = None,
        config: AutoscalerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        spec_of: Callable[[dict[str, Any]], SLMSpecialistSpec] | None = None,
    ) -> None:
        self.kube = kube
        self.spec_of = spec_of or (lambda body: SLMSpecialistSpec.model_validate(body["spec"]))
        """Validates a body's spec (the operator passes its cache of validated specs)."""
        self.specialists = specialists
        self.targets = targets
        self.feeds = feeds
        self.collector = collector or Collector()
        self.config = config or AutoscalerConfig()
        self.clock = clock
        self.tracked: dict[str, Tracked] = {}
        self.instance = socket.gethostname()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Tick every interval until ``stop`` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        try:
            while not stop.is_set():
                started = self.clock()
                await self.tick()
                delay = max(0.0, self.config.interval_s - (self.clock() - started))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
        finally:
            await self.collector.close()

    async def tick(self) -> list[Outcome]:
        bodies = [b for b in self.specialists() if not b["metadata"].get("deletionTimestamp")]
        keys = {f"{b['metadata']['namespace']}/{b['metadata']['name']}" for b in bodies}
        for gone in set(self.tracked) - keys:
            del self.tracked[gone]
        if not bodies:
            return []
        try:
            targets = await self.targets()
        except Exception as err:  # discovery failing must not end the loop: hold instead
            log.warning("scrape targets unavailable: %s", err)
            targets = ScrapeTargets(router=(), unavailable=f"scrape targets unavailable: {err}")
        await self.collector.scrape(targets)
        hpas = await self._hpas()
        feeds = self.feeds()
        outcomes = []
        for body in bodies:
            try:
                outcomes.append(await self._one(body, hpas, feeds))
            except ApiError as err:  # one object's failure never stops the others
                if err.status != 404:
                    log.warning("%s: %s", body["metadata"]["name"], err)
            except Exception as err:  # nor does a bug one tenant's spec trips (a poison
                # value must not fail every tick, turn liveness red and crash-loop the
                # operator for all tenants): hold it and say so on its own status
                outcomes.append(await self._failed(body, err))
        return outcomes

    async def _failed(self, body: dict[str, Any], err: Exception) -> Outcome:
        meta = body["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        log.warning("%s: autoscaling failed, replicas held: %r", key, err)
        message = f"autoscaling failed, replicas held: {type(err).__name__}: {err}"[:1024]
        tracked = self.tracked.setdefault(key, Tracked())
        tracked.state = ScalerState()
        try:
            written = await self._status(body, tracked, "False", FAILED, message, {}, None)
        except Exception as status_err:
            log.warning("%s: status not written: %s", key, status_err)
            written = False
        return Outcome(key, None, FAILED, False, written)

    async def _hpas(self) -> list[dict[str, Any]] | None:
        if not self.config.detect_conflicts:
            return []
        try:
            return await self.kube.list("HorizontalPodAutoscaler")
        except ApiError as err:
            log.warning("cannot list HorizontalPodAutoscalers (conflicts unseen): %s", err)
            return None

    async def _one(
        self,
        body: dict[str, Any],
        hpas: list[dict[str, Any]] | None,
        feeds: Mapping[str, Sequence[tuple[str, str]]],
    ) -> Outcome:
        meta, status = body["metadata"], body.get("status") or {}
        ns, name = meta["namespace"], meta["name"]
        key = f"{ns}/{name}"
        tracked = self.tracked.setdefault(key, Tracked())
        try:
            spec = self.spec_of(body)
            policy = ScalePolicy.from_spec(spec)
        except (ValidationError, ValueError) as err:
            message = str(err).splitlines()[0]
            written = await self._status(body, tracked, "False", INVALID, message, {}, None)
            return Outcome(key, None, INVALID, False, written)
        mode = spec.serving.autoscaling.mode
        if mode != "builtin":
            tracked.state = ScalerState()
            owner = {"hpa": "an HPA", "keda": "KEDA", "none": "hand (kubectl scale)"}[mode]
            message = f"serving.autoscaling.mode is {mode}: replicas are set by {owner}"
            written = await self._status(body, tracked, "False", EXTERNAL[mode], message, {}, None)
            return Outcome(key, None, EXTERNAL[mode], False, written)
        others = claimants(hpas or [], ns, name)
        if others:
            tracked.state = ScalerState()
            message = (
                f"HorizontalPodAutoscaler {', '.join(others)} also targets this specialist; "
                "holding replicas: delete it or set serving.autoscaling.mode to hpa or keda"
            )
            written = await self._status(body, tracked, "False", CONFLICT, message, {}, None)
            return Outcome(key, None, CONFLICT, False, written)

        spec_replicas, generation = spec.replicas, meta.get("generation") or 0
        if tracked.written and resource_version(body) < tracked.written[1]:
            spec_replicas, _, generation = tracked.written  # the cache lags our write
        current = replica_count(spec.model_copy(update={"replicas": spec_replicas}))
        ready = int(status.get("readyReplicas") or 0)
        signals, why = self.collector.signals(
            key,
            triton_model=status.get("tritonModel") or name,
            window_s=float(spec.serving.autoscaling.window_seconds),
            feeds=feeds.get(key, ()),
        )
        if signals is None and self.collector.warming():
            return Outcome(key, None, WARMING, False, False)
        decision = D.decide(
            signals,
            current=current,
            ready=ready,
            policy=policy,
            state=tracked.state,
            now=self.clock(),
            missing=why,
        )
        tracked.state = decision.state
        # Against the count the Deployment runs (spec.replicas within the bounds): a change
        # there is a scale, with its Event. A spec.replicas the bounds override (the
        # default 1 under a min of 3, a count above a lowered max) is set to what runs,
        # quietly, so `kubectl get slm` shows the truth.
        scaled = decision.replicas != current
        if scaled or decision.replicas != spec_replicas:
            # A spec change: the generation moves on (the Scale reply does not carry it).
            generation += 1
            await self._scale(body, tracked, current, decision, generation, event=scaled)
        ok = "False" if decision.reason == D.MISSING else "True"
        obs = (
            observed(signals, current, spec.cost.replica_hour_usd, now_rfc3339()) if signals else {}
        )
        written = await self._status(
            body, tracked, ok, decision.reason, decision.message, obs, decision.replicas,
            scaled=scaled, generation=generation,
        )  # fmt: skip
        return Outcome(key, decision.replicas, decision.reason, scaled, written)

    async def _scale(
        self,
        body: dict[str, Any],
        tracked: Tracked,
        current: int,
        decision: Decision,
        generation: int,
        *,
        event: bool = True,
    ) -> None:
        meta = body["metadata"]
        scale = await self.kube.patch_scale(
            "SLMSpecialist", meta["namespace"], meta["name"], decision.replicas
        )
        tracked.written = (decision.replicas, resource_version(scale), generation)
        if not event:
            return
        log.info("%s/%s: %s -> %s replicas: %s (%s)", meta["namespace"], meta["name"], current,
                 decision.replicas, decision.reason, decision.message)  # fmt: skip
        message = f"scaled from {current} to {decision.replicas}: {decision.message}"
        await self._event(body, "Normal", decision.reason, message)

    async def _event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        event = event_body(body, type_, reason, message, self.instance)
        try:
            await self.kube.create(event)
        except ApiError as err:  # an Event is a courtesy: never fail the tick for it
            log.warning("event not recorded: %s", err)

    async def _status(
        self,
        body: dict[str, Any],
        tracked: Tracked,
        cond_status: str,
        reason: str,
        message: str,
        obs: dict[str, Any],
        desired: int | None,
        *,
        scaled: bool = False,
        generation: int | None = None,
    ) -> bool:
        """Apply this loop's status fields when they changed; True if written."""
        meta, live = body["metadata"], body.get("status") or {}
        if tracked.sent and resource_version(body) < tracked.sent[0]:
            live = tracked.sent[1]  # the cache has not seen our last write yet
        live_cond = next(
            (c for c in live.get("conditions") or [] if c.get("type") == SCALING), None
        )
        before = tracked.condition or live_cond
        generation = generation if generation is not None else meta.get("generation")
        cond = scaling_condition(cond_status, reason, message, generation, before)
        status: dict[str, Any] = {"conditions": [cond]}
        if desired is not None:
            status["desiredReplicas"] = desired
        if obs:
            status["observed"] = obs
        last_scale = now_rfc3339() if scaled else live.get("lastScaleTime")
        if last_scale:
            status["lastScaleTime"] = last_scale

        def material(s: Mapping[str, Any], c: Mapping[str, Any] | None) -> tuple:
            c = c or {}
            return (s.get("desiredReplicas"), s.get("lastScaleTime"), c.get("status"),
                    c.get("reason"), c.get("observedGeneration"))  # fmt: skip

        def detail(s: Mapping[str, Any], c: Mapping[str, Any] | None) -> tuple:
            o = {k: v for k, v in (s.get("observed") or {}).items() if k != "time"}
            return o, (c or {}).get("message")

        now = self.clock()
        changed = material(status, cond) != material(live, live_cond)
        stale = detail(status, cond) != detail(live, live_cond)
        if not changed and not (stale and now - tracked.status_at >= self.config.status_refresh_s):
            return False
        obj = {
            "apiVersion": API_VERSION,
            "kind": "SLMSpecialist",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "status": status,
        }
        applied = await self.kube.apply_status(obj, manager=MANAGER)
        tracked.status_at, tracked.condition = now, cond
        tracked.sent = (resource_version(applied), applied.get("status") or {})
        if reason in WARN and reason != (before or {}).get("reason"):
            await self._event(body, "Warning", reason, message)
        return True


async def run_autoscaler(
    kube: ScaleClient,
    specialists: Callable[[], Iterable[dict[str, Any]]],
    targets: Callable[[], Awaitable[ScrapeTargets]],
    *,
    feeds: Callable[[], Mapping[str, Sequence[tuple[str, str]]]] = dict,
    config: AutoscalerConfig | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """The loop to register with the operator's supervisor (see docs/autoscaling.md)."""
    await Autoscaler(
        kube, specialists=specialists, targets=targets, feeds=feeds, config=config
    ).run(stop)
