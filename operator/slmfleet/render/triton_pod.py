"""The pieces of a Triton server's workload that specialists and pools share: its
container (ports, metrics, probes), the restricted Pod and container security contexts,
the GPU toleration, its Deployment (rollout and scraping) and its Service's ports.

``render/specialist.py`` and ``render/pool.py`` build their own Pods (volumes, init
containers, sidecars) around these, so a change to how Triton runs is made once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import labels as L

GPU_RESOURCE = "nvidia.com/gpu"
UID = 1000


def security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def pod_security_context() -> dict[str, Any]:
    """The Pod-level security context of every Triton Pod (specialist or pool)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "fsGroup": UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def gpu_tolerations(tolerations: Sequence[Any], gpu: int | None) -> list[dict[str, Any]]:
    """The user's tolerations, plus the GPU taint's when GPUs are requested."""
    out = [t.wire() for t in tolerations]
    if gpu and not any(t["key"] == GPU_RESOURCE for t in out):
        out.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    return out


def triton_container(
    image: str, server_args: list[str], resources: dict[str, Any], mounts: list[dict[str, Any]]
) -> dict[str, Any]:
    """The ``tritonserver`` container every specialist and pool runs: ``server_args``
    (repository, model control, exit policy) before the ports, metrics and probes they
    share, with the restricted security context."""
    return {
        "name": "triton",
        "image": image,
        "command": ["tritonserver"],
        "args": [
            *server_args,
            f"--http-port={L.HTTP_PORT}",
            f"--grpc-port={L.GRPC_PORT}",
            f"--metrics-port={L.METRICS_PORT}",
            "--allow-metrics=true",
        ],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "HF_HOME", "value": "/tmp/hf"},
            {"name": "HF_HUB_OFFLINE", "value": "1"},
        ],
        "ports": [
            {"name": "http", "containerPort": L.HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": L.GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": L.METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": resources,
        # Large models load slowly: the startup probe holds liveness off for 20 minutes.
        "startupProbe": probe("/v2/health/live", 10, 120),
        "livenessProbe": probe("/v2/health/live", 10, 3),
        "readinessProbe": probe("/v2/health/ready", 5, 3),
        "securityContext": security_context(),
        "volumeMounts": mounts,
    }


def triton_deployment(
    metadata: dict[str, Any],
    *,
    replicas: int,
    selector: dict[str, str],
    labels: dict[str, str],
    annotations: dict[str, str],
    pod: dict[str, Any],
) -> dict[str, Any]:
    """The Deployment of a Triton server (a specialist's or a pool's): Prometheus
    scrapes its Pods' metrics port; a rollout never goes below the ready count."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": selector},
            # Never below the ready count during a rollout: one extra replica surges.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        **annotations,
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(L.METRICS_PORT),
                    },
                },
                "spec": pod,
            },
        },
    }


def triton_service_ports() -> list[dict[str, Any]]:
    """The ports of a Triton server's Service (a specialist's or a pool's)."""
    return [
        {"name": "http", "port": L.HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
        {
            "name": "grpc",
            "port": L.GRPC_PORT,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "grpc",
        },
        {"name": "metrics", "port": L.METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
    ]
