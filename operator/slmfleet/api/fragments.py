"""The router configuration, one fragment per object: no object can break another's.

The operator used to write the whole fleet into one ConfigMap: one specialist with a
few thousand long examples pushed it past the 1 MiB limit for everyone, and one bad
regular expression made every router replica refuse the entire document. Now each
SLMSpecialist, RouterPolicy and Budget has its own fragment (a ConfigMap labelled
:data:`FRAGMENT_LABEL`, key :data:`FRAGMENT_KEY`), and the router assembles the valid
ones (:func:`assemble`), refusing the others one by one with a reason.

Assembly also re-checks what the operator guarantees, so a fragment the operator did
not write cannot cross a namespace: a policy may only reference specialists, Budgets
and Secrets of its own namespace, and the first policy (by creation, then id) keeps a
contested model name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import orjson
from pydantic import Field, ValidationError

from .base import KubeModel
from .names import ObjectId, split_id
from .routerconfig import BudgetConfig, PolicyConfig, RouterConfig, SpecialistConfig

FRAGMENT_KEY = "fragment.json"
#: Label of every fragment ConfigMap; its value names the router configuration
#: (``<name>`` of ``--configmap <namespace>/<name>``), so several releases can share
#: a namespace.
FRAGMENT_LABEL = "slmfleet.io/router-config"
#: Largest fragment the operator writes: below the 1 MiB ConfigMap limit with room for
#: metadata. Larger objects are Ready=False (RouterConfigTooLarge) and left out.
MAX_FRAGMENT_BYTES = 768 * 1024

FragmentKind = Literal["specialist", "policy", "budget"]


class Fragment(KubeModel):
    """One object's part of the router configuration."""

    version: Literal[1] = 1
    kind: FragmentKind
    id: ObjectId
    """namespace/name of the object."""
    created: str = Field(default="", max_length=64)
    """The object's creationTimestamp: the older policy keeps a contested model name."""
    specialist: SpecialistConfig | None = None
    policy: PolicyConfig | None = None
    budget: BudgetConfig | None = None

    def body(self) -> SpecialistConfig | PolicyConfig | BudgetConfig | None:
        return {"specialist": self.specialist, "policy": self.policy, "budget": self.budget}[
            self.kind
        ]

    def encode(self) -> str:
        return orjson.dumps(self.model_dump(by_alias=True, exclude_none=True, mode="json")).decode()


def fragment_name(config_name: str, kind: FragmentKind, ident: str) -> str:
    """ConfigMap name of a fragment: fixed length whatever the object's names (a
    namespace and a name together can exceed any object-name limit), stable, and never
    derived from user text except through a hash."""
    digest = hashlib.sha256(f"{kind}/{ident}".encode()).hexdigest()[:20]
    return f"{config_name[:200]}-{kind[0]}-{digest}"


def _same_namespace(namespace: str, ids: list[str | None]) -> str | None:
    for ident in ids:
        if ident is not None and split_id(ident)[0] != namespace:
            return f"references {ident} outside its namespace {namespace}"
    return None


def _confinement(frag: Fragment) -> str | None:
    """Why a fragment reaches outside its own namespace, or None."""
    namespace, _ = split_id(frag.id)
    body = frag.body()
    if body is None:
        return f"a {frag.kind} fragment without its {frag.kind}"
    if body.id != frag.id:
        return f"holds {body.id}, not {frag.id}"
    if isinstance(body, PolicyConfig):
        refs: list[str | None] = [*body.specialists, *body.budgets]
        refs += [r.specialist for r in body.routing.rules]
        refs += [t.specialist for t in body.cascade]
        refs += [r.specialist for r in body.rollouts] + [r.candidate for r in body.rollouts]
        problem = _same_namespace(namespace, refs)
        if problem:
            return problem
        for tier in body.cascade:
            key = tier.external.api_key if tier.external else None
            if key is not None and key.namespace != namespace:
                return f"tier {tier.name} reads a Secret outside its namespace {namespace}"
    if isinstance(body, BudgetConfig):
        return _same_namespace(namespace, list(body.specialists))
    return None


@dataclass
class Assembly:
    config: RouterConfig
    rejected: dict[str, str] = field(default_factory=dict)
    """Fragment name -> why it was left out."""


def parse_fragment(raw: bytes | str) -> Fragment:
    """A fragment's bytes -> Fragment; ValueError with a short reason otherwise."""
    try:
        frag = Fragment.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"invalid at {where}: {first['msg']}") from None
    problem = _confinement(frag)
    if problem:
        raise ValueError(problem)
    return frag


def assemble(fragments: Mapping[str, bytes | str]) -> Assembly:
    """Every valid fragment in one RouterConfig; each invalid one left out with a reason.

    ``fragments`` maps a fragment's name (its ConfigMap) to its bytes. The result does
    not depend on the order of the mapping.
    """
    rejected: dict[str, str] = {}
    parsed: dict[str, Fragment] = {}
    for name in sorted(fragments):
        try:
            parsed[name] = parse_fragment(fragments[name])
        except ValueError as exc:
            rejected[name] = str(exc)
    by_id: dict[tuple[str, str], str] = {}
    for name, frag in sorted(parsed.items()):
        key = (frag.kind, frag.id)
        if key in by_id:
            rejected[name] = f"{frag.kind} {frag.id} is also in {by_id[key]}"
            continue
        by_id[key] = name
    kept = {name: parsed[name] for name in by_id.values()}
    owners: dict[str, Fragment] = {}
    policies: list[PolicyConfig] = []
    for name, frag in sorted(kept.items(), key=lambda kv: (kv[1].created, kv[1].id)):
        if frag.policy is None:
            continue
        model = frag.policy.model_name
        if model in owners:
            rejected[name] = f"model name {model!r} is already served by {owners[model].id}"
            continue
        owners[model] = frag
        policies.append(frag.policy)
    specialists = [f.specialist for f in kept.values() if f.specialist is not None]
    budgets = [f.budget for f in kept.values() if f.budget is not None]
    config = RouterConfig(
        policies=sorted(policies, key=lambda p: p.id),
        specialists=sorted(specialists, key=lambda s: s.id),
        budgets=sorted(budgets, key=lambda b: b.id),
    )
    return Assembly(config, rejected)
