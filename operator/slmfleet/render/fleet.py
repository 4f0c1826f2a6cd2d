"""The whole fleet -> the router configuration, plus the status of policies and budgets.

Pure: the controller gathers every SLMSpecialist, RouterPolicy, Budget and the
ConfigMap examples they reference, and this module resolves names into ids,
checks targets and emits one validated ``RouterConfig``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api.budget import BudgetSpec
from ..api.policy import RouterPolicySpec
from ..api.routerconfig import (
    BudgetConfig,
    DomainConfig,
    PolicyConfig,
    RouterConfig,
    SpecialistConfig,
)
from ..api.specialist import SLMSpecialistSpec
from . import labels as L
from .conditions import condition, ready_set


@dataclass(frozen=True)
class Item:
    """One custom resource as the renderer needs it."""

    namespace: str
    name: str
    spec: Any
    generation: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)
    created: str = ""

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"


def is_ready(status: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
    )


@dataclass
class FleetRender:
    config: RouterConfig
    policy_status: dict[str, dict[str, Any]]
    budget_status: dict[str, dict[str, Any]]


ExampleSource = Mapping[tuple[str, str, str], str]  # (namespace, configmap, key) -> text


def _specialist_config(item: Item, examples: ExampleSource) -> SpecialistConfig:
    spec: SLMSpecialistSpec = item.spec
    extra: list[str] = []
    if spec.domain.examples_from:
        ref = spec.domain.examples_from
        text = examples.get((item.namespace, ref.name, ref.key), "")
        extra = [line.strip() for line in text.splitlines() if line.strip()]
    return SpecialistConfig(
        id=item.id,
        endpoint=item.status.get("endpoint") or L.grpc_endpoint(item.name, item.namespace),
        triton_model=item.status.get("tritonModel") or item.name,
        backend=spec.model.backend,
        ready=is_ready(item.status),
        domain=DomainConfig(
            description=spec.domain.description,
            keywords=list(spec.domain.keywords),
            examples=[*spec.domain.examples, *extra],
            labels=list(spec.domain.labels),
        ),
        cost=spec.cost,
        reasoning=spec.model.reasoning,
        context_length=spec.model.context_length,
    )


def _selected(spec: RouterPolicySpec, namespace: str, specialists: list[Item]) -> list[str]:
    names = set(spec.specialists.names)
    chosen = [
        s.name
        for s in specialists
        if s.namespace == namespace
        and (
            s.name in names
            or (spec.specialists.selector and spec.specialists.selector.matches(dict(s.labels)))
        )
    ]
    # Named-but-missing targets stay in the list so the status can report them.
    return sorted(set(chosen) | names)


def _referenced(spec: RouterPolicySpec) -> set[str]:
    """Specialists named by rules and fixed cascade tiers."""
    refs = {r.specialist for r in spec.routing.rules}
    refs |= {t.specialist for t in spec.cascade if t.specialist}
    return refs


def _budget_covers(budget: Item, policy: Item, model_name: str, targets: list[str]) -> bool:
    if budget.namespace != policy.namespace:
        return False
    scope = budget.spec.applies_to
    if scope is None or (not scope.policies and not scope.specialists):
        return True
    return (
        policy.name in scope.policies
        or model_name in scope.policies
        or bool(set(scope.specialists) & set(targets))
    )


def render_fleet(
    specialists: list[Item],
    policies: list[Item],
    budgets: list[Item],
    examples: ExampleSource | None = None,
) -> FleetRender:
    examples = examples or {}
    by_id = {s.id: s for s in specialists}
    spec_configs = {s.id: _specialist_config(s, examples) for s in specialists}

    policy_configs: list[PolicyConfig] = []
    policy_status: dict[str, dict[str, Any]] = {}
    owners: dict[str, Item] = {}
    # Oldest policy keeps a contested model name; ties broken by id for determinism.
    for pol in sorted(policies, key=lambda p: (p.created, p.id)):
        spec: RouterPolicySpec = pol.spec
        model_name = spec.model_name or pol.name
        gen = pol.generation
        targets = _selected(spec, pol.namespace, specialists)
        referenced = sorted(_referenced(spec))
        all_names = sorted(set(targets) | set(referenced))
        ids = {n: f"{pol.namespace}/{n}" for n in all_names}
        missing = [n for n in all_names if ids[n] not in by_id]
        unready = [n for n in all_names if ids[n] in by_id and not spec_configs[ids[n]].ready]
        resolved = [
            {
                "name": n,
                "endpoint": spec_configs[ids[n]].endpoint if ids[n] in by_id else None,
                "ready": ids[n] in by_id and spec_configs[ids[n]].ready,
            }
            for n in all_names
        ]
        status: dict[str, Any] = {
            "observedGeneration": gen,
            "modelName": model_name,
            "resolvedTargets": resolved,
        }
        if model_name in owners:
            other = owners[model_name]
            msg = f"model name {model_name!r} is already served by RouterPolicy {other.id}"
            status["conditions"] = ready_set(False, "ModelNameConflict", msg, gen, stalled=True)
            policy_status[pol.id] = status
            continue
        owners[model_name] = pol
        if not targets:
            conds = ready_set(False, "NoTargets", "no SLMSpecialist matches", gen, stalled=True)
        elif missing:
            conds = ready_set(
                False,
                "TargetsNotFound",
                "missing SLMSpecialists: " + ", ".join(missing),
                gen,
                stalled=True,
            )
        elif unready:
            conds = ready_set(False, "TargetsNotReady", "not Ready yet: " + ", ".join(unready), gen)
        else:
            conds = ready_set(True, "TargetsReady", f"{len(targets)} specialists Ready", gen)
        status["conditions"] = conds
        policy_status[pol.id] = status

        routing = spec.routing.model_copy(deep=True)
        for rule in routing.rules:
            rule.specialist = ids[rule.specialist]
        cascade = [t.model_copy(deep=True) for t in spec.cascade]
        for tier in cascade:
            if tier.specialist:
                tier.specialist = ids[tier.specialist]
        covering = [b.id for b in budgets if _budget_covers(b, pol, model_name, targets)]
        policy_configs.append(
            PolicyConfig(
                model_name=model_name,
                id=pol.id,
                specialists=[ids[n] for n in targets if ids[n] in by_id],
                routing=routing,
                cascade=cascade,
                fallback=spec.fallback,
                budgets=sorted(covering),
            )
        )

    budget_configs: list[BudgetConfig] = []
    budget_status: dict[str, dict[str, Any]] = {}
    for bud in sorted(budgets, key=lambda b: b.id):
        bspec: BudgetSpec = bud.spec
        covered = sorted(p.model_name for p in policy_configs if bud.id in p.budgets)
        scope = bspec.applies_to
        if scope is None or (not scope.policies and not scope.specialists):
            # Unscoped: the whole namespace, including specialists called directly.
            named = sorted(s.id for s in specialists if s.namespace == bud.namespace)
        else:
            named = [f"{bud.namespace}/{n}" for n in scope.specialists]
        budget_configs.append(
            BudgetConfig(
                id=bud.id,
                per_request=bspec.per_request,
                spend=bspec.spend,
                policies=covered,
                specialists=[s for s in named if s in by_id],
            )
        )
        gen = bud.generation
        budget_status[bud.id] = {
            "observedGeneration": gen,
            "policies": covered,
            "conditions": [
                condition("Ready", True, "Accepted", f"applies to {len(covered)} policies", gen),
                condition("Reconciling", False, "Accepted", "", gen),
                condition("Stalled", False, "NotStalled", "", gen),
            ],
        }

    config = RouterConfig(
        policies=policy_configs,
        specialists=sorted(spec_configs.values(), key=lambda s: s.id),
        budgets=budget_configs,
    )
    return FleetRender(config=config, policy_status=policy_status, budget_status=budget_status)


def router_configmap(config: RouterConfig, namespace: str, name: str) -> dict[str, Any]:
    from ..api.routerconfig import CONFIG_KEY

    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/part-of": "slmfleet",
                "app.kubernetes.io/component": "router-config",
                "app.kubernetes.io/managed-by": L.MANAGED_BY,
            },
        },
        "data": {CONFIG_KEY: config.model_dump_json(by_alias=True, exclude_none=True)},
    }
