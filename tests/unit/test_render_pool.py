"""Pool rendering and status: pure functions (the children, the repository ConfigMap,
the member's Ready as the router reads it)."""

from __future__ import annotations

import json

import pytest

from slmfleet.api.pool import SLMPoolSpec
from slmfleet.api.specialist import SLMSpecialistSpec
from slmfleet.pool.fit import Fit
from slmfleet.render.fleet import is_ready, is_scaled_to_zero
from slmfleet.render.network import TritonPeers
from slmfleet.render.pool import (
    PoolMember,
    build_pool_children,
    member_digest,
    repository_data,
)
from slmfleet.render.pool_status import MemberView, member_status, pool_fit, pool_status
from slmfleet.render.specialist import Owner

OWNER = Owner("shared", "ns", "uid-1", kind="SLMPool")
POOL = SLMPoolSpec.model_validate({"resources": {"memory": "4Gi"}})
OPERATOR = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "sys"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
}


def member(name: str, backend: str = "python", memory: str = "1Gi", **model) -> PoolMember:
    return PoolMember(
        name,
        SLMSpecialistSpec.model_validate(
            {
                "model": {"uri": f"hf://org/{name}", "backend": backend, **model},
                "serving": {"pool": "shared", "resources": {"memory": memory}},
            }
        ),
    )


def children(members: list[PoolMember]) -> dict[str, dict]:
    peers = TritonPeers("sys", repository_from=(OPERATOR,))
    return {c["kind"]: c for c in build_pool_children(OWNER, POOL, members, peers=peers)}


def test_one_deployment_with_explicit_model_control_and_a_repository_sidecar() -> None:
    out = children([member("a"), member("b", "vllm")])
    pod = out["Deployment"]["spec"]["template"]["spec"]
    triton, sidecar = pod["containers"]
    assert "--model-control-mode=explicit" in triton["args"]
    assert "--model-repository=/store/models" in triton["args"]
    assert triton["image"].endswith("-vllm-python-py3")  # a vLLM member picks vLLM's image
    assert sidecar["command"] == ["python", "-m", "slmfleet.pool.sync"]
    assert {"name": "store", "mountPath": "/store", "readOnly": True} in triton["volumeMounts"]
    assert out["Deployment"]["metadata"]["ownerReferences"][0]["kind"] == "SLMPool"
    assert out["Service"]["spec"]["clusterIP"] == "None"


def test_members_change_the_configmap_not_the_pod_template() -> None:
    one = children([member("a")])
    two = children([member("a"), member("b", "vllm", parameters={"max_num_seqs": "8"})])
    # Only the default image follows the members' backends (set spec.image to pin it).
    t1, t2 = (json.loads(json.dumps(c["Deployment"]["spec"]["template"])) for c in (one, two))
    for t in (t1, t2):
        t["spec"]["containers"][0].pop("image")
    assert t1 == t2
    three = children([member("a"), member("c")])
    assert one["Deployment"]["spec"]["template"] == three["Deployment"]["spec"]["template"]
    data = two["ConfigMap"]["data"]
    layout = json.loads(data["members.json"])["members"]
    assert layout["b"]["files"] == {
        "config.pbtxt": "b.config.pbtxt",
        "1/model.json": "b.model.json",
    }
    assert layout["b"]["subdir"] == "weights" and layout["a"]["subdir"] == ""
    assert json.loads(data["b.model.json"])["max_num_seqs"] == 8


def test_a_pvc_member_mounts_its_claim_for_the_sidecar() -> None:
    spec = SLMSpecialistSpec.model_validate(
        {"model": {"uri": "pvc://models/a", "backend": "python"}, "serving": {"pool": "shared"}}
    )
    out = children([PoolMember("a", spec)])
    pod = out["Deployment"]["spec"]["template"]["spec"]
    assert {
        "name": "source-models",
        "persistentVolumeClaim": {"claimName": "models", "readOnly": True},
    } in pod["volumes"]
    mounts = pod["containers"][1]["volumeMounts"]
    assert {"name": "source-models", "mountPath": "/source/models", "readOnly": True} in mounts


def test_the_operator_may_reach_the_repository_api() -> None:
    ingress = children([member("a")])["NetworkPolicy"]["spec"]["ingress"]
    assert {"from": [OPERATOR], "ports": [{"protocol": "TCP", "port": 8000}]} in ingress
    selector = children([member("a")])["NetworkPolicy"]["spec"]["podSelector"]
    assert selector == {"matchLabels": {"slmfleet.io/pool": "shared"}}


def test_a_digest_changes_with_the_files_or_the_artifact() -> None:
    a = member("a")
    assert member_digest(a, POOL) == member_digest(member("a"), POOL)
    assert member_digest(a, POOL) != member_digest(member("a", parameters={"x": "1"}), POOL)
    other = PoolMember("a", a.spec.model_copy(deep=True))
    other.spec.model.uri = "hf://org/other"
    assert member_digest(a, POOL) != member_digest(other, POOL)
    assert repository_data(POOL, [])["members.json"].strip().startswith("{")


def ready(status: dict) -> dict:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def test_member_status_as_the_router_reads_it() -> None:
    def status(state: str, message: str = "") -> dict:
        return member_status(
            name="a",
            namespace="ns",
            pool="shared",
            generation=3,
            view=MemberView("a", state, message),
            ready_replicas=2,
        )

    loaded = status("Loaded")
    assert is_ready(loaded) and loaded["endpoint"] == "slm-pool-shared.ns.svc:8001"
    assert loaded["tritonModel"] == "a" and loaded["readyReplicas"] == 2
    for state in ("Unloaded", "Loading", "Pending"):
        s = status(state)
        assert not is_ready(s) and is_scaled_to_zero(s), state  # requests wait or cascade
    refused = status("Refused", "spec.serving.resources.memory: 9Gi is more than ...")
    assert not is_scaled_to_zero(refused) and ready(refused)["reason"] == "PoolMemberRefused"
    assert ready(refused)["message"].startswith("spec.serving.resources.memory")
    assert not is_scaled_to_zero(status("PoolNotFound", "spec.serving.pool: no SLMPool"))


def test_pool_status_carries_fits_and_members() -> None:
    members = [("a", member("a").spec), ("b", member("b", memory="8Gi").spec)]
    fitted = pool_fit("shared", POOL, members)
    assert fitted.refused["b"].startswith("spec.serving.resources.memory: 8Gi is more than")
    out = pool_status(
        name="shared",
        namespace="ns",
        generation=1,
        spec=POOL,
        deployment=None,
        fitted=fitted,
        members=[
            MemberView("a", "Loaded", "", 2**30, 1.25),
            MemberView("b", "Refused", fitted.refused["b"]),
        ],
    )
    fits = next(c for c in out["conditions"] if c["type"] == "Fits")
    assert (fits["status"], fits["reason"]) == ("False", "MembersRefused")
    assert out["members"][0] == {
        "name": "a",
        "memory": "1Gi",
        "state": "Loaded",
        "message": "",
        "lastLoadSeconds": 1.25,
    }
    assert out["capacity"] == "4Gi" and out["requested"] == "1Gi"
    assert isinstance(fitted, Fit)


def test_gpu_pool_counts_gpu_memory() -> None:
    gpu = SLMPoolSpec.model_validate({"resources": {"gpu": 1, "gpuMemory": "24Gi"}})
    with_mem = SLMSpecialistSpec.model_validate(
        {
            "model": {"uri": "hf://o/m", "backend": "vllm"},
            "serving": {"pool": "g", "resources": {"gpuMemory": "20Gi", "memory": "64Gi"}},
        }
    )
    fitted = pool_fit("g", gpu, [("m", with_mem), ("n", member("n").spec)])
    assert fitted.placed == ("m",) and "gpuMemory" in fitted.refused["n"]
    assert fitted.message.startswith("placed 20Gi (m) of 24Gi")


def test_vllm_members_of_a_gpu_pool_take_their_share_of_the_gpu() -> None:
    gpu = SLMPoolSpec.model_validate({"resources": {"gpu": 1, "gpuMemory": "80Gi"}})

    def vllm(name: str, gib: int, **params: str) -> PoolMember:
        return PoolMember(name, SLMSpecialistSpec.model_validate({
            "model": {"uri": f"hf://o/{name}", "backend": "vllm", "parameters": params},
            "serving": {"pool": "g", "resources": {"gpuMemory": f"{gib}Gi"}}}))  # fmt: skip

    data = repository_data(gpu, [vllm("a", 20), vllm("b", 8, gpu_memory_utilization="0.5")])
    assert json.loads(data["a.model.json"])["gpu_memory_utilization"] == 0.25
    assert json.loads(data["b.model.json"])["gpu_memory_utilization"] == 0.5  # theirs wins
    cpu = repository_data(POOL, [member("c", "vllm")])
    assert json.loads(cpu["c.model.json"])["gpu_memory_utilization"] == 0.9  # the default


def test_a_member_quantity_past_int64_refuses_that_member_only() -> None:
    """The CRD admits 32 characters of digits: more bytes than 2^63 refuse the member,
    naming the field, and the others are placed (this used to overflow the pool loop)."""
    huge = "99999999999999999999Gi"
    fitted = pool_fit(
        "shared", POOL, [("a", member("a").spec), ("big", member("big", memory=huge).spec)]
    )
    assert fitted.placed == ("a",)
    assert fitted.refused["big"].startswith("spec.serving.resources.memory: memory quantity")
    assert "2^63" in fitted.refused["big"]


def test_a_pool_capacity_past_int64_is_an_error_naming_the_field() -> None:
    pool = SLMPoolSpec.model_validate({"resources": {"memory": "99999999999999999999Gi"}})
    with pytest.raises(ValueError, match=r"^spec\.resources\.memory: memory quantity"):
        pool_fit("shared", pool, [("a", member("a").spec)])
