"""Rollouts and query splitting through the real operator and API server: the router
configuration carries them, and a rollout whose candidate does not exist is a
condition naming the field (bad values are refused by the API server: invalid/)."""

from __future__ import annotations

import pytest

from tests.fixtures.cluster import specialist_manifest as specialist
from tests.fixtures.cluster import wait_for

from .test_operator import condition, router_config

pytestmark = pytest.mark.integration


def test_rollout_candidate_reported_then_resolved(kube, operator, namespace):
    ns = namespace
    kube.apply(specialist("billing"), ns)
    kube.apply(
        {
            "apiVersion": "slmfleet.io/v1alpha1",
            "kind": "RouterPolicy",
            "metadata": {"name": "support"},
            "spec": {
                "modelName": f"rollout-{ns}",
                "specialists": {"names": ["billing"]},
                "routing": {"split": {"enabled": True, "maxParts": 3}},
                "rollouts": [{"specialist": "billing", "candidate": "billing-v2", "percent": 10}],
            },
        },
        ns,
    )
    kube("wait", "--for=condition=Ready", "rp/support", "-n", ns, "--timeout=90s")
    wait_for(
        lambda: (
            condition(kube.get("rp", "support", ns), "Rollout").get("reason") == "CandidateNotFound"
        ),
        30,
        "Rollout condition",
    )
    rollout = condition(kube.get("rp", "support", ns), "Rollout")
    assert rollout["status"] == "False"
    assert rollout["message"] == (
        f"spec.rollouts[0].candidate: SLMSpecialist 'billing-v2' not found in namespace {ns}"
    )
    # The policy serves (the incumbent keeps its traffic) and the router is told.
    assert condition(kube.get("rp", "support", ns))["status"] == "True"
    (pol,) = [p for p in router_config(kube).policies if p.id == f"{ns}/support"]
    assert pol.routing.split.enabled and pol.routing.split.max_parts == 3
    (ro,) = pol.rollouts
    assert (ro.specialist, ro.candidate, ro.percent) == (f"{ns}/billing", f"{ns}/billing-v2", 10)

    kube.apply(specialist("billing-v2"), ns)
    kube("wait", "--for=condition=Ready", "slm/billing-v2", "-n", ns, "--timeout=90s")
    wait_for(
        lambda: condition(kube.get("rp", "support", ns), "Rollout").get("status") == "True",
        30,
        "Rollout True",
    )
    rollout = condition(kube.get("rp", "support", ns), "Rollout")
    assert rollout["reason"] == "RolloutsActive"
    assert rollout["message"] == "canary billing -> billing-v2 at 10%"
    config = router_config(kube)
    assert config.specialist(f"{ns}/billing-v2").ready is True
