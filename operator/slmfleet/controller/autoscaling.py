"""The built-in autoscaler inside the operator, and the HPA / ScaledObject of the other
modes: thin glue between the runtime and ``slmfleet.autoscale``.

``autoscaler_loop`` is the supervised loop (``loops.py``): every tick it hands the
SLMSpecialists of the watch cache, this tick's scrape targets (``autoscale.targets``)
and the escalation feeds of the last fleet render to ``Autoscaler.tick``, which decides
and writes the scale subresource and its own status fields. ``autoscaler_children``
is what the reconciler applies for modes ``hpa`` and ``keda``, and what it deletes when
the mode no longer uses it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..api.specialist import SLMSpecialistSpec
from ..autoscale.apply import Autoscaler, AutoscalerConfig
from ..autoscale.scrape import ScrapeTargets
from ..autoscale.targets import discover
from ..clients.kube import ApiError
from ..render.autoscaling import build_autoscaler, unused_autoscalers
from ..render.specialist import Owner
from .adapters import base_of
from .pools import pooled
from .runtime import Runtime
from .supervisor import Beat

log = logging.getLogger("slmfleet.autoscaler")


def make_autoscaler(rt: Runtime) -> Autoscaler:
    """The loop's Autoscaler, reading everything from the runtime."""

    def spec_of(body: dict[str, Any]) -> SLMSpecialistSpec:
        meta = body["metadata"]
        key = ("SLMSpecialist", meta["namespace"], meta["name"], meta.get("generation"))
        return rt.specs.get(key, lambda: SLMSpecialistSpec.model_validate(body["spec"]))

    async def targets() -> ScrapeTargets:
        return await discover(rt.kube, rt.config.scrape)

    return Autoscaler(
        rt.kube,
        # Pool members and adapters have no replicas of their own (their pool, their base).
        specialists=lambda: [
            b for b in rt.store.bodies().values() if not pooled(b) and not base_of(b)
        ],
        targets=targets,
        feeds=lambda: rt.escalation_feeds,
        config=AutoscalerConfig(interval_s=rt.config.autoscaler_interval_seconds),
        spec_of=spec_of,
    )


async def autoscaler_loop(rt: Runtime, beat: Beat) -> None:
    """Tick every interval; beat after each. Off (SLMFLEET_AUTOSCALER=off): beat only."""
    interval = rt.config.autoscaler_interval_seconds
    if not rt.config.autoscaler:
        log.info("the built-in autoscaler is off (SLMFLEET_AUTOSCALER=off)")
        while True:
            beat()
            await asyncio.sleep(60.0)
    scaler = make_autoscaler(rt)
    loop = asyncio.get_running_loop()
    try:
        while True:
            started = loop.time()
            await scaler.tick()
            beat()
            await asyncio.sleep(max(0.0, interval - (loop.time() - started)))
    finally:
        await scaler.collector.close()


def autoscaler_children(
    owner: Owner, spec: SLMSpecialistSpec, prometheus_url: str
) -> tuple[dict[str, Any] | None, list[tuple[str, str, str]]]:
    """(the HPA or ScaledObject the mode asks for, or None; what the mode does not use).
    Raises ValueError for mode keda without the operator's Prometheus address."""
    wanted = build_autoscaler(owner, spec, prometheus_url=prometheus_url or None)
    return wanted, unused_autoscalers(owner, spec)


async def delete_unused(rt: Runtime, refs: list[tuple[str, str, str]]) -> None:
    """Delete the autoscaler objects the mode no longer uses (a leftover HPA would fight
    the new owner). Read first: after a restart nothing is known, and a quiet restart
    writes nothing. A kind the cluster does not serve (KEDA not installed) reads as
    absent (404), like an object that is gone."""
    for kind, namespace, name in refs:
        if await rt.kube.get(kind, namespace, name) is not None:
            await rt.kube.delete(kind, namespace, name)


def missing_kind(err: ApiError, obj: dict[str, Any]) -> ApiError:
    """A clearer error for an autoscaler object whose kind the cluster does not serve."""
    if err.status == 404 and obj["kind"] == "ScaledObject":
        return ApiError(
            404,
            "serving.autoscaling.mode keda: the cluster serves no keda.sh/v1alpha1 "
            "ScaledObject (install KEDA, or choose another mode)",
            "PATCH",
            f"scaledobjects/{obj['metadata']['name']}",
        )
    return err
