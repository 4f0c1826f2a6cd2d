"""The real operator against the real control plane, driven with real kubectl."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from slmfleet.api.routerconfig import RouterConfig
from slmfleet.local.cluster import OPERATOR_AGENTS
from tests.fixtures.cluster import specialist_manifest as specialist
from tests.fixtures.cluster import wait_for

pytestmark = pytest.mark.integration

INVALID = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))
CHILDREN = ("configmap", "deployment", "service", "poddisruptionbudget")


def condition(body: dict | None, type_: str = "Ready") -> dict:
    for cond in ((body or {}).get("status") or {}).get("conditions", []):
        if cond["type"] == type_:
            return cond
    return {}


def ready(kube, kind, name, ns) -> bool:
    body = kube.get(kind, name, ns)
    return (
        condition(body).get("status") == "True"
        and body["status"].get("observedGeneration") == body["metadata"]["generation"]
    )


def router_config(kube) -> RouterConfig:
    return kube.router_assembly().config


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_manifest_refused_naming_the_field(kube, namespace, path):
    text = path.read_text()
    expected = text.splitlines()[0].removeprefix("# expect: ").strip()
    out = kube("apply", "-n", namespace, "-f", str(path), check=False)
    assert "is invalid" in out or "Error from server (BadRequest)" in out, out
    assert expected in out, f"expected the error to name {expected!r}:\n{out}"
    assert kube("get", "slm,rp,slmbudget,slmpool", "-n", namespace, "-o", "name") == "", "stored"


def test_specialist_lifecycle(kube, operator, namespace):
    ns = namespace
    kube.apply(specialist("billing"), ns)

    # Children appear, owned by the specialist.
    body = wait_for(lambda: kube.get("slm", "billing", ns), what="specialist")
    uid = body["metadata"]["uid"]
    for kind in CHILDREN:
        name = "slm-billing-model" if kind == "configmap" else "slm-billing"
        child = wait_for(lambda k=kind, n=name: kube.get(k, n, ns), what=f"{kind} {name}")
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid

    # Pods land on a fake GPU node and run; the specialist goes Ready.
    out = kube("wait", "--for=condition=Ready", "slm/billing", "-n", ns, "--timeout=90s")
    assert "condition met" in out
    pods = kube.items("pods", ns, "slmfleet.io/specialist=billing")
    assert len(pods) == 1
    assert pods[0]["spec"]["nodeName"].startswith("gpu-")
    assert pods[0]["status"]["phase"] == "Running"
    body = kube.get("slm", "billing", ns)
    assert body["status"]["observedGeneration"] == 1
    assert body["status"]["readyReplicas"] == 1
    assert body["status"]["endpoint"] == f"slm-billing.{ns}.svc:8001"
    assert "READY" in kube("get", "slm", "-n", ns)  # printer columns

    # A spec change rolls out and is observed under a new generation.
    old_hash = kube.get("deployment", "slm-billing", ns)["spec"]["template"]["metadata"][
        "annotations"
    ]["slmfleet.io/config-hash"]
    kube(
        "patch", "slm", "billing", "-n", ns, "--type=merge",
        "-p", json.dumps({"spec": {"model": {"parameters": {"temperature": "0.2"}},
                                   "serving": {"replicas": {"min": 2, "max": 3}}}}),
    )  # fmt: skip
    wait_for(lambda: ready(kube, "slm", "billing", ns), 90, "ready at generation 2")
    body = kube.get("slm", "billing", ns)
    assert body["status"]["observedGeneration"] == 2
    assert body["status"]["readyReplicas"] == 2
    dep = kube.get("deployment", "slm-billing", ns)
    assert dep["spec"]["replicas"] == 2
    new_hash = dep["spec"]["template"]["metadata"]["annotations"]["slmfleet.io/config-hash"]
    assert new_hash != old_hash
    cm = kube.get("configmap", "slm-billing-model", ns)
    assert 'key: "temperature"' in cm["data"]["config.pbtxt"]
    assert len(kube.items("replicasets", ns, "slmfleet.io/specialist=billing")) == 2

    # A child deleted by hand comes back.
    kube("delete", "service", "slm-billing", "-n", ns)
    wait_for(lambda: kube.get("service", "slm-billing", ns), 30, "service recreated")

    # Delete: children are garbage-collected.
    kube("delete", "slm", "billing", "-n", ns)
    for kind in CHILDREN:
        name = "slm-billing-model" if kind == "configmap" else "slm-billing"
        wait_for(lambda k=kind, n=name: kube.get(k, n, ns) is None, 60, f"{kind} collected")


def test_policy_budget_and_router_config(kube, operator, namespace):
    ns = namespace
    kube.apply(specialist("orders"), ns)
    kube.apply(
        {
            "apiVersion": "slmfleet.io/v1alpha1",
            "kind": "RouterPolicy",
            "metadata": {"name": "support"},
            "spec": {
                "modelName": f"support-{ns}",
                "specialists": {"selector": {"matchLabels": {"fleet": "test"}}},
                "cascade": [
                    {"name": "small", "routed": True, "accept": {"minRoutingConfidence": 0.7}},
                    {"name": "review", "human": {"queue": "tier2"}},
                ],
            },
        },
        ns,
    )
    kube.apply(
        {
            "apiVersion": "slmfleet.io/v1alpha1",
            "kind": "Budget",
            "metadata": {"name": "team"},
            "spec": {
                "perRequest": {"maxReasoningTokens": 128},
                "spend": [{"window": "1h", "limitUsd": 40, "action": "degrade"}],
            },
        },
        ns,
    )
    kube("wait", "--for=condition=Ready", "rp/support", "-n", ns, "--timeout=90s")
    kube("wait", "--for=condition=Ready", "budget.slmfleet.io/team", "-n", ns, "--timeout=30s")
    policy = kube.get("rp", "support", ns)
    assert policy["status"]["resolvedTargets"] == [
        {"name": "orders", "endpoint": f"slm-orders.{ns}.svc:8001", "ready": True}
    ]
    config = router_config(kube)
    (pol,) = [p for p in config.policies if p.id == f"{ns}/support"]
    assert pol.model_name == f"support-{ns}"
    assert pol.specialists == [f"{ns}/orders"]
    assert pol.budgets == [f"{ns}/team"]
    assert config.specialist(f"{ns}/orders").ready is True
    assert kube.get("budget.slmfleet.io", "team", ns)["status"]["policies"] == [f"support-{ns}"]
    # The budget status loop reads the shared ledger: nothing spent yet, state Ok.
    wait_for(
        lambda: (kube.get("budget.slmfleet.io", "team", ns)["status"]).get("state") == "Ok",
        15,
        "Budget state from the ledger",
    )
    budget = kube.get("budget.slmfleet.io", "team", ns)["status"]
    assert budget["spend"] == [
        {"window": "1h", "spentUsd": 0.0, "reservedUsd": 0.0, "spentTokens": 0,
         "reservedTokens": 0, "percent": 0, "limitUsd": 40.0}
    ]  # fmt: skip
    conds = {c["type"]: c["status"] for c in budget["conditions"]}
    assert conds["Ready"] == "True" and conds["LedgerAvailable"] == "True"
    assert conds["Exceeded"] == "False"
    header, row = kube("get", "budget.slmfleet.io", "team", "-n", ns).splitlines()
    assert header.split()[:5] == ["NAME", "READY", "STATE", "STEP", "PERCENT"]
    assert row.split()[:4] == ["team", "True", "Ok", "0"]  # no step: an empty column

    # A policy naming a missing specialist says so, and the router config follows.
    kube(
        "patch", "rp", "support", "-n", ns, "--type=merge",
        "-p", json.dumps({"spec": {"specialists": {"names": ["ghost"], "selector": None}}}),
    )  # fmt: skip
    wait_for(
        lambda: condition(kube.get("rp", "support", ns)).get("reason") == "TargetsNotFound",
        30,
        "TargetsNotFound",
    )
    assert "ghost" in condition(kube.get("rp", "support", ns))["message"]
    assert condition(kube.get("rp", "support", ns), "Stalled")["status"] == "True"

    # ...with one Warning Event naming the policy, posted on the transition only.
    def stalled_events() -> list[dict]:
        about = ("RouterPolicy", "support", "Warning", "TargetsNotFound")
        return [e for e in kube.items("events", ns)
                if (e["involvedObject"].get("kind"), e["involvedObject"]["name"], e["type"],
                    e["reason"]) == about]  # fmt: skip

    (event,) = wait_for(stalled_events, 15, "a Warning Event about the policy")
    assert "ghost" in event["message"]
    kube("annotate", "rp", "support", "-n", ns, "touched=1")  # a render, the same problem
    time.sleep(3)
    assert len(stalled_events()) == 1, stalled_events()


def test_apply_failure_is_reported_as_event_and_condition(kube, operator, namespace, cluster):
    """An admission policy refuses our Deployment: Stalled, with a Warning event."""
    ns = namespace
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": f"deny-{ns}"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["deployments"],
                    }
                ]
            },
            "validations": [{"expression": "false", "message": "deployments are frozen here"}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": f"deny-{ns}"},
        "spec": {
            "policyName": f"deny-{ns}",
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}
            },
        },
    }
    kube(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [policy, binding]}),
    )
    time.sleep(2)  # admission policies are loaded asynchronously
    try:
        kube.apply(specialist("frozen"), ns)
        stalled = wait_for(
            lambda: (
                condition(kube.get("slm", "frozen", ns), "Stalled").get("status") == "True"
                and condition(kube.get("slm", "frozen", ns), "Stalled")
            ),
            60,
            "Stalled",
        )
        assert "deployments are frozen here" in stalled["message"]
        events = kube.items("events", ns)
        assert any(
            e["reason"] == "ReconcileFailed"
            and e["type"] == "Warning"
            and e["involvedObject"]["name"] == "frozen"
            for e in events
        ), events
    finally:
        kube("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy",
             f"deny-{ns}", check=False)  # fmt: skip


def test_restart_mid_flight_converges_without_duplicates_or_idle_writes(
    kube, operator, namespace, cluster
):
    ns = namespace
    names = [f"s{i}" for i in range(8)]
    kube("apply", "-n", ns, "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [specialist(n) for n in names]}))  # fmt: skip
    time.sleep(0.5)
    operator.stop(kill=True)  # mid-flight: some children exist, some do not
    operator.start()
    for n in names:
        wait_for(lambda n=n: ready(kube, "slm", n, ns), 90, f"{n} ready after restart")
    for kind in ("deployments", "services", "poddisruptionbudgets"):
        assert len(kube.items(kind, ns, "app.kubernetes.io/managed-by=slmfleet")) == len(names)
    assert len(kube.items("configmaps", ns, "app.kubernetes.io/managed-by=slmfleet")) == len(names)

    # Converged: a restart and ten seconds of idleness write nothing. Earlier tests'
    # namespaces must be gone first, or their teardown is legitimate work.
    def others_gone() -> bool:
        names = kube("get", "namespaces", "-o", "jsonpath={.items[*].metadata.name}").split()
        return [n for n in names if n.startswith("t-")] == [ns]

    wait_for(others_gone, 120, "other test namespaces deleted")
    time.sleep(3)  # the audit log is flushed every second
    before = cluster.writes(OPERATOR_AGENTS)
    operator.stop()
    operator.start()
    time.sleep(10)
    assert operator.writes() == 0, operator.log_tail()  # our client
    time.sleep(2)
    assert cluster.writes(OPERATOR_AGENTS) == before, operator.log_tail()  # kopf's too
