"""Only the router reaches Triton: a NetworkPolicy among every specialist's children.

Triton has no authentication of its own; API keys, budgets and routing all live in the
router. Without a policy any Pod of the cluster could call a specialist's gRPC port
directly and bypass them. The policy admits the router's Pods to the inference ports and
the metrics scrapers (the operator, Prometheus when enabled) to the metrics port only;
kubelet probes are not subject to NetworkPolicies. Egress is left open: the fetcher
init container downloads the model from wherever ``model.uri`` points.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import labels as L

ROUTER_LABELS = {"app.kubernetes.io/component": "router"}


@dataclass(frozen=True)
class TritonPeers:
    """Who may reach a specialist's Pods."""

    router_namespace: str
    router_labels: Mapping[str, str] = field(default_factory=lambda: dict(ROUTER_LABELS))
    metrics_from: tuple[Mapping[str, Any], ...] = ()
    """NetworkPolicyPeers allowed to the metrics port (operator, Prometheus)."""
    repository_from: tuple[Mapping[str, Any], ...] = ()
    """NetworkPolicyPeers allowed to a pool's HTTP port (the operator: it loads and
    unloads members through Triton's repository API)."""

    @classmethod
    def from_environment(cls, router_namespace: str) -> TritonPeers:
        """``SLMFLEET_ROUTER_POD_LABELS`` (JSON map), ``SLMFLEET_METRICS_PEERS`` and
        ``SLMFLEET_OPERATOR_PEERS`` (JSON lists of NetworkPolicyPeer), rendered by the
        chart."""
        labels = json.loads(os.environ.get("SLMFLEET_ROUTER_POD_LABELS") or "null")
        peers = json.loads(os.environ.get("SLMFLEET_METRICS_PEERS") or "[]")
        operator = json.loads(os.environ.get("SLMFLEET_OPERATOR_PEERS") or "[]")
        return cls(router_namespace, labels or dict(ROUTER_LABELS), tuple(peers), tuple(operator))


def _in_namespace(namespace: str, labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "podSelector": {"matchLabels": dict(labels)},
    }


def build_network_policy(
    name: str, namespace: str, metadata: dict[str, Any], peers: TritonPeers
) -> dict[str, Any]:
    tcp = "TCP"
    ingress: list[dict[str, Any]] = [
        {
            "from": [_in_namespace(peers.router_namespace, peers.router_labels)],
            "ports": [
                {"protocol": tcp, "port": L.GRPC_PORT},
                {"protocol": tcp, "port": L.HTTP_PORT},
            ],
        }
    ]
    if peers.metrics_from:
        ingress.append(
            {
                "from": [dict(p) for p in peers.metrics_from],
                "ports": [{"protocol": tcp, "port": L.METRICS_PORT}],
            }
        )
    del namespace  # the metadata carries it; kept for a uniform builder signature
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {
            "podSelector": {"matchLabels": L.selector_labels(name)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
