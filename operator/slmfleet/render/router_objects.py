"""Objects the operator writes for the router: configuration fragments and, per tenant
namespace, the Role that lets the router read exactly the Secrets that namespace's
policies reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api.fragments import FRAGMENT_KEY, FRAGMENT_LABEL, Fragment, fragment_name
from ..api.names import MANAGED_BY

PART_OF = {"app.kubernetes.io/part-of": "slmfleet", "app.kubernetes.io/managed-by": MANAGED_BY}


@dataclass(frozen=True)
class RouterTarget:
    """Where the router's configuration lives and who the router is."""

    namespace: str
    """Namespace of the router (and of its configuration)."""
    config_name: str
    """Name of the anchor ConfigMap; fragments are labelled with it."""
    service_account: str = ""
    """The router's ServiceAccount (in ``namespace``), granted the tenants' Secrets."""

    @property
    def secrets_role(self) -> str:
        """Name of the per-namespace Role and RoleBinding for the router's Secrets."""
        return f"{self.config_name[:240]}-secrets"


def anchor_configmap(target: RouterTarget) -> dict[str, Any]:
    """The ConfigMap every fragment is owned by: deleting it (``helm uninstall``)
    garbage-collects the fragments. The chart creates it; the operator only when absent."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": target.config_name,
            "namespace": target.namespace,
            "labels": {**PART_OF, "app.kubernetes.io/component": "router-config"},
        },
    }


def fragment_selector(target: RouterTarget) -> str:
    return f"{FRAGMENT_LABEL}={target.config_name}"


def fragment_configmap(
    frag: Fragment, target: RouterTarget, owner_uid: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": fragment_name(target.config_name, frag.kind, frag.id),
        "namespace": target.namespace,
        "labels": {
            **PART_OF,
            "app.kubernetes.io/component": "router-config",
            FRAGMENT_LABEL: target.config_name,
            "slmfleet.io/fragment-kind": frag.kind,
        },
        # The object it describes, for people reading `kubectl get cm`; never parsed.
        "annotations": {"slmfleet.io/object": f"{frag.kind}/{frag.id}"},
    }
    if owner_uid:
        meta["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": target.config_name, "uid": owner_uid}
        ]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {FRAGMENT_KEY: frag.encode()},
    }


def secret_reader(namespace: str, secrets: list[str], target: RouterTarget) -> list[dict[str, Any]]:
    """A Role allowing ``get`` on exactly ``secrets`` (``resourceNames``) in
    ``namespace``, bound to the router's ServiceAccount. No Secrets: no rules (the
    operator has no ``delete`` on Roles; an empty Role grants nothing)."""
    labels = {**PART_OF, "app.kubernetes.io/component": "router-secrets"}
    meta = {"name": target.secrets_role, "namespace": namespace, "labels": labels}
    rules = (
        [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": sorted(secrets),
                "verbs": ["get"],
            }
        ]
        if secrets
        else []
    )
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": target.secrets_role,
            },
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": target.service_account,
                    "namespace": target.namespace,
                }
            ],
        },
    ]
