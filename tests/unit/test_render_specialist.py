"""SLMSpecialist -> Kubernetes objects: table tests of the pure builders."""

import pytest

from slmfleet.api.specialist import SLMSpecialistSpec
from slmfleet.render import labels as L
from slmfleet.render.specialist import (
    DEFAULT_IMAGES,
    Owner,
    build_children,
    build_deployment,
    build_model_configmap,
    build_pdb,
    build_service,
)

OWNER = Owner(name="billing", namespace="shop", uid="uid-1")


def spec(**overrides) -> SLMSpecialistSpec:
    base = {"model": {"uri": "hf://org/billing-1b", "backend": "vllm"}}
    for dotted, value in overrides.items():
        node = base
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return SLMSpecialistSpec.model_validate(base)


def pod(deployment):
    return deployment["spec"]["template"]["spec"]


def triton(deployment):
    return pod(deployment)["containers"][0]


def test_children_in_apply_order_and_owned():
    children = build_children(OWNER, spec())
    assert [c["kind"] for c in children] == [
        "ConfigMap",
        "NetworkPolicy",  # before the Pods it protects
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    ]
    for child in children:
        (ref,) = child["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "slmfleet.io/v1alpha1",
            "kind": "SLMSpecialist",
            "name": "billing",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert child["metadata"]["namespace"] == "shop"
        assert child["metadata"]["labels"][L.SPECIALIST_LABEL] == "billing"


@pytest.mark.parametrize(
    ("backend", "files", "image"),
    [
        ("vllm", {"config.pbtxt", "model.json"}, DEFAULT_IMAGES["vllm"]),
        ("tensorrtllm", {"config.pbtxt"}, DEFAULT_IMAGES["tensorrtllm"]),
        ("python", {"config.pbtxt"}, DEFAULT_IMAGES["python"]),
        ("onnxruntime", {"config.pbtxt"}, DEFAULT_IMAGES["onnxruntime"]),
    ],
)
def test_model_repository_per_backend(backend, files, image):
    s = spec(model__backend=backend)
    cm = build_model_configmap(OWNER, s)
    assert set(cm["data"]) == files
    dep = build_deployment(OWNER, s)
    container = triton(dep)
    assert container["image"] == image
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/models/billing/config.pbtxt"]["subPath"] == "config.pbtxt"
    assert mounts["/models/billing/1"]["name"] == "model-store"
    if "model.json" in files:
        assert mounts["/models/billing/1/model.json"]["subPath"] == "model.json"


@pytest.mark.parametrize(
    ("backend", "dest"),
    [("vllm", "/store/weights"), ("tensorrtllm", "/store/weights"), ("python", "/store")],
)
def test_fetcher_writes_where_the_backend_reads(backend, dest):
    init = pod(build_deployment(OWNER, spec(model__backend=backend)))["initContainers"][0]
    assert init["args"] == ["--uri", "hf://org/billing-1b", "--dest", dest]


def test_credentials_come_from_a_secret_reference_only():
    s = spec(model__credentials={"name": "hf", "key": "token"})
    init = pod(build_deployment(OWNER, s))["initContainers"][0]
    (token,) = [e for e in init["env"] if e["name"] == "SLMFLEET_FETCH_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
    assert "value" not in token


@pytest.mark.parametrize(("gpu", "expect_gpu"), [(0, False), (2, True)])
def test_gpu_requests_and_toleration(gpu, expect_gpu):
    dep = build_deployment(OWNER, spec(serving__resources={"gpu": gpu}))
    resources = triton(dep)["resources"]
    assert ("nvidia.com/gpu" in resources["limits"]) is expect_gpu
    if expect_gpu:
        assert resources["requests"]["nvidia.com/gpu"] == gpu
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod(dep)[
            "tolerations"
        ]
    else:
        assert "tolerations" not in pod(dep)


def test_restricted_security_context_everywhere():
    dep = build_deployment(OWNER, spec())
    p = pod(dep)
    assert p["securityContext"]["runAsNonRoot"] is True
    assert p["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert p["automountServiceAccountToken"] is False
    for container in p["containers"] + p["initContainers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}


def test_probes_ports_and_spread():
    dep = build_deployment(OWNER, spec())
    c = triton(dep)
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }
    keys = {t["topologyKey"] for t in pod(dep)["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}


def test_replicas_and_zero_downtime_rollout():
    dep = build_deployment(OWNER, spec(serving__replicas={"min": 2, "max": 5}))
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


@pytest.mark.parametrize(
    ("bounds", "replicas", "expected"),
    [
        ({"min": 2, "max": 5}, None, 2),  # nobody scaled yet (default 1): start at min
        ({"min": 2, "max": 5}, 4, 4),  # the scale subresource's value, not min
        ({"min": 2, "max": 5}, 9, 5),  # above max (bounds lowered since): clamped
        ({"min": 2, "max": 5}, 0, 2),  # below min: clamped
        ({"min": 0, "max": 3}, 0, 0),  # scaled to zero
        ({"min": 0, "max": 3}, None, 1),  # min 0 starts at one, then idles to zero
    ],
)
def test_replicas_follow_the_scale_subresource_within_bounds(bounds, replicas, expected):
    extra = {} if replicas is None else {"replicas": replicas}
    dep = build_deployment(OWNER, spec(serving__replicas=bounds, **extra))
    assert dep["spec"]["replicas"] == expected


def test_spec_change_keeps_the_scaled_replica_count():
    """An unrelated spec edit must not reset replicas to min (an HPA would be fought)."""
    scaled = spec(serving__replicas={"min": 1, "max": 8}, replicas=6)
    edited = spec(serving__replicas={"min": 1, "max": 8}, replicas=6, model__quantization="awq")
    assert build_deployment(OWNER, scaled)["spec"]["replicas"] == 6
    assert build_deployment(OWNER, edited)["spec"]["replicas"] == 6


def test_config_change_rolls_pods_and_cost_change_does_not():
    base = build_deployment(OWNER, spec())
    hash_of = lambda d: d["spec"]["template"]["metadata"]["annotations"][L.CONFIG_HASH_ANNOTATION]  # noqa: E731
    quantized = build_deployment(OWNER, spec(model__quantization="awq"))
    assert hash_of(quantized) != hash_of(base)
    cheaper = build_deployment(OWNER, spec(cost={"replicaHourUsd": 1.5}))
    assert cheaper == base


def test_service_and_pdb_select_the_pods():
    dep = build_deployment(OWNER, spec())
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    svc = build_service(OWNER, spec())
    pdb = build_pdb(OWNER, spec())
    for selector in (svc["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    assert {p["name"] for p in svc["spec"]["ports"]} == {"http", "grpc", "metrics"}
    assert svc["spec"]["clusterIP"] == "None"  # headless: the router balances per Pod
    assert pdb["spec"]["maxUnavailable"] == 1


def test_user_image_node_selector_and_tolerations_pass_through():
    s = spec(
        serving__image="registry.local/triton:custom",
        serving__nodeSelector={"pool": "a100"},
        serving__tolerations=[{"key": "dedicated", "operator": "Equal", "value": "slm"}],
    )
    dep = build_deployment(OWNER, s)
    assert triton(dep)["image"] == "registry.local/triton:custom"
    assert pod(dep)["nodeSelector"] == {"pool": "a100"}
    assert pod(dep)["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "slm"}]


@pytest.mark.parametrize(
    ("uri", "claim"),
    [("pvc://models/retail/orders", "models"), ("pvc://cache", "cache"), ("hf://org/m", None)],
)
def test_pvc_uri_mounts_the_claim_read_only_in_the_fetcher(uri, claim):
    dep = build_deployment(OWNER, spec(model__uri=uri))
    volumes = {v["name"]: v for v in pod(dep)["volumes"]}
    init_mounts = {m["name"]: m for m in pod(dep)["initContainers"][0]["volumeMounts"]}
    if claim is None:
        assert "model-source" not in volumes
        assert "model-source" not in init_mounts
    else:
        assert volumes["model-source"]["persistentVolumeClaim"] == {
            "claimName": claim,
            "readOnly": True,
        }
        assert init_mounts["model-source"] == {
            "name": "model-source",
            "mountPath": "/source",
            "readOnly": True,
        }
    # Triton itself never sees the source, only the fetched copy.
    assert "model-source" not in {m["name"] for m in triton(dep)["volumeMounts"]}


def test_fetcher_image_default_comes_from_the_operator_and_spec_overrides_it():
    chart_default = build_children(OWNER, spec(), fetcher_image="registry.local/fetch:1")
    assert pod(chart_default[2])["initContainers"][0]["image"] == "registry.local/fetch:1"
    own = build_children(
        OWNER, spec(serving__fetcherImage="mine:2"), fetcher_image="registry.local/fetch:1"
    )
    assert pod(own[2])["initContainers"][0]["image"] == "mine:2"
