"""Names and labels of the objects the operator owns; one place, so selectors agree."""

from __future__ import annotations

from typing import Any

from ..api.names import API_VERSION, FIELD_MANAGER, MANAGED_BY

__all__ = ["FIELD_MANAGER", "MANAGED_BY"]

SPECIALIST_LABEL = "slmfleet.io/specialist"
POOL_LABEL = "slmfleet.io/pool"
CONFIG_HASH_ANNOTATION = "slmfleet.io/config-hash"
APPLIED_HASH_ANNOTATION = "slmfleet.io/applied-hash"

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002


def child_name(specialist: str) -> str:
    return f"slm-{specialist}"


def model_config_name(specialist: str) -> str:
    return f"slm-{specialist}-model"


def selector_labels(specialist: str) -> dict[str, str]:
    return {SPECIALIST_LABEL: specialist}


def common_labels(specialist: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "triton",
        "app.kubernetes.io/instance": child_name(specialist),
        "app.kubernetes.io/component": "specialist",
        "app.kubernetes.io/part-of": "slmfleet",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector_labels(specialist),
    }


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def grpc_endpoint(specialist: str, namespace: str) -> str:
    return f"{child_name(specialist)}.{namespace}.svc:{GRPC_PORT}"
