"""The ``Rollout`` condition of a RouterPolicy, pure: whether its canary and shadow
rollouts can run, naming the field of each one that cannot.

A rollout whose incumbent is not one of the policy's specialists, or whose candidate
does not exist or is not Ready, is left alone by the router (the incumbent keeps all
its traffic); the policy stays Ready and ``Rollout`` says what is wrong. Rolling a
canary back is the router's decision at run time (see ``router.rollouts``): its state
is in the router's metrics and decision headers, not in this condition.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from ..api.names import object_id
from ..api.policy import RouterPolicySpec
from .conditions import condition

CONDITION = "Rollout"


def rollout_condition(
    spec: RouterPolicySpec,
    namespace: str,
    targets: Collection[str],
    ready: Mapping[str, bool],
    generation: int | None,
) -> dict[str, Any]:
    """``targets``: the policy's specialist names; ``ready``: specialist id -> Ready, for
    every specialist that exists."""
    if not spec.rollouts:
        return condition(CONDITION, True, "NoRollouts", "", generation)
    problems: list[tuple[str, str]] = []
    active: list[str] = []
    for i, r in enumerate(spec.rollouts):
        where = f"spec.rollouts[{i}]"
        cid = object_id(namespace, r.candidate)
        if r.specialist not in targets:
            problems.append(
                (
                    "IncumbentNotRouted",
                    f"{where}.specialist: {r.specialist!r} is not one of the policy's specialists",
                )
            )
        elif cid not in ready:
            problems.append(
                (
                    "CandidateNotFound",
                    f"{where}.candidate: SLMSpecialist {r.candidate!r} not found in "
                    f"namespace {namespace}",
                )
            )
        elif not ready[cid]:
            problems.append(
                ("CandidateNotReady", f"{where}.candidate: SLMSpecialist {r.candidate!r} "
                 "is not Ready yet")
            )  # fmt: skip
        else:
            active.append(f"{r.mode} {r.specialist} -> {r.candidate} at {r.percent:g}%")
    if problems:
        message = "; ".join(m for _, m in problems)
        if active:
            message += "; active: " + ", ".join(active)
        return condition(CONDITION, False, problems[0][0], message, generation)
    return condition(CONDITION, True, "RolloutsActive", ", ".join(active), generation)
