"""SLMSpecialist -> ConfigMap (Triton model repository), Deployment, Service, PDB.

Pure functions in the style of dask-kubernetes' ``build_*_spec``: the controller
passes the object's name, namespace, uid and validated spec, and applies what comes
back. The Triton repository is assembled from mounts, not copies: the ConfigMap's
files are mounted into ``/models/<model>/`` and the fetcher init container writes the
artifact into an emptyDir mounted as the version directory ``1/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..api.specialist import SLMSpecialistSpec
from . import labels as L
from .hashing import content_hash
from .lora import Adapter
from .network import TritonPeers, build_network_policy
from .triton import VERSION_FILES, model_repository_files
from .triton_pod import (
    GPU_RESOURCE,
    gpu_tolerations,
    pod_security_context,
    security_context,
    triton_container,
    triton_deployment,
    triton_service_ports,
)

TRITON_VERSION = "25.10"
DEFAULT_IMAGES = {
    "vllm": f"nvcr.io/nvidia/tritonserver:{TRITON_VERSION}-vllm-python-py3",
    "tensorrtllm": f"nvcr.io/nvidia/tritonserver:{TRITON_VERSION}-trtllm-python-py3",
    "python": f"nvcr.io/nvidia/tritonserver:{TRITON_VERSION}-py3",
    "onnxruntime": f"nvcr.io/nvidia/tritonserver:{TRITON_VERSION}-py3",
}
DEFAULT_FETCHER_IMAGE = "ghcr.io/slmfleet/fetcher:0.1.0"


@dataclass(frozen=True)
class Owner:
    """The identity of the resource being rendered."""

    name: str
    namespace: str
    uid: str
    kind: str = "SLMSpecialist"


def artifact_subdir(backend: str) -> str:
    """Where in the version directory the artifact goes: engines read weights/, the
    python backend wants model.py and onnxruntime model.onnx at the top."""
    return "weights" if backend in ("vllm", "tensorrtllm") else ""


def _metadata(owner: Owner, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": L.common_labels(owner.name),
        "ownerReferences": [L.owner_reference(owner.kind, owner.name, owner.uid)],
    }


def build_model_configmap(
    owner: Owner, spec: SLMSpecialistSpec, adapters: Sequence[Adapter] = ()
) -> dict[str, Any]:
    files = model_repository_files(
        owner.name, spec.model, gpu=spec.serving.resources.gpu, adapters=adapters
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, L.model_config_name(owner.name)),
        "data": files,
    }


SOURCE_ROOT = "/source"


def pvc_claim(uri: str | None) -> str | None:
    """The claim of a ``pvc://claim/path`` URI, which the fetcher reads at /source."""
    if not uri or not uri.startswith("pvc://"):
        return None
    return uri.removeprefix("pvc://").split("/", 1)[0]


def _fetcher(owner: Owner, spec: SLMSpecialistSpec, default_image: str) -> dict[str, Any]:
    model = spec.model
    dest = "/store/" + artifact_subdir(model.backend)
    mounts = [
        {"name": "model-store", "mountPath": "/store"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if pvc_claim(model.uri):
        mounts.append({"name": "model-source", "mountPath": SOURCE_ROOT, "readOnly": True})
    container: dict[str, Any] = {
        "name": "fetch-model",
        "image": spec.serving.fetcher_image or default_image,
        "args": ["--uri", model.uri, "--dest", dest.rstrip("/")],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"memory": "1Gi"},
        },
        "securityContext": security_context(),
        "volumeMounts": mounts,
    }
    if model.credentials:
        container["env"].append(
            {
                "name": "SLMFLEET_FETCH_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {"name": model.credentials.name, "key": model.credentials.key}
                },
            }
        )
    return container


def _triton(owner: Owner, spec: SLMSpecialistSpec, files: dict[str, str]) -> dict[str, Any]:
    res = spec.serving.resources
    requests: dict[str, Any] = {"cpu": res.cpu, "memory": res.memory}
    limits: dict[str, Any] = {"memory": res.memory}
    if res.gpu:
        requests[GPU_RESOURCE] = res.gpu
        limits[GPU_RESOURCE] = res.gpu
    model_dir = f"/models/{owner.name}"
    mounts = [
        {"name": "model-store", "mountPath": f"{model_dir}/1"},
        *(
            {
                "name": "model-config",
                "mountPath": f"{model_dir}/{'1/' if f in VERSION_FILES else ''}{f}",
                "subPath": f,
                "readOnly": True,
            }
            for f in sorted(files)
        ),
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    return triton_container(
        spec.serving.image or DEFAULT_IMAGES[spec.model.backend],
        ["--model-repository=/models", "--model-control-mode=none", "--exit-on-error=true"],
        {"requests": requests, "limits": limits},
        mounts,
    )


def replica_count(spec: SLMSpecialistSpec) -> int:
    """The Deployment's replicas: ``spec.replicas`` (the scale subresource, set by whoever
    ``serving.autoscaling.mode`` names) within the min/max bounds. The operator never
    resets it to min on a spec change, so it does not fight an HPA, KEDA or the built-in
    autoscaler."""
    bounds = spec.serving.replicas
    return max(bounds.min, min(bounds.max, spec.replicas))


def _adapter_fetcher(base: dict[str, Any], adapter: Adapter) -> dict[str, Any]:
    """One more fetcher: the adapter's weights into ``1/loras/<adapter>`` (see lora.py)."""
    mounts = [m for m in base["volumeMounts"] if m["name"] != "model-source"]
    args = ["--uri", adapter.spec.uri, "--dest", f"/store/loras/{adapter.name}"]
    if pvc_claim(adapter.spec.uri):
        root = f"/lora-source/{adapter.name}"
        mounts.append({"name": _lora_volume(adapter), "mountPath": root, "readOnly": True})
        args += ["--source-root", root]
    return base | {"name": f"fetch-lora-{adapter.name}"[:63], "args": args, "volumeMounts": mounts}


def _lora_volume(adapter: Adapter) -> str:
    return f"lora-src-{adapter.name}"[:63]


def build_deployment(
    owner: Owner,
    spec: SLMSpecialistSpec,
    *,
    fetcher_image: str = DEFAULT_FETCHER_IMAGE,
    adapters: Sequence[Adapter] = (),
) -> dict[str, Any]:
    configmap = build_model_configmap(owner, spec, adapters)
    files: dict[str, str] = configmap["data"]
    serving = spec.serving
    selector = L.selector_labels(owner.name)
    tolerations = gpu_tolerations(serving.tolerations, serving.resources.gpu)
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": pod_security_context(),
        "initContainers": [
            (fetcher := _fetcher(owner, spec, fetcher_image)),
            *(_adapter_fetcher(fetcher, a) for a in adapters),
        ],
        "containers": [_triton(owner, spec, files)],
        "volumes": [
            {"name": "model-config", "configMap": {"name": L.model_config_name(owner.name)}},
            {"name": "model-store", "emptyDir": {"sizeLimit": serving.model_cache_size}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
        ],
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
            }
            for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
        ],
    }
    for a in adapters:
        if lora_claim := pvc_claim(a.spec.uri):
            pod_spec["volumes"].append(
                {
                    "name": _lora_volume(a),
                    "persistentVolumeClaim": {"claimName": lora_claim, "readOnly": True},
                }
            )
    claim = pvc_claim(spec.model.uri)
    if claim:
        pod_spec["volumes"].append(
            {
                "name": "model-source",
                "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
            }
        )
    if serving.node_selector:
        pod_spec["nodeSelector"] = dict(serving.node_selector)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    return triton_deployment(
        _metadata(owner, L.child_name(owner.name)),
        replicas=replica_count(spec),
        selector=selector,
        labels=L.common_labels(owner.name),
        annotations={L.CONFIG_HASH_ANNOTATION: content_hash(files)},
        pod=pod_spec,
    )


def build_service(owner: Owner, spec: SLMSpecialistSpec) -> dict[str, Any]:
    """A headless Service: DNS returns every ready Pod, and the router balances its gRPC
    calls across them (round_robin). A ClusterIP would pin each long-lived HTTP/2
    connection to one Pod, and allocating one serialises Service creation at scale."""
    del spec  # the Service depends only on identity; kept for a uniform builder signature
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, L.child_name(owner.name)),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "None",
            "selector": L.selector_labels(owner.name),
            "ports": triton_service_ports(),
        },
    }


def build_pdb(owner: Owner, spec: SLMSpecialistSpec) -> dict[str, Any]:
    del spec
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, L.child_name(owner.name)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": L.selector_labels(owner.name)},
        },
    }


def build_children(
    owner: Owner,
    spec: SLMSpecialistSpec,
    *,
    fetcher_image: str = DEFAULT_FETCHER_IMAGE,
    peers: TritonPeers | None = None,
    adapters: Sequence[Adapter] = (),
) -> list[dict[str, Any]]:
    """Every child, in apply order: the ConfigMap before the Pods that mount it, and the
    NetworkPolicy (only the router reaches Triton) before the Pods it protects."""
    peers = peers or TritonPeers(router_namespace=owner.namespace)
    return [
        build_model_configmap(owner, spec, adapters),
        build_network_policy(
            owner.name, owner.namespace, _metadata(owner, L.child_name(owner.name)), peers
        ),
        build_deployment(owner, spec, fetcher_image=fetcher_image, adapters=adapters),
        build_service(owner, spec),
        build_pdb(owner, spec),
    ]
