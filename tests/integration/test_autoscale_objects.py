"""The HPA and KEDA ScaledObject of modes hpa and keda on the real API server: the
operator applies the one the mode names (the ScaledObject validated against KEDA's own
CRD schema, installed here) and deletes it when the mode changes; a broken one is
refused by a server-side dry run; the real HPA controller reads a specialist's scale
subresource."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from slmfleet.api.specialist import SLMSpecialistSpec
from slmfleet.render.autoscaling import build_hpa, build_scaled_object
from slmfleet.render.specialist import Owner
from tests.fixtures.cluster import PROMETHEUS_URL, specialist_manifest, wait_for

pytestmark = pytest.mark.integration

PROM = PROMETHEUS_URL  # the shared operator's setting


def keda_crds() -> Path:
    """KEDA's CRDs, read where the project keeps shared data (never copied into the repo)."""
    repo = Path(__file__).resolve().parents[2]
    candidates = [os.environ.get("SLMFLEET_KEDA_CRDS"), repo.parent / "shared/crds/keda",
                  "/work/shared/crds/keda"]  # fmt: skip
    for c in candidates:
        if c and (Path(c) / "keda.sh_scaledobjects.yaml").is_file():
            return Path(c)
    raise AssertionError(f"KEDA CRDs not found (set SLMFLEET_KEDA_CRDS); tried {candidates}")


@pytest.fixture(scope="module")
def keda(cluster, kube):
    path = keda_crds() / "keda.sh_scaledobjects.yaml"
    kube("apply", "--server-side", "-f", str(path))
    kube("wait", "--for=condition=Established", "crd/scaledobjects.keda.sh")


def owned_by(kube, ns: str, name: str, **spec_extra) -> tuple[Owner, SLMSpecialistSpec]:
    body = specialist_manifest(name, gpu=0, replicas=1)
    body["spec"]["serving"].update(spec_extra)
    kube.apply(body, ns)
    live = kube.get("slm", name, ns)
    return (
        Owner(name, ns, live["metadata"]["uid"]),
        SLMSpecialistSpec.model_validate(live["spec"]),
    )


def dry_run(kube, obj: dict, ns: str) -> str:
    return kube("apply", "--dry-run=server", "-n", ns, "-f", "-", input=json.dumps(obj),
                check=False)  # fmt: skip


def test_scaled_object_is_valid_for_keda_and_a_broken_one_is_not(kube, keda, namespace):
    # Mode none in the API server (the operator applies nothing), keda for the renderer.
    owner, spec = owned_by(
        kube, namespace, "keda-one", replicas={"min": 0, "max": 5}, autoscaling={"mode": "none"}
    )
    spec.serving.autoscaling.mode = "keda"
    so = build_scaled_object(owner, spec, prometheus_url=PROM)
    out = dry_run(kube, so, namespace)
    assert "created (server dry run)" in out, out
    broken = copy.deepcopy(so)
    broken["spec"]["triggers"] = "prometheus"  # KEDA's schema: a list of triggers
    out = dry_run(kube, broken, namespace)
    assert "Invalid value" in out and "spec.triggers" in out, out
    broken = copy.deepcopy(so)
    broken["spec"]["minReplicaCount"] = "zero"
    out = dry_run(kube, broken, namespace)
    assert "spec.minReplicaCount" in out and "created" not in out, out
    assert kube("get", "scaledobjects", "-n", namespace, "-o", "name") == ""  # dry runs only


def test_hpa_is_valid_and_the_hpa_controller_reads_the_specialists_scale(kube, operator, namespace):
    owner, spec = owned_by(
        kube, namespace, "hpa-one", replicas={"min": 1, "max": 3}, autoscaling={"mode": "hpa"}
    )
    # The operator reports the Pods' selector, which the scale subresource hands the HPA.
    wait_for(lambda: kube.get("slm", "hpa-one", namespace).get("status", {}).get("selector"),
             what="status.selector")  # fmt: skip
    # The operator applies the HPA the mode names, owned by the specialist.
    hpa = build_hpa(owner, spec)
    live = wait_for(lambda: kube.get("hpa", "slm-hpa-one", namespace), what="the operator's HPA")
    for key in ("scaleTargetRef", "minReplicas", "maxReplicas", "metrics"):
        assert live["spec"][key] == hpa["spec"][key], key
    assert live["spec"]["behavior"]["scaleUp"] == hpa["spec"]["behavior"]["scaleUp"]
    assert live["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert live["metadata"]["ownerReferences"][0]["uid"] == owner.uid
    broken = copy.deepcopy(hpa)
    broken["metadata"]["name"] = "broken"
    broken["spec"]["metrics"][0]["external"]["target"]["type"] = "Percentage"
    assert "spec.metrics[0].external.target.type: Invalid value" in dry_run(kube, broken, namespace)

    # The HPA controller gets the specialist's scale (replicas and the selector from the
    # scale subresource); the external metric has no adapter here.

    def conditions() -> dict:
        body = kube.get("hpa", "slm-hpa-one", namespace) or {}
        return {c["type"]: c for c in body.get("status", {}).get("conditions", [])}

    conds = wait_for(lambda: conditions().get("ScalingActive") and conditions(),
                     timeout=90, what="the HPA controller's conditions")  # fmt: skip
    assert conds["AbleToScale"]["status"] == "True"
    assert conds["AbleToScale"]["reason"] == "SucceededGetScale"
    assert conds["ScalingActive"]["status"] == "False"
    assert "external metric" in conds["ScalingActive"]["message"]
    assert "slmfleet_specialist_in_flight" in conds["ScalingActive"]["message"]

    # Another mode: the operator deletes the HPA (it would fight the new owner).
    kube("patch", "slm/hpa-one", "-n", namespace, "--type=merge",
         "-p", json.dumps({"spec": {"serving": {"autoscaling": {"mode": "none"}}}}))  # fmt: skip
    wait_for(lambda: kube.get("hpa", "slm-hpa-one", namespace) is None, 30, "the HPA deleted")


def test_the_operator_applies_the_scaled_object_of_mode_keda_and_deletes_it_after(
    kube, keda, operator, namespace
):
    owner, spec = owned_by(
        kube, namespace, "keda-two", replicas={"min": 0, "max": 3}, autoscaling={"mode": "keda"}
    )
    live = wait_for(lambda: kube.get("scaledobject", "slm-keda-two", namespace), 60,
                    "the operator's ScaledObject")  # fmt: skip
    want = build_scaled_object(owner, spec, prometheus_url=PROM)
    assert live["spec"]["scaleTargetRef"] == want["spec"]["scaleTargetRef"]
    assert live["spec"]["minReplicaCount"] == 0 and live["spec"]["maxReplicaCount"] == 3
    triggers = {t["name"]: t["metadata"] for t in live["spec"]["triggers"]}
    assert triggers["demand"]["serverAddress"] == PROM
    # It asks Prometheus for what the router exports (router/metrics.py's names).
    assert "slmfleet_router_waiting_requests" in triggers["demand"]["query"]
    assert "slmfleet_router_no_replica_total" in triggers["demand"]["query"]
    assert live["metadata"]["ownerReferences"][0]["uid"] == owner.uid
    kube("patch", "slm/keda-two", "-n", namespace, "--type=merge",
         "-p", json.dumps({"spec": {"serving": {"autoscaling": {"mode": "builtin"}}}}))  # fmt: skip
    wait_for(lambda: kube.get("scaledobject", "slm-keda-two", namespace) is None, 30,
             "the ScaledObject deleted")  # fmt: skip


@pytest.mark.parametrize(
    ("serving", "cost"),
    [
        ({"replicas": {"min": 2, "max": 4}, "autoscaling": {"maxCostUsdPerHour": 3.0}}, 1.5),
        ({"replicas": {"min": 0, "max": 4}, "autoscaling": {"maxCostUsdPerHour": 1.5}}, 1.5),
        ({"replicas": {"min": 0, "max": 4}, "autoscaling": {"mode": "keda"}}, 0.0),
        ({"autoscaling": {"mode": "hpa"}}, 0.0),  # min defaults to 1
    ],
)
def test_boundary_specs_are_accepted(kube, namespace, serving, cost):
    body = specialist_manifest("edge", gpu=0)
    body["spec"]["serving"].update(serving)
    body["spec"]["cost"] = {"replicaHourUsd": cost}
    out = dry_run(kube, body, namespace)
    assert "created (server dry run)" in out, out
