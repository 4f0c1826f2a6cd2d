"""SLMPools on the real API server with the real operator (kwok nodes: the Pods run no
Triton, so members stay Pending there; loading and unloading on the real tritonserver is
test_pool_residency.py). What is checked here: the children and their rendering, the
Fits arithmetic, refusals as conditions naming the field, the router configuration
reaching members at the pool's Service, membership changes without a Pod template
change, and the immutability of ``serving.pool``."""

from __future__ import annotations

import json
import time

import pytest

from tests.fixtures.cluster import wait_for

pytestmark = pytest.mark.integration


def pool(name: str, **spec) -> dict:
    return {"apiVersion": "slmfleet.io/v1alpha1", "kind": "SLMPool",
            "metadata": {"name": name}, "spec": spec}  # fmt: skip


def member(name: str, pool_name: str, memory: str = "1Gi", **resources) -> dict:
    return {
        "apiVersion": "slmfleet.io/v1alpha1",
        "kind": "SLMSpecialist",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": f"hf://slmfleet-tests/{name}", "backend": "python"},
            "domain": {"description": f"{name} questions", "keywords": [name]},
            "serving": {"pool": pool_name, "resources": {"memory": memory, **resources}},
        },
    }


def cond(body: dict | None, type_: str = "Ready") -> dict:
    for c in ((body or {}).get("status") or {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return {}


def test_pool_children_fit_and_refusals(kube, operator, namespace):
    ns = namespace
    kube.apply(pool("shared", resources={"cpu": "100m", "memory": "3Gi"}), ns)
    for m in (member("alpha", "shared"), member("beta", "shared", "1.5Gi"),
              member("huge", "shared", "4Gi"), member("late", "shared", "1Gi"),
              member("lost", "nowhere")):  # fmt: skip
        kube.apply(m, ns)

    # Fits: first fit in joining order, the arithmetic in the message.
    fits = wait_for(lambda: cond(kube.get("slmpool", "shared", ns), "Fits") or None, 60, "Fits")
    wait_for(lambda: "late" in cond(kube.get("slmpool", "shared", ns), "Fits").get("message", ""),
             60, "every member placed or refused")  # fmt: skip
    fits = cond(kube.get("slmpool", "shared", ns), "Fits")
    assert fits["status"] == "False" and fits["reason"] == "MembersRefused"
    assert fits["message"].startswith("placed 1Gi (alpha) + 1.5Gi (beta) = 2.5Gi of 3Gi")
    assert "refused: huge, late" in fits["message"]

    # The refused members say why, naming the field; a missing pool too.
    huge = wait_for(lambda: cond(kube.get("slm", "huge", ns)) or None, 60, "huge's status")
    assert huge["status"] == "False" and huge["reason"] == "PoolMemberRefused"
    assert huge["message"] == (
        "spec.serving.resources.memory: 4Gi is more than pool shared's whole capacity of 3Gi"
    )
    late = cond(kube.get("slm", "late", ns))
    assert late["reason"] == "PoolMemberRefused"
    assert late["message"].startswith(
        "spec.serving.resources.memory: 1Gi does not fit in pool shared: 2.5Gi of 3Gi already"
    )
    assert cond(kube.get("slm", "late", ns), "Stalled")["status"] == "True"

    # A refusal is also a Warning Event about the member, once (the loop ticks every 2 s).
    def warnings(name: str) -> list[dict]:
        return [(e["reason"], e["message"]) for e in kube.items("events", ns)
                if e["involvedObject"]["name"] == name and e["type"] == "Warning"]  # fmt: skip

    wait_for(lambda: warnings("huge"), 15, "a Warning Event about huge")
    time.sleep(5)
    assert warnings("huge") == [("PoolMemberRefused", huge["message"])]
    lost = wait_for(lambda: cond(kube.get("slm", "lost", ns)) or None, 60, "lost's status")
    assert lost["reason"] == "PoolNotFound"
    assert lost["message"] == f"spec.serving.pool: no SLMPool named 'nowhere' in namespace {ns}"

    # One Deployment for the pool, explicit model control, no Deployment per member.
    dep = wait_for(lambda: kube.get("deployment", "slm-pool-shared", ns), 60, "pool Deployment")
    triton = dep["spec"]["template"]["spec"]["containers"][0]
    assert "--model-control-mode=explicit" in triton["args"]
    assert kube.get("deployment", "slm-alpha", ns) is None
    owner = dep["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("SLMPool", "shared")
    cm = kube.get("configmap", "slm-pool-shared-repository", ns)
    layout = json.loads(cm["data"]["members.json"])["members"]
    assert sorted(layout) == ["alpha", "beta"]
    assert 'name: "alpha"' in cm["data"]["alpha.config.pbtxt"]
    assert kube.get("networkpolicy", "slm-pool-shared", ns) is not None

    # Members are models of the pool's Service (kwok Pods run no Triton: Pending).
    body = kube.get("slm", "alpha", ns)
    assert body["status"]["endpoint"] == f"slm-pool-shared.{ns}.svc:8001"
    assert body["status"]["tritonModel"] == "alpha"
    status = kube.get("slmpool", "shared", ns)["status"]
    assert {m["name"]: m["state"] for m in status["members"]} == {
        "alpha": "Pending", "beta": "Pending", "huge": "Refused", "late": "Refused",
    }  # fmt: skip
    assert status["capacity"] == "3Gi" and status["endpoint"] == f"slm-pool-shared.{ns}.svc:8001"
    wait_for(lambda: any(s.id == f"{ns}/alpha" for s in kube.router_assembly().config.specialists),
             60, "alpha in the router configuration")  # fmt: skip
    cfg = next(s for s in kube.router_assembly().config.specialists if s.id == f"{ns}/alpha")
    assert cfg.endpoint == f"slm-pool-shared.{ns}.svc:8001" and cfg.triton_model == "alpha"
    assert cfg.scaled_to_zero  # not loaded yet: requests wait for it, as for scale from zero

    # Room is made (huge leaves): late is placed; the Pod template does not change.
    template = dep["spec"]["template"]
    kube("delete", "slm", "huge", "-n", ns)
    kube("patch", "slmpool", "shared", "-n", ns, "--type=merge", "-p",
         json.dumps({"spec": {"resources": {"memory": "4Gi"}}}))  # fmt: skip
    wait_for(lambda: cond(kube.get("slmpool", "shared", ns), "Fits").get("status") == "True",
             60, "all members fit")  # fmt: skip
    layout = json.loads(kube.get("configmap", "slm-pool-shared-repository", ns)["data"]
                        ["members.json"])["members"]  # fmt: skip
    assert sorted(layout) == ["alpha", "beta", "late"]
    dep = kube.get("deployment", "slm-pool-shared", ns)
    # Only the resources changed (the memory limit); no member is in the template.
    for key in ("volumes", "nodeSelector"):
        assert dep["spec"]["template"]["spec"].get(key) == template["spec"].get(key)
    assert "late" not in json.dumps(dep["spec"]["template"])


def test_gpu_pool_needs_gpu_memory_and_pool_is_immutable(kube, operator, namespace):
    ns = namespace
    kube.apply(pool("gpus", resources={"gpu": 1, "gpuMemory": "24Gi", "memory": "1Gi"}), ns)
    kube.apply(member("nogpumem", "gpus"), ns)
    kube.apply(member("fits", "gpus", gpuMemory="6Gi"), ns)
    bad = wait_for(lambda: cond(kube.get("slm", "nogpumem", ns)) or None, 60, "its status")
    assert bad["reason"] == "PoolMemberRefused"
    assert bad["message"].startswith("spec.serving.resources.gpuMemory: pool gpus has GPUs")
    fits = wait_for(lambda: cond(kube.get("slmpool", "gpus", ns), "Fits") or None, 60, "Fits")
    assert fits["message"].startswith("placed 6Gi (fits) of 24Gi")
    # Moving a specialist between pools (or out of one) is refused by the API server.
    out = kube("patch", "slm", "fits", "-n", ns, "--type=merge", "-p",
               json.dumps({"spec": {"serving": {"pool": "other"}}}), check=False)  # fmt: skip
    assert "spec.serving.pool" in out and "immutable" in out, out
