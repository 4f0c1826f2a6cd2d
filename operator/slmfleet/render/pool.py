"""SLMPool -> ConfigMap (every member's repository files), Deployment, Service, PDB,
NetworkPolicy. Pure, in the style of ``render/specialist.py``.

The Pod template does not depend on the members (except the PVCs their artifacts come
from), so adding, changing or removing a member never restarts the server: the
ConfigMap is mounted as a directory (kubelet updates it in place), the ``repository``
sidecar (``slmfleet.pool.sync``) lays each member out in the shared volume, and the
operator loads and unloads members through Triton's repository API
(``--model-control-mode=explicit``; ``pool/residency.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..api.pool import SLMPoolSpec
from ..api.specialist import SLMSpecialistSpec
from ..pool.fit import parse_bytes
from ..pool.sync import layout
from . import labels as L
from .hashing import content_hash
from .network import TritonPeers, build_network_policy
from .specialist import (
    DEFAULT_FETCHER_IMAGE,
    DEFAULT_IMAGES,
    Owner,
    artifact_subdir,
    pvc_claim,
)
from .triton import model_repository_files
from .triton_pod import (
    GPU_RESOURCE,
    gpu_tolerations,
    pod_security_context,
    security_context,
    triton_container,
    triton_deployment,
    triton_service_ports,
)

STORE = "/store"
CONFIG_DIR = "/etc/slmfleet/pool"
SOURCE_ROOT = "/source"


@dataclass(frozen=True)
class PoolMember:
    """A placed member: its name and validated spec."""

    name: str
    spec: SLMSpecialistSpec


def pool_child_name(pool: str) -> str:
    return f"slm-pool-{pool}"


def pool_labels(pool: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "triton",
        "app.kubernetes.io/instance": pool_child_name(pool),
        "app.kubernetes.io/component": "pool",
        "app.kubernetes.io/part-of": "slmfleet",
        "app.kubernetes.io/managed-by": L.MANAGED_BY,
        L.POOL_LABEL: pool,
    }


def pool_endpoint(pool: str, namespace: str) -> str:
    """gRPC endpoint of a pool's headless Service: every member is reached there."""
    return f"{pool_child_name(pool)}.{namespace}.svc:{L.GRPC_PORT}"


def gpu_share(member: PoolMember, spec: SLMPoolSpec) -> float | None:
    """A vLLM member's ``gpu_memory_utilization`` in a GPU pool: its declared GPU memory
    over one GPU's (vLLM would otherwise take 90% of the GPU for the first engine)."""
    res = spec.resources
    declared = member.spec.serving.resources.gpu_memory
    if not res.gpu or not res.gpu_memory or declared is None:
        return None
    per_gpu = parse_bytes(res.gpu_memory) / res.gpu
    return round(min(1.0, parse_bytes(declared) / per_gpu), 3)


def member_files(member: PoolMember, spec: SLMPoolSpec) -> dict[str, str]:
    """The member's repository files (as for a specialist of its own), keyed by path
    inside the member's directory."""
    files = model_repository_files(
        member.name, member.spec.model, gpu=spec.resources.gpu, gpu_share=gpu_share(member, spec)
    )
    return {("1/" if f == "model.json" else "") + f: text for f, text in files.items()}


def member_digest(member: PoolMember, spec: SLMPoolSpec) -> str:
    """Changes when anything the server reads changes (files or artifact): a reload."""
    return content_hash({"uri": member.spec.model.uri, "files": member_files(member, spec)})


def repository_data(spec: SLMPoolSpec, members: Sequence[PoolMember]) -> dict[str, str]:
    """The ConfigMap's data: each member's files under ``<member>.<file>`` keys, and
    ``members.json`` telling the sidecar where each goes."""
    data: dict[str, str] = {}
    manifest: dict[str, dict[str, Any]] = {}
    for m in members:
        files = member_files(m, spec)
        keys = {path: f"{m.name}.{path.rsplit('/', 1)[-1]}" for path in files}
        data |= {keys[path]: text for path, text in files.items()}
        manifest[m.name] = {
            "uri": m.spec.model.uri,
            "subdir": artifact_subdir(m.spec.model.backend),
            "digest": member_digest(m, spec),
            "files": keys,
        }
    data["members.json"] = layout(manifest)
    return data


def _metadata(owner: Owner, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": pool_labels(owner.name),
        "ownerReferences": [L.owner_reference("SLMPool", owner.name, owner.uid)],
    }


def build_pool_configmap(
    owner: Owner, spec: SLMPoolSpec, members: Sequence[PoolMember]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, f"{pool_child_name(owner.name)}-repository"),
        "data": repository_data(spec, members),
    }


def pool_image(spec: SLMPoolSpec, members: Sequence[PoolMember]) -> str:
    """The pool's image, else the default for its members' backends (vLLM's image also
    serves Python-backend models; mixing TensorRT-LLM with vLLM needs an explicit image)."""
    if spec.image:
        return spec.image
    backends = {m.spec.model.backend for m in members}
    for backend in ("vllm", "tensorrtllm"):
        if backend in backends:
            return DEFAULT_IMAGES[backend]
    return DEFAULT_IMAGES["python"]


def _claims(members: Sequence[PoolMember]) -> list[str]:
    return sorted({c for m in members if (c := pvc_claim(m.spec.model.uri))})


def build_pool_deployment(
    owner: Owner,
    spec: SLMPoolSpec,
    members: Sequence[PoolMember],
    *,
    fetcher_image: str = DEFAULT_FETCHER_IMAGE,
) -> dict[str, Any]:
    res = spec.resources
    requests: dict[str, Any] = {"cpu": res.cpu, "memory": res.memory}
    limits: dict[str, Any] = {"memory": res.memory}
    if res.gpu:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = res.gpu
    selector = {L.POOL_LABEL: owner.name}
    claims = _claims(members)
    sidecar_mounts = [
        {"name": "store", "mountPath": STORE},
        {"name": "repository", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        *({"name": f"source-{c}", "mountPath": f"{SOURCE_ROOT}/{c}", "readOnly": True}
          for c in claims),
    ]  # fmt: skip
    triton = triton_container(
        pool_image(spec, members),
        [
            f"--model-repository={STORE}/models",
            "--model-control-mode=explicit",
            "--exit-on-error=false",
            "--strict-readiness=false",
        ],
        {"requests": requests, "limits": limits},
        [
            {"name": "store", "mountPath": STORE, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    )
    sidecar = {
        "name": "repository",
        "image": spec.fetcher_image or fetcher_image,
        "command": ["python", "-m", "slmfleet.pool.sync"],
        "args": ["--config", CONFIG_DIR, "--store", STORE, "--source-root", SOURCE_ROOT],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": security_context(),
        "volumeMounts": sidecar_mounts,
    }
    tolerations = gpu_tolerations(spec.tolerations, res.gpu)
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": pod_security_context(),
        "containers": [triton, sidecar],
        "volumes": [
            {
                "name": "repository",
                "configMap": {"name": f"{pool_child_name(owner.name)}-repository"},
            },
            {"name": "store", "emptyDir": {"sizeLimit": spec.model_cache_size}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
            *(
                {"name": f"source-{c}", "persistentVolumeClaim": {"claimName": c, "readOnly": True}}
                for c in claims
            ),
        ],
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if tolerations:
        pod["tolerations"] = tolerations
    return triton_deployment(
        _metadata(owner, pool_child_name(owner.name)),
        replicas=spec.replicas,
        selector=selector,
        labels=pool_labels(owner.name),
        annotations={},
        pod=pod,
    )


def build_pool_service(owner: Owner) -> dict[str, Any]:
    """Headless, as a specialist's: the router balances over the Pods, and the operator
    reaches every replica's repository API (port http) through the EndpointSlices."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, pool_child_name(owner.name)),
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "None",
            "selector": {L.POOL_LABEL: owner.name},
            "ports": triton_service_ports(),
        },
    }


def build_pool_pdb(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, pool_child_name(owner.name)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {L.POOL_LABEL: owner.name}}},
    }


def build_pool_network_policy(owner: Owner, peers: TritonPeers) -> dict[str, Any]:
    """The router reaches the inference ports; the operator (``peers.operator``) reaches
    the HTTP port too: it loads and unloads members through the repository API."""
    policy = build_network_policy(
        owner.name, owner.namespace, _metadata(owner, pool_child_name(owner.name)), peers
    )
    policy["spec"]["podSelector"] = {"matchLabels": {L.POOL_LABEL: owner.name}}
    if peers.repository_from:
        policy["spec"]["ingress"].append(
            {
                "from": [dict(p) for p in peers.repository_from],
                "ports": [{"protocol": "TCP", "port": L.HTTP_PORT}],
            }
        )
    return policy


def build_pool_children(
    owner: Owner,
    spec: SLMPoolSpec,
    members: Sequence[PoolMember],
    *,
    fetcher_image: str = DEFAULT_FETCHER_IMAGE,
    peers: TritonPeers | None = None,
) -> list[dict[str, Any]]:
    """Every child in apply order (ConfigMap and NetworkPolicy before the Pods)."""
    peers = peers or TritonPeers(router_namespace=owner.namespace)
    return [
        build_pool_configmap(owner, spec, members),
        build_pool_network_policy(owner, peers),
        build_pool_deployment(owner, spec, members, fetcher_image=fetcher_image),
        build_pool_service(owner),
        build_pool_pdb(owner),
    ]
