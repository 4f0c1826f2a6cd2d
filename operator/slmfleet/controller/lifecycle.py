"""Operator start-up and clean-up, the liveness probe, and the kopf settings chosen on
purpose.

See shared/docs/kopf-notes.md: watches reconnect on a timer (silent streams are the
most reported kopf failure); every handler is a raw-event handler (reconciliation is
level-triggered on metadata.generation), so kopf writes no diff-base or progress
annotations and adds no finalizers: children are cleaned up by owner references. The
storage settings below only name our prefix should a state-keeping handler be added.
"""

from __future__ import annotations

import os
from typing import Any

import kopf

from ..clients.kube import KubeClient
from . import fleet
from .loops import LOOPS
from .runtime import OperatorConfig, Runtime, runtime, set_runtime
from .supervisor import Supervisor

PREFIX = "slmfleet.io"


def configure(settings: kopf.OperatorSettings) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 5
    settings.networking.request_timeout = 60
    # kopf keeps one worker (an asyncio task) per object until it has been idle for
    # idle_timeout; children take workers too. A cap makes new specialists queue
    # behind busy ones, so there is none unless SLMFLEET_WORKERS sets one.
    workers = int(os.environ.get("SLMFLEET_WORKERS", "0"))
    queueing = getattr(settings, "queueing", None) or settings.batching  # renamed in kopf 1.39
    queueing.worker_limit = workers or None
    queueing.idle_timeout = 2.0
    settings.posting.level = 30  # WARNING: events for failures, not for every success
    settings.execution.max_workers = 8
    settings.scanning.disabled = True  # the CRDs are installed by the chart, not discovered


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    configure(settings)
    rt = Runtime(config=OperatorConfig.from_environment(), kube=KubeClient.from_environment())
    set_runtime(rt)
    await fleet.prime(rt)
    rt.fleet_dirty.set()
    rt.supervisor = Supervisor(list(LOOPS))
    rt.supervisor.start(rt)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    rt = runtime()
    if rt.supervisor is not None:
        await rt.supervisor.stop()
    await rt.kube.close()
    set_runtime(None)


@kopf.on.probe(id="loops")
def loops(**_: Any) -> dict[str, Any]:
    """Liveness: red (HTTP 500) while any supervised loop is dead or stalled."""
    supervisor = runtime().supervisor
    if supervisor is None:
        raise kopf.PermanentError("the supervisor has not started")
    alive, problems, report = supervisor.health()
    if not alive:
        raise kopf.PermanentError("; ".join(problems))
    return report


@kopf.on.probe(id="writes")
def writes(**_: Any) -> int:
    """Liveness endpoint detail: API writes so far (also read by the benchmark)."""
    return sum(runtime().kube.writes.values())
