"""CRD specs -> the router's own configuration types, resolving names into ids.

The one place where the user's API meets the router protocol: a policy's specialist
names become ``namespace/name`` ids of *its* namespace, a Secret reference gets the
policy's namespace, endpoints are computed from names (never read back from a status a
tenant could write). Translation goes through the wire form, so a field that exists on
one side and not the other fails loudly here (``extra="forbid"``), not silently in the
router.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..api.budget import BudgetSpec
from ..api.names import object_id
from ..api.policy import RouterPolicySpec
from ..api.routerconfig import (
    BudgetConfig,
    CapacityConfig,
    CostConfig,
    DecisionLogConfig,
    DomainConfig,
    FallbackConfig,
    LadderStepConfig,
    PerRequestConfig,
    PolicyConfig,
    ReasoningConfig,
    RolloutConfig,
    RoutingConfig,
    SpecialistConfig,
    SpendWindowConfig,
    TierConfig,
)
from ..api.specialist import SLMSpecialistSpec
from . import labels as L
from .pool import pool_endpoint

#: (namespace, name) -> host:port of a specialist's Triton gRPC endpoint.
EndpointOf = Callable[[str, str], str]


def cluster_endpoint(namespace: str, name: str) -> str:
    """The headless Service the operator renders for every specialist."""
    return L.grpc_endpoint(name, namespace)


def specialist_config(
    namespace: str,
    name: str,
    spec: SLMSpecialistSpec,
    *,
    ready: bool,
    extra_examples: list[str],
    endpoint_of: EndpointOf = cluster_endpoint,
    scaled_to_zero: bool = False,
    cost_capped: bool = False,
) -> SpecialistConfig:
    # A pool member is a model of its pool's server (in a cluster; a local fleet keeps
    # its own endpoints).
    pool = spec.serving.pool if endpoint_of is cluster_endpoint else None
    # A LoRA adapter is its base's model with its own lora_name (render/lora.py).
    adapter = spec.model.adapter
    served_by = adapter.base if adapter else name
    return SpecialistConfig(
        id=object_id(namespace, name),
        endpoint=pool_endpoint(pool, namespace) if pool else endpoint_of(namespace, served_by),
        triton_model=served_by,
        lora_name=name if adapter else None,
        backend=spec.model.backend,
        # The router tokenizes for ONNX classifiers, from the artifact's tokenizer.json.
        artifact=spec.model.uri if spec.model.backend == "onnxruntime" else None,
        ready=ready,
        scaled_to_zero=scaled_to_zero and not ready,
        cost_capped=cost_capped,
        target_in_flight=spec.slo.target_in_flight,
        domain=DomainConfig(
            description=spec.domain.description,
            keywords=list(spec.domain.keywords),
            examples=[*spec.domain.examples, *extra_examples],
            labels=list(spec.domain.labels),
        ),
        cost=CostConfig(
            input_per_million_usd=spec.cost.input_per_million_usd,
            output_per_million_usd=spec.cost.output_per_million_usd,
        ),
        reasoning=(
            ReasoningConfig.model_validate(spec.model.reasoning.wire())
            if spec.model.reasoning
            else None
        ),
        context_length=spec.model.context_length,
    )


def _tier(wire: dict[str, Any], namespace: str) -> TierConfig:
    if wire.get("specialist"):
        wire["specialist"] = object_id(namespace, wire["specialist"])
    key = (wire.get("external") or {}).get("apiKey")
    if key is not None:
        key["namespace"] = namespace  # a reference resolves in its own namespace only
    return TierConfig.model_validate(wire)


def policy_config(
    namespace: str,
    name: str,
    spec: RouterPolicySpec,
    *,
    model_name: str,
    specialists: list[str],
    budgets: list[str],
) -> PolicyConfig:
    """``specialists`` are the resolved target ids; rule and tier names resolve here."""
    routing = spec.routing.wire()
    for rule in routing.get("rules", []):
        rule["specialist"] = object_id(namespace, rule["specialist"])
    rollouts = [r.wire() for r in spec.rollouts]
    for r in rollouts:
        r["specialist"] = object_id(namespace, r["specialist"])
        r["candidate"] = object_id(namespace, r["candidate"])
    return PolicyConfig(
        model_name=model_name,
        id=object_id(namespace, name),
        specialists=specialists,
        routing=RoutingConfig.model_validate(routing),
        cascade=[_tier(t.wire(), namespace) for t in spec.cascade],
        fallback=FallbackConfig.model_validate(spec.fallback.wire()) if spec.fallback else None,
        capacity=CapacityConfig.model_validate(spec.capacity.wire()),
        budgets=budgets,
        rollouts=[RolloutConfig.model_validate(r) for r in rollouts],
        decision_log=(
            DecisionLogConfig.model_validate(spec.decision_log.wire())
            if spec.decision_log
            else None
        ),
        calibration=spec.calibration,
    )


def budget_config(
    namespace: str,
    name: str,
    spec: BudgetSpec,
    *,
    policies: list[str],
    specialists: list[str],
) -> BudgetConfig:
    """A Budget as the router enforces it: caps, windows, ladder and fail mode."""
    per_request = spec.per_request
    return BudgetConfig(
        id=object_id(namespace, name),
        per_request=PerRequestConfig.model_validate(per_request.wire()) if per_request else None,
        spend=[SpendWindowConfig.model_validate(w.wire()) for w in spec.spend],
        ladder=[LadderStepConfig.model_validate(s.wire()) for s in spec.ladder],
        fail_mode=spec.fail_mode,
        policies=policies,
        specialists=specialists,
    )
