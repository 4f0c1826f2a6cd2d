"""An immutable, ready-to-serve view of one RouterConfig: compiled rules, validators,
fitted classifiers and lookup tables. Hot reload builds a new one off the event loop and
swaps a single reference, so in-flight requests finish on the snapshot they started with.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from ..api.learning import Calibration
from ..api.routerconfig import (
    BudgetConfig,
    CapacityConfig,
    DecisionLogConfig,
    DomainConfig,
    PolicyConfig,
    RolloutConfig,
    RouterConfig,
    SpecialistConfig,
)
from ..api.routerconfig import FallbackConfig as FallbackSpec
from ..api.routerconfig import RoutingConfig as RoutingSpec
from ..api.routerconfig import TierConfig as CascadeTier
from .acceptance import CompiledAcceptance, compile_acceptance
from .routing import Candidate, RouteDecision, RuleSet, choose_route, compile_rules

log = logging.getLogger("slmfleet.router")


class Classifier(Protocol):
    def predict(self, text: str) -> Any:
        """RouteScores-like: ``.best``, ``.confidence``, ``.scores``."""
        ...


#: ``factory(domains)``, or ``factory(domains, negatives)`` when the policy lists
#: out-of-domain examples.
ClassifierFactory = Callable[..., Classifier]


def default_classifier_factory(
    domains: Mapping[str, DomainConfig], negatives: tuple[str, ...] = ()
) -> Classifier:
    from .staged import StagedClassifier  # the learned classifier (numpy/sklearn only)

    return StagedClassifier.fit(domains, negatives=negatives)


@dataclass(frozen=True, slots=True)
class TierRuntime:
    cfg: CascadeTier
    accept: CompiledAcceptance


@dataclass(frozen=True, slots=True)
class PolicyRuntime:
    model_name: str
    id: str
    specialists: tuple[str, ...]
    routing: RoutingSpec
    rules: RuleSet
    classifier: Classifier | None
    tiers: tuple[TierRuntime, ...]
    tier_cfgs: tuple[CascadeTier, ...]
    fallback: FallbackSpec | None
    budgets: tuple[BudgetConfig, ...]
    direct: bool = False
    """A specialist addressed by id: one tier, no routing."""
    rollouts: tuple[RolloutConfig, ...] = ()
    """Canary and shadow rollouts, one per incumbent (see rollouts)."""
    decision_log: DecisionLogConfig | None = None
    """What the decision log keeps of this policy's texts (None: the router's default)."""
    capacity: CapacityConfig = field(default_factory=CapacityConfig)
    """Wait for a specialist scaled to zero or cascade (see capacity.py)."""
    calibration: Calibration | None = None
    """Calibrators of routing and answer confidences (see learn.calibrator)."""

    def route(
        self,
        text: str,
        candidates: Mapping[str, Candidate],
        scores: Mapping[str, float] | None,
        *,
        degrade: bool,
    ) -> RouteDecision:
        """``text`` routed by this policy's rules and routing settings over ``scores``
        (the classifier's, calibrated; None when a rule decides or there is none)."""
        r = self.routing
        return choose_route(
            text,
            rules=self.rules,
            scores=scores,
            candidates=candidates,
            min_confidence=r.semantic.min_confidence,
            cost_aware=r.cost_aware.enabled,
            tolerance=r.cost_aware.tolerance,
            degrade=degrade,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: RouterConfig
    digest: str
    policies: Mapping[str, PolicyRuntime]
    candidates: Mapping[str, Candidate]
    budgets_by_specialist: Mapping[str, tuple[BudgetConfig, ...]]
    specialists: Mapping[str, SpecialistConfig]
    models: tuple[dict[str, Any], ...] = field(default_factory=tuple)


def digest_of(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:12]


def budgets_for(snap: Snapshot, policy: PolicyRuntime, sid: str | None) -> tuple[BudgetConfig, ...]:
    """The policy's Budgets plus those covering specialist ``sid`` (each once)."""
    budgets = policy.budgets
    if sid is not None:
        ids = {b.id for b in budgets}
        extra = tuple(b for b in snap.budgets_by_specialist.get(sid, ()) if b.id not in ids)
        budgets = budgets + extra
    return budgets


def _policy_budgets(cfg: RouterConfig, p: PolicyConfig) -> tuple[BudgetConfig, ...]:
    """The Budgets the policy's fragment names (ids in its own namespace: the fragment
    check refuses others). Never by a Budget's ``policies`` (model names, which carry
    no namespace and change owner): a forged or stale Budget fragment in another
    namespace would otherwise charge, or reject, this policy's requests."""
    return tuple(b for b in cfg.budgets if b.id in p.budgets)


def build_snapshot(
    cfg: RouterConfig,
    *,
    digest: str = "",
    classifier_factory: ClassifierFactory | None = None,
    cache: dict[str, Classifier] | None = None,
) -> Snapshot:
    """Compile everything a request needs; fit one classifier per distinct domain set.

    ``cache`` (digest of the domains -> classifier) lets reloads that did not touch any
    domain skip refitting.
    """
    factory = classifier_factory or default_classifier_factory
    cache = {} if cache is None else cache
    by_id = {s.id: s for s in cfg.specialists}
    candidates = {
        # Scaled to zero is routable: the request wakes it (and waits or cascades).
        s.id: Candidate(
            s.ready or s.scaled_to_zero,
            s.cost.input_per_million_usd + s.cost.output_per_million_usd,
        )
        for s in cfg.specialists
    }
    by_spec: dict[str, tuple[BudgetConfig, ...]] = {
        s.id: tuple(b for b in cfg.budgets if s.id in b.specialists) for s in cfg.specialists
    }
    policies: dict[str, PolicyRuntime] = {}
    models: list[dict[str, Any]] = []
    for p in cfg.policies:
        # One policy that cannot be compiled or fitted is left out, not the whole
        # configuration: the blast radius of an object is that object.
        try:
            known = tuple(sid for sid in p.specialists if sid in by_id)
            classifier = None
            if p.routing.semantic.enabled and known:
                domains = {sid: by_id[sid].domain for sid in known}
                negatives = tuple(p.routing.semantic.out_of_domain_examples)
                fitted_on: dict[str, Any] = {k: v.wire() for k, v in sorted(domains.items())}
                if negatives:
                    fitted_on = {"domains": fitted_on, "negatives": negatives}
                key = digest_of(orjson.dumps(fitted_on))
                classifier = cache.get(key)
                if classifier is None:
                    fitted = factory(domains, negatives) if negatives else factory(domains)
                    classifier = cache[key] = fitted
            policies[p.model_name] = PolicyRuntime(
                model_name=p.model_name,
                id=p.id,
                specialists=known,
                routing=p.routing,
                rules=compile_rules(p.routing.rules),
                classifier=classifier,
                tiers=tuple(TierRuntime(t, compile_acceptance(t.accept)) for t in p.cascade),
                tier_cfgs=tuple(p.cascade),
                fallback=p.fallback,
                budgets=_policy_budgets(cfg, p),
                rollouts=tuple(p.rollouts),
                decision_log=p.decision_log,
                capacity=p.capacity,
                calibration=p.calibration,
            )
        except Exception as exc:
            log.error("policy %s left out of the configuration: %s", p.id, exc)
            continue
        models.append(
            {
                "id": p.model_name,
                "object": "model",
                "created": 0,
                "owned_by": "slmfleet",
                "slmfleet": {"kind": "policy", "policy": p.id},
            }
        )
    for s in cfg.specialists:
        if s.id in policies:
            continue
        tier = CascadeTier(name="direct", specialist=s.id)
        policies[s.id] = PolicyRuntime(
            model_name=s.id,
            id=s.id,
            specialists=(s.id,),
            routing=RoutingSpec(),
            rules=RuleSet(()),
            classifier=None,
            tiers=(TierRuntime(tier, compile_acceptance(tier.accept)),),
            tier_cfgs=(tier,),
            fallback=None,
            # The Budgets covering this specialist (a Budget without appliesTo covers
            # every specialist of its namespace): addressing it by id must not bypass them.
            budgets=by_spec.get(s.id, ()),
            direct=True,
        )
        models.append(
            {
                "id": s.id,
                "object": "model",
                "created": 0,
                "owned_by": "slmfleet",
                "slmfleet": {"kind": "specialist", "ready": s.ready},
            }
        )
    return Snapshot(cfg, digest, policies, candidates, by_spec, by_id, tuple(models))


def parse_config(raw: bytes) -> RouterConfig:
    """router.json bytes -> validated RouterConfig (YAML accepted for hand-written files)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        import yaml

        data = yaml.safe_load(raw)
    return RouterConfig.model_validate(data)
