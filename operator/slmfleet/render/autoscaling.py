"""SLMSpecialist -> a HorizontalPodAutoscaler (mode hpa) or a KEDA ScaledObject (mode keda).

Pure builders; both target the SLMSpecialist itself through its ``scale`` subresource (so
the operator's Deployment follows whatever they decide, and nothing fights over the
Deployment's replicas) and scale on the same signal the built-in autoscaler reads first:
the specialist's mean in-flight requests at the router against ``slo.targetInFlight``
per replica. That signal reaches them through Prometheus: the router's upstream latency
histogram's sum grows by exactly the in-flight requests per second (Little's law), so
``rate(<sum>[1m])`` is the mean concurrency. docs/autoscaling.md gives the Prometheus
recording rule and the prometheus-adapter rule the HPA's external metric needs.

Both objects are named like the other children (``slm-<name>``) and owned by the
specialist; when the mode changes the controller deletes the object the new mode does
not use (``unused_autoscalers``).
"""

from __future__ import annotations

from typing import Any

from ..api.base import API_VERSION
from ..api.specialist import SLMSpecialistSpec
from ..autoscale.signals import NAMES
from . import labels as L
from .specialist import Owner

HPA_KIND, KEDA_KIND = "HorizontalPodAutoscaler", "ScaledObject"
HPA_API, KEDA_API = "autoscaling/v2", "keda.sh/v1alpha1"
#: The external metric an HPA reads (served by prometheus-adapter, see the docs).
HPA_METRIC = "slmfleet_specialist_in_flight"
#: Labels the HPA's metric selector names the specialist by (label values cannot hold "/").
NAMESPACE_LABEL, NAME_LABEL = "specialist_namespace", "specialist_name"
#: The router's series, as the built-in autoscaler reads them (autoscale/signals.py).
UPSTREAM_SUM = f"{NAMES.upstream}_sum"
UNAVAILABLE = NAMES.unavailable
WAITING = NAMES.waiting
#: How often KEDA queries Prometheus, in seconds.
KEDA_POLLING_S = 15


def _metadata(owner: Owner) -> dict[str, Any]:
    return {
        "name": L.child_name(owner.name),
        "namespace": owner.namespace,
        "labels": L.common_labels(owner.name),
        "ownerReferences": [L.owner_reference(owner.kind, owner.name, owner.uid)],
    }


def _target(owner: Owner) -> dict[str, str]:
    return {"apiVersion": API_VERSION, "kind": owner.kind, "name": owner.name}


def _behavior(spec: SLMSpecialistSpec) -> dict[str, Any]:
    """The built-in rule's shape: up at once (x2 or +4 per 15 s), down stabilised."""
    window = spec.serving.autoscaling.scale_down_stabilization_seconds
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 15},
                {"type": "Pods", "value": 4, "periodSeconds": 15},
            ],
        },
        "scaleDown": {"stabilizationWindowSeconds": window},
    }


def in_flight_query(owner: Owner) -> str:
    """PromQL: the specialist's mean in-flight requests, summed over router replicas."""
    sid = f"{owner.namespace}/{owner.name}"
    return f'sum(rate({UPSTREAM_SUM}{{specialist="{sid}"}}[1m])) or vector(0)'


def demand_query(owner: Owner) -> str:
    """PromQL: requests that found no replica (cascaded on or gave up) plus those the
    router holds for one: what wakes a specialist from zero."""
    sid = f'{{specialist="{owner.namespace}/{owner.name}"}}'
    return f"(sum(rate({UNAVAILABLE}{sid}[1m])) or vector(0)) + (sum({WAITING}{sid}) or vector(0))"


def build_hpa(owner: Owner, spec: SLMSpecialistSpec) -> dict[str, Any]:
    """autoscaling/v2 HPA on the router's in-flight metric (an External metric)."""
    bounds = spec.serving.replicas
    return {
        "apiVersion": HPA_API,
        "kind": HPA_KIND,
        "metadata": _metadata(owner),
        "spec": {
            "scaleTargetRef": _target(owner),
            "minReplicas": max(1, bounds.min),  # the API refuses min 0 with mode hpa
            "maxReplicas": bounds.max,
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {
                            "name": HPA_METRIC,
                            "selector": {
                                "matchLabels": {
                                    NAMESPACE_LABEL: owner.namespace,
                                    NAME_LABEL: owner.name,
                                }
                            },
                        },
                        "target": {
                            "type": "AverageValue",
                            "averageValue": str(spec.slo.target_in_flight),
                        },
                    },
                }
            ],
            "behavior": _behavior(spec),
        },
    }


def build_scaled_object(
    owner: Owner, spec: SLMSpecialistSpec, *, prometheus_url: str
) -> dict[str, Any]:
    """KEDA ScaledObject with Prometheus triggers; min 0 lets KEDA scale to zero after
    ``scaleToZeroAfterSeconds`` and back on the first request that finds no replica."""
    bounds, auto = spec.serving.replicas, spec.serving.autoscaling

    def trigger(name: str, query: str, threshold: int) -> dict[str, Any]:
        return {
            "type": "prometheus",
            "name": name,
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": prometheus_url,
                "query": query,
                "threshold": str(threshold),
                "activationThreshold": "0",
            },
        }

    return {
        "apiVersion": KEDA_API,
        "kind": KEDA_KIND,
        "metadata": _metadata(owner),
        "spec": {
            "scaleTargetRef": _target(owner),
            "minReplicaCount": bounds.min,
            "maxReplicaCount": bounds.max,
            "pollingInterval": KEDA_POLLING_S,
            "cooldownPeriod": auto.scale_to_zero_after_seconds,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(spec)}},
            "triggers": [
                trigger("in-flight", in_flight_query(owner), spec.slo.target_in_flight),
                trigger("demand", demand_query(owner), 1),
            ],
        },
    }


def build_autoscaler(
    owner: Owner, spec: SLMSpecialistSpec, *, prometheus_url: str | None = None
) -> dict[str, Any] | None:
    """The object ``serving.autoscaling.mode`` asks for, or None (builtin, none).

    Raises ValueError for mode keda without a Prometheus address (an operator setting,
    not a tenant's: a tenant must not point KEDA at an address of its choosing); the
    controller reports it as a condition."""
    mode = spec.serving.autoscaling.mode
    if mode == "hpa":
        return build_hpa(owner, spec)
    if mode == "keda":
        if not prometheus_url:
            raise ValueError(
                "serving.autoscaling.mode keda needs the operator's Prometheus address "
                "(SLMFLEET_PROMETHEUS_URL); none is configured"
            )
        return build_scaled_object(owner, spec, prometheus_url=prometheus_url)
    return None


def unused_autoscalers(owner: Owner, spec: SLMSpecialistSpec) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of the autoscaler objects this mode does not use: the
    controller deletes them (a leftover HPA would fight the new owner)."""
    keep = {"hpa": HPA_KIND, "keda": KEDA_KIND}.get(spec.serving.autoscaling.mode)
    name = L.child_name(owner.name)
    return [(k, owner.namespace, name) for k in (HPA_KIND, KEDA_KIND) if k != keep]
