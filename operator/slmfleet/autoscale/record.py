"""What the autoscaler writes, pure: its status fields, its condition, its Events, and
who else claims a specialist's replicas."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..api.base import API_VERSION, now_rfc3339
from ..render.conditions import condition
from .decide import Signals

MANAGER = "slmfleet-autoscaler"
SCALING = "Scaling"


def sig2(x: float | None) -> float | None:
    """Two significant digits: observed values that differ only in noise write nothing."""
    if x is None or x == 0:
        return x
    return float(f"{x:.2g}")


def observed(s: Signals, replicas: int, price: float, at: str) -> dict[str, Any]:
    """status.observed from one window (camelCase, rounded, unknowns left out)."""
    values = {
        "latencyP95Ms": sig2(s.p95_ms),
        "throughputRps": sig2(s.request_rps),
        "costUsdPerHour": sig2(replicas * price),
        "inFlight": sig2(s.in_flight),
        "inFlightPerReplica": sig2(s.in_flight / replicas) if replicas else None,
        "queueMs": sig2(s.queue_ms),
        "escalationRps": sig2(s.escalation_rps),
        "windowSeconds": round(s.window_s),
        "time": at,
    }
    return {k: v for k, v in values.items() if v is not None}


def claimants(hpas: Iterable[Mapping[str, Any]], namespace: str, name: str) -> list[str]:
    """HorizontalPodAutoscalers (KEDA makes one per ScaledObject) targeting a specialist."""
    found = []
    for hpa in hpas:
        meta, ref = hpa.get("metadata", {}), hpa.get("spec", {}).get("scaleTargetRef", {})
        if (
            meta.get("namespace") == namespace
            and ref.get("kind") == "SLMSpecialist"
            and ref.get("name") == name
            and ref.get("apiVersion", API_VERSION).split("/")[0] == API_VERSION.split("/")[0]
        ):
            found.append(meta.get("name", "?"))
    return sorted(found)


def resource_version(body: Mapping[str, Any]) -> int:
    try:
        return int(body["metadata"]["resourceVersion"])
    except (KeyError, ValueError):
        return 0


def scaling_condition(
    status: str, reason: str, message: str, generation: int | None, before: dict | None
) -> dict[str, Any]:
    cond = condition(SCALING, status, reason, message[:4096], generation)
    same = before is not None and before.get("status") == status
    cond["lastTransitionTime"] = before["lastTransitionTime"] if same else now_rfc3339()
    return cond


def event_body(
    body: Mapping[str, Any],
    type_: str,
    reason: str,
    message: str,
    instance: str,
    *,
    kind: str = "SLMSpecialist",
    component: str = MANAGER,
) -> dict[str, Any]:
    """A core/v1 Event about one of our objects (what ``kubectl describe`` lists)."""
    meta = body["metadata"]
    stamp = now_rfc3339()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": kind,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
