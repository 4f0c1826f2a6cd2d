"""SLMSpecialist -> HPA / KEDA ScaledObject: table tests of the pure builders."""

from __future__ import annotations

import pytest

from slmfleet.api.specialist import SLMSpecialistSpec
from slmfleet.render.autoscaling import (
    build_autoscaler,
    build_hpa,
    build_scaled_object,
    demand_query,
    in_flight_query,
    unused_autoscalers,
)
from slmfleet.render.specialist import Owner

OWNER = Owner(name="billing", namespace="shop", uid="uid-1")
PROM = "http://prometheus.monitoring.svc:9090"


def spec(mode="builtin", min_=1, max_=6, **autoscaling) -> SLMSpecialistSpec:
    return SLMSpecialistSpec.model_validate(
        {
            "model": {"uri": "hf://org/m", "backend": "vllm"},
            "serving": {
                "replicas": {"min": min_, "max": max_},
                "autoscaling": {"mode": mode, **autoscaling},
            },
            "slo": {"targetInFlight": 4},
        }
    )


TARGET = {"apiVersion": "slmfleet.io/v1alpha1", "kind": "SLMSpecialist", "name": "billing"}


def test_hpa_targets_the_specialist_on_in_flight_per_replica():
    hpa = build_hpa(OWNER, spec("hpa", scaleDownStabilizationSeconds=120))
    assert (hpa["apiVersion"], hpa["kind"]) == ("autoscaling/v2", "HorizontalPodAutoscaler")
    assert hpa["metadata"]["name"] == "slm-billing"
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    s = hpa["spec"]
    assert s["scaleTargetRef"] == TARGET
    assert (s["minReplicas"], s["maxReplicas"]) == (1, 6)
    (metric,) = s["metrics"]
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {
        "specialist_namespace": "shop",
        "specialist_name": "billing",
    }
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "4"}
    assert s["behavior"]["scaleDown"] == {"stabilizationWindowSeconds": 120}
    assert s["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 0


def test_scaled_object_scales_to_zero_and_back():
    so = build_scaled_object(
        OWNER, spec("keda", min_=0, scaleToZeroAfterSeconds=900), prometheus_url=PROM
    )
    assert (so["apiVersion"], so["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    s = so["spec"]
    assert s["scaleTargetRef"] == TARGET
    assert (s["minReplicaCount"], s["maxReplicaCount"], s["cooldownPeriod"]) == (0, 6, 900)
    in_flight, demand = s["triggers"]
    assert in_flight["metadata"]["serverAddress"] == PROM
    assert in_flight["metadata"]["threshold"] == "4"
    assert 'specialist="shop/billing"' in in_flight["metadata"]["query"]
    assert demand["metadata"]["threshold"] == "1"
    assert all(t["metadata"]["activationThreshold"] == "0" for t in s["triggers"])


def test_queries_name_only_this_specialist():
    assert in_flight_query(OWNER) == (
        "sum(rate(slmfleet_router_upstream_duration_seconds_sum"
        '{specialist="shop/billing"}[1m])) or vector(0)'
    )
    assert demand_query(OWNER).count('{specialist="shop/billing"}') == 2


@pytest.mark.parametrize(
    ("mode", "kind", "unused"),
    [
        ("builtin", None, {"HorizontalPodAutoscaler", "ScaledObject"}),
        ("none", None, {"HorizontalPodAutoscaler", "ScaledObject"}),
        ("hpa", "HorizontalPodAutoscaler", {"ScaledObject"}),
        ("keda", "ScaledObject", {"HorizontalPodAutoscaler"}),
    ],
)
def test_one_object_per_mode_and_the_rest_deleted(mode, kind, unused):
    got = build_autoscaler(OWNER, spec(mode), prometheus_url=PROM)
    assert (got or {}).get("kind") == kind
    gone = unused_autoscalers(OWNER, spec(mode))
    assert {k for k, _, _ in gone} == unused
    assert all((ns, name) == ("shop", "slm-billing") for _, ns, name in gone)


def test_keda_without_prometheus_is_a_clear_error():
    with pytest.raises(ValueError, match="Prometheus"):
        build_autoscaler(OWNER, spec("keda"))
