"""Cascade planning, pure: where a request starts, what a tier is skipped for, what's next."""

from __future__ import annotations

from collections.abc import Sequence

from ..api.routerconfig import FallbackConfig as FallbackSpec
from ..api.routerconfig import TierConfig as CascadeTier


def tier_index(tiers: Sequence[CascadeTier], name: str | None) -> int | None:
    if name is None:
        return None
    return next((i for i, t in enumerate(tiers) if t.name == name), None)


def start_index(
    tiers: Sequence[CascadeTier], fallback: FallbackSpec | None, routed: bool
) -> int | None:
    """First tier to run. Out-of-domain requests (``routed`` False) go to
    fallback.onUnknownDomain, by default the first tier after the first routed one."""
    if routed:
        return 0
    named = tier_index(tiers, fallback.on_unknown_domain if fallback else None)
    if named is not None:
        return named
    first_routed = next((i for i, t in enumerate(tiers) if t.routed), None)
    if first_routed is None:
        return 0
    return first_routed + 1 if first_routed + 1 < len(tiers) else None


def next_index(
    tiers: Sequence[CascadeTier], fallback: FallbackSpec | None, current: int, *, failed: bool
) -> int | None:
    """Tier after ``current``: on failure, fallback.onError if it lies ahead (never
    backwards, so a cascade always terminates); otherwise the next one."""
    if failed:
        named = tier_index(tiers, fallback.on_error if fallback else None)
        if named is not None and named > current:
            return named
    return current + 1 if current + 1 < len(tiers) else None


def skip_reason(
    tier: CascadeTier,
    *,
    routed_specialist: str | None,
    degrade: bool,
    cost_of: dict[str, float],
) -> str | None:
    """Why a tier does not run, or None.

    Under a degrade budget, external tiers and specialists costlier than the routed one
    are skipped; human review stays (it costs no tokens).
    """
    if tier.routed and routed_specialist is None:
        return "out_of_domain"
    if not degrade:
        return None
    if tier.external is not None:
        return "budget_degrade"
    if tier.specialist is not None:
        base = cost_of.get(routed_specialist or "", 0.0)
        if cost_of.get(tier.specialist, 0.0) > base:
            return "budget_degrade"
    return None
