"""The whole fleet -> one router-configuration fragment per object, plus statuses.

Pure: the controller gathers every SLMSpecialist, RouterPolicy and Budget, the example
ConfigMaps and the existence of the Secrets they reference; this module decides, object
by object, what the router serves and what each object's status says. The blast radius
of an object is that object: a specialist whose examples are missing or too large, a
policy that fails validation, conflicts over a model name or outgrows the fragment
limit is ``Ready=False`` with a reason and left out, and nothing else changes. So is an
object whose render raises (``RenderError``): no object can fail the whole render.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api.budget import BudgetSpec
from ..api.fragments import MAX_FRAGMENT_BYTES, Fragment, assemble
from ..api.names import object_id
from ..api.policy import RouterPolicySpec
from ..api.routerconfig import PolicyConfig, RouterConfig, SpecialistConfig
from ..api.specialist import SLMSpecialistSpec
from .conditions import condition, ready_set
from .policy_scope import covers, referenced, secret_refs, selected
from .rollouts import rollout_condition
from .specialist_status import WAKEABLE
from .translate import (
    EndpointOf,
    budget_config,
    cluster_endpoint,
    policy_config,
    specialist_config,
)

#: The Scaling condition's reason when the cost cap binds (autoscale/decide.py's CAPPED).
COST_CAPPED = "CostCapped"
#: Most bytes read from an ``examplesFrom`` ConfigMap key (and most lines kept).
MAX_EXAMPLES_BYTES = 256 * 1024
MAX_EXAMPLE_LINES = 5000


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
        return object_id(self.namespace, self.name)


@dataclass(frozen=True)
class Invalid:
    """An object the API server stored but the models refuse (an older CRD admitted it,
    or a check the API server cannot make, such as a JSON Schema's references)."""

    kind: str
    namespace: str
    name: str
    generation: int | None
    message: str

    @property
    def id(self) -> str:
        return object_id(self.namespace, self.name)


@dataclass(frozen=True)
class Problem:
    """Why an object is left out of the router configuration."""

    reason: str
    message: str


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def is_ready(status: Mapping[str, Any]) -> bool:
    return _condition(status, "Ready").get("status") == "True"


def is_scaled_to_zero(status: Mapping[str, Any]) -> bool:
    """At zero replicas on purpose, or starting its first one: not Ready, yet a request
    for it is held (or cascaded), not refused."""
    ready = _condition(status, "Ready")
    return ready.get("status") == "False" and ready.get("reason") in WAKEABLE


def is_cost_capped(status: Mapping[str, Any]) -> bool:
    """The built-in autoscaler's cost cap limits the replicas (its Scaling condition)."""
    scaling = _condition(status, "Scaling")
    return scaling.get("status") == "True" and scaling.get("reason") == COST_CAPPED


#: (namespace, configmap, key) -> text, or None when the ConfigMap or the key is missing.
ExampleSource = Mapping[tuple[str, str, str], str | None]
#: (namespace, secret) -> whether the Secret exists.
SecretSource = Mapping[tuple[str, str], bool]


@dataclass
class FleetRender:
    fragments: dict[tuple[str, str], Fragment]
    """(kind, id) -> the fragment to write."""
    policy_status: dict[str, dict[str, Any]]
    budget_status: dict[str, dict[str, Any]]
    specialist_problems: dict[str, Problem] = field(default_factory=dict)
    """Specialist id -> why it is left out (its status shows it as Ready=False)."""
    secret_grants: dict[str, list[str]] = field(default_factory=dict)
    """Namespace -> Secrets the router may read there (the policies' API keys)."""

    @property
    def config(self) -> RouterConfig:
        """What a router assembles from these fragments."""
        return assemble({f"{k[0]}/{k[1]}": f.encode() for k, f in self.fragments.items()}).config


def _fits(frag: Fragment) -> Problem | None:
    size = len(frag.encode())
    if size > MAX_FRAGMENT_BYTES:
        return Problem(
            "RouterConfigTooLarge",
            f"its router configuration is {size} bytes, more than {MAX_FRAGMENT_BYTES}: "
            "use fewer or shorter examples",
        )
    return None


def _examples(item: Item, examples: ExampleSource) -> tuple[list[str], Problem | None]:
    ref = item.spec.domain.examples_from
    if ref is None:
        return [], None
    text = examples.get((item.namespace, ref.name, ref.key))
    if text is None:
        return [], Problem(
            "ExamplesNotFound",
            f"spec.domain.examplesFrom: ConfigMap {ref.name!r} has no key {ref.key!r} "
            f"in namespace {item.namespace}",
        )
    size = len(text.encode())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if size > MAX_EXAMPLES_BYTES or len(lines) > MAX_EXAMPLE_LINES:
        return [], Problem(
            "ExamplesTooLarge",
            f"spec.domain.examplesFrom: {ref.name}/{ref.key} holds {size} bytes in "
            f"{len(lines)} lines; at most {MAX_EXAMPLES_BYTES} bytes and "
            f"{MAX_EXAMPLE_LINES} lines are read",
        )
    if any(len(line) > 1024 for line in lines):
        return [], Problem(
            "ExamplesTooLarge",
            f"spec.domain.examplesFrom: {ref.name}/{ref.key} has lines longer than 1024 characters",
        )
    return lines, None


def _specialists(
    items: list[Item], examples: ExampleSource, endpoint_of: EndpointOf
) -> tuple[dict[str, SpecialistConfig], dict[str, Problem]]:
    configs: dict[str, SpecialistConfig] = {}
    problems: dict[str, Problem] = {}
    for item in items:
        try:
            cfg, problem = _specialist(item, examples, endpoint_of)
        except Exception as err:  # one specialist's bug never stops the fleet's render
            cfg, problem = None, Problem("RenderError", f"{type(err).__name__}: {err}")
        if cfg is not None:
            configs[item.id] = cfg
        if problem is not None:
            problems[item.id] = problem
    return configs, problems


def _specialist(
    item: Item, examples: ExampleSource, endpoint_of: EndpointOf
) -> tuple[SpecialistConfig | None, Problem | None]:
    spec: SLMSpecialistSpec = item.spec
    extra, problem = _examples(item, examples)
    if problem is None:
        cfg = specialist_config(
            item.namespace,
            item.name,
            spec,
            ready=is_ready(item.status),
            extra_examples=extra,
            endpoint_of=endpoint_of,
            scaled_to_zero=is_scaled_to_zero(item.status),
            cost_capped=is_cost_capped(item.status),
        )
        problem = _fits(Fragment(kind="specialist", id=item.id, specialist=cfg))
        if problem is None:
            return cfg, None
    return None, problem


def _stalled_status(generation: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "conditions": ready_set(False, reason, message, generation, stalled=True),
    }


def _invalid_status(obj: Invalid) -> dict[str, Any]:
    message = f"refused by the slmfleet API models: {obj.message}"
    return _stalled_status(obj.generation, "InvalidSpec", message)


def _failed_status(obj: Item, err: Exception) -> dict[str, Any]:
    """The status of an object whose rendering failed unexpectedly: left out of the
    router configuration, saying why on its own status (the others render)."""
    message = f"rendering failed, left out of the router: {type(err).__name__}: {err}"
    return _stalled_status(obj.generation, "RenderError", message)


def render_fleet(
    specialists: list[Item],
    policies: list[Item],
    budgets: list[Item],
    examples: ExampleSource | None = None,
    *,
    secrets: SecretSource | None = None,
    invalid: list[Invalid] = (),  # type: ignore[assignment]
    endpoint_of: EndpointOf = cluster_endpoint,
) -> FleetRender:
    """``secrets`` None means "not checked" (``slmfleet up`` checks its own files)."""
    examples = examples or {}
    by_id = {s.id: s for s in specialists}
    spec_configs, spec_problems = _specialists(specialists, examples, endpoint_of)
    fragments: dict[tuple[str, str], Fragment] = {
        ("specialist", sid): Fragment(
            kind="specialist", id=sid, created=by_id[sid].created, specialist=cfg
        )
        for sid, cfg in spec_configs.items()
    }
    policy_status: dict[str, dict[str, Any]] = {
        o.id: _invalid_status(o) for o in invalid if o.kind == "RouterPolicy"
    }
    budget_status: dict[str, dict[str, Any]] = {
        o.id: _invalid_status(o) for o in invalid if o.kind == "Budget"
    }
    grants: dict[str, set[str]] = {}
    served: list[PolicyConfig] = []
    owners: dict[str, Item] = {}
    # Oldest policy keeps a contested model name; ties broken by id for determinism.
    for pol in sorted(policies, key=lambda p: (p.created, p.id)):
        try:
            spec: RouterPolicySpec = pol.spec
            model_name = spec.model_name or pol.name
            gen = pol.generation
            targets = selected(spec, pol.namespace, specialists)
            all_names = sorted(set(targets) | referenced(spec))
            ids = {n: object_id(pol.namespace, n) for n in all_names}
            missing = [n for n in all_names if ids[n] not in by_id]
            served_by = {n: spec_configs.get(ids[n]) for n in all_names}
            # A target scaled to zero is not Ready, but the policy serves it (a request
            # wakes it): only targets that can serve nothing make the policy unready.
            unready = [
                n
                for n, c in served_by.items()
                if ids[n] in by_id and not (c is not None and (c.ready or c.scaled_to_zero))
            ]
            idle = [n for n, c in served_by.items() if c is not None and c.scaled_to_zero]
            resolved = []
            for n, c in served_by.items():
                target = {
                    "name": n,
                    "endpoint": endpoint_of(pol.namespace, n) if ids[n] in by_id else None,
                    "ready": c is not None and c.ready,
                }
                if c is not None and c.scaled_to_zero:
                    target["scaledToZero"] = True
                resolved.append(target)
            status: dict[str, Any] = {
                "observedGeneration": gen,
                "modelName": model_name,
                "resolvedTargets": resolved,
            }
            policy_status[pol.id] = status
            if model_name in owners:
                other = owners[model_name]
                msg = f"model name {model_name!r} is already served by RouterPolicy {other.id}"
                status["conditions"] = ready_set(False, "ModelNameConflict", msg, gen, stalled=True)
                continue
            covering = [b.id for b in budgets if covers(b, pol, model_name, targets)]
            config = policy_config(
                pol.namespace,
                pol.name,
                spec,
                model_name=model_name,
                specialists=[ids[n] for n in targets if ids[n] in by_id],
                budgets=sorted(covering),
            )
            frag = Fragment(kind="policy", id=pol.id, created=pol.created, policy=config)
            too_large = _fits(frag)
            if too_large is not None:
                status["conditions"] = ready_set(
                    False, too_large.reason, too_large.message, gen, stalled=True
                )
                continue
            refs = secret_refs(spec)
            absent = [
                f"{where}: Secret {name!r} does not exist in namespace {pol.namespace}"
                for where, name, _ in refs
                if secrets is not None and not secrets.get((pol.namespace, name), False)
            ]
            if not targets:
                conds = ready_set(False, "NoTargets", "no SLMSpecialist matches", gen, stalled=True)
            elif missing:
                msg = "missing SLMSpecialists: " + ", ".join(missing)
                conds = ready_set(False, "TargetsNotFound", msg, gen, stalled=True)
            elif absent:
                conds = ready_set(False, "SecretNotFound", "; ".join(absent), gen, stalled=True)
            elif unready:
                conds = ready_set(
                    False, "TargetsNotReady", "not Ready yet: " + ", ".join(unready), gen
                )
            else:
                msg = f"{len(targets)} specialists Ready"
                if idle:
                    msg += f"; scaled to zero, started on demand: {', '.join(idle)}"
                conds = ready_set(True, "TargetsReady", msg, gen)
            ready = {sid: sid in spec_configs and spec_configs[sid].ready for sid in by_id}
            status["conditions"] = [
                *conds,
                rollout_condition(spec, pol.namespace, targets, ready, gen),
            ]
            # Served last, all at once: a policy whose render raises above is served
            # nowhere and grants the router none of its Secrets.
            owners[model_name] = pol
            served.append(config)
            fragments[("policy", pol.id)] = frag
            grants.setdefault(pol.namespace, set()).update(name for _, name, _ in refs)
        except Exception as err:  # one policy's bug never stops the fleet's render
            policy_status[pol.id] = _failed_status(pol, err)

    for bud in sorted(budgets, key=lambda b: b.id):
        try:
            bspec: BudgetSpec = bud.spec
            covered = sorted(p.model_name for p in served if bud.id in p.budgets)
            scope = bspec.applies_to
            if scope is None or (not scope.policies and not scope.specialists):
                # Unscoped: the whole namespace, including specialists called directly.
                named = sorted(s.id for s in specialists if s.namespace == bud.namespace)
            else:
                named = [object_id(bud.namespace, n) for n in scope.specialists]
            config = budget_config(
                bud.namespace,
                bud.name,
                bspec,
                policies=covered,
                specialists=[s for s in named if s in by_id],
            )
            fragments[("budget", bud.id)] = Fragment(
                kind="budget", id=bud.id, created=bud.created, budget=config
            )
            gen = bud.generation
            budget_status[bud.id] = {
                "observedGeneration": gen,
                "policies": covered,
                "conditions": [
                    condition(
                        "Ready", True, "Accepted", f"applies to {len(covered)} policies", gen
                    ),
                    condition("Reconciling", False, "Accepted", "", gen),
                    condition("Stalled", False, "NotStalled", "", gen),
                ],
            }
        except Exception as err:  # one Budget's bug never stops the fleet's render
            fragments.pop(("budget", bud.id), None)
            budget_status[bud.id] = _failed_status(bud, err)

    return FleetRender(
        fragments=fragments,
        policy_status=policy_status,
        budget_status=budget_status,
        specialist_problems=spec_problems,
        secret_grants={ns: sorted(names) for ns, names in grants.items() if names},
    )
