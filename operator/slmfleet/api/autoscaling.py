"""Autoscaling of an SLMSpecialist: who owns its replica count, and the built-in rule's knobs.

The replica count itself is ``spec.replicas``, the ``scale`` subresource's field: whoever
``mode`` names writes it (the built-in autoscaler, an HPA, KEDA, or a person with
``kubectl scale``), and the operator's Deployment follows it within
``spec.serving.replicas`` bounds. The cost cap lives here, on the specialist, because the
API server can then check it against the same object's price and bounds (a CEL rule
cannot read a Budget); see docs/autoscaling.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import KubeModel, cel

AutoscalingMode = Literal["builtin", "hpa", "keda", "none"]


class AutoscalingSpec(KubeModel):
    """Who sets the replica count, and how the built-in autoscaler decides it."""

    mode: AutoscalingMode = "builtin"
    """builtin: the operator scales from the router's and Triton's metrics (no Prometheus
    needed); hpa: the operator renders a HorizontalPodAutoscaler on the router's in-flight
    metric (needs a custom-metrics adapter); keda: it renders a KEDA ScaledObject with a
    Prometheus trigger; none: replicas change only by hand (kubectl scale)."""
    window_seconds: int = Field(default=30, ge=5, le=600)
    """Signals (request rate, in-flight, p95 latency, queueing) are taken over this
    trailing window."""
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=3600)
    """A scale-down goes only as low as the highest recommendation of this trailing
    window, so a dip in load does not remove a replica that a rebound needs again."""
    scale_to_zero_after_seconds: int = Field(default=600, ge=30, le=86400)
    """With replicas.min 0: scale to zero after this long without any request, in-flight
    work or escalation (and with metrics available all along)."""
    max_cost_usd_per_hour: float | None = Field(default=None, gt=0, le=1000000)
    """Cost cap: replicas x cost.replicaHourUsd never exceeds this many USD per hour.
    When it binds the autoscaler says so (reason CostCapped)."""


def _has(path: str) -> str:
    """``has()`` on every step of a dotted path below ``self`` (CEL has() is one level)."""
    parts = path.split(".")
    return " && ".join(f"has(self.{'.'.join(parts[: i + 1])})" for i in range(len(parts)))


_CAP = "serving.autoscaling.maxCostUsdPerHour"
_PRICE = "cost.replicaHourUsd"
_MIN = "serving.replicas.min"
_MODE = "serving.autoscaling.mode"
_MIN_OR_ONE = f"(({_has(_MIN)}) ? self.{_MIN} : 1)"

#: Rules on SLMSpecialistSpec that relate autoscaling fields to the rest of the spec.
AUTOSCALING_RULES = [
    cel(
        f"!({_has(_CAP)}) || (({_has(_PRICE)}) && self.{_PRICE} > 0.0)",
        "maxCostUsdPerHour needs cost.replicaHourUsd > 0 (a cap on a free replica never binds)",
        ".serving.autoscaling.maxCostUsdPerHour",
    ),
    cel(
        f"!({_has(_CAP)}) || !({_has(_PRICE)}) || "
        f"(self.{_CAP} >= self.{_PRICE} && self.{_CAP} >= self.{_PRICE} * double({_MIN_OR_ONE}))",
        "maxCostUsdPerHour must pay for at least max(1, replicas.min) replicas at "
        "cost.replicaHourUsd",
        ".serving.autoscaling.maxCostUsdPerHour",
    ),
    cel(
        f"!({_has(_MODE)}) || self.{_MODE} != 'hpa' || {_MIN_OR_ONE} >= 1",
        "mode hpa needs serving.replicas.min >= 1 (an HPA cannot scale to zero; "
        "use builtin or keda)",
        ".serving.autoscaling.mode",
    ),
]
