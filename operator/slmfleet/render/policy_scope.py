"""What a RouterPolicy reaches: its specialists, the Secrets its tiers read, the Budgets
that cover it. Pure helpers of render/fleet.py (one namespace each: a policy never
reaches across its own)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..api.policy import RouterPolicySpec

if TYPE_CHECKING:
    from .fleet import Item


def selected(spec: RouterPolicySpec, namespace: str, specialists: list[Item]) -> list[str]:
    """The policy's targets: named ones (kept even when missing, so the status can say
    so) and the ones its selector matches, in its own namespace."""
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


def referenced(spec: RouterPolicySpec) -> set[str]:
    """Specialists named by rules and fixed cascade tiers."""
    refs = {r.specialist for r in spec.routing.rules}
    refs |= {t.specialist for t in spec.cascade if t.specialist}
    return refs


def secret_refs(spec: RouterPolicySpec) -> list[tuple[str, str, str]]:
    """(field path, secret, key) of every Secret the policy's tiers read."""
    return [
        (f"spec.cascade[{i}].external.apiKey", t.external.api_key.name, t.external.api_key.key)
        for i, t in enumerate(spec.cascade)
        if t.external is not None and t.external.api_key is not None
    ]


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


def covers(budget: Item, policy: Item, model_name: str, targets: list[str]) -> bool:
    """_budget_covers, where a Budget it fails on covers nothing (that Budget's own
    render reports the failure; the policy is not failed for it)."""
    try:
        return _budget_covers(budget, policy, model_name, targets)
    except Exception:
        return False
