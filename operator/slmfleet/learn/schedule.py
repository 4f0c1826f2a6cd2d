"""The operator's learning loop, pure: which policies are due, and the status a run's
result makes (``controller/learning.py`` is the glue).

A policy is learned when its ``spec.learning.enabled`` is true, every
``intervalSeconds`` (the first run at the loop's first look). The loop owns
``status.thresholdProposals``, ``status.learning`` and the condition ``Learned``;
every other status field and condition belongs to other writers and is merged around.
It never changes the spec: applying a proposal is a person's (GitOps commit, or
``slmfleet learn --apply``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from ..api.learning import LearningSpec
from ..render.conditions import condition

CONDITION = "Learned"


def learning_of(body: Mapping[str, Any]) -> LearningSpec | None:
    """The policy's learning settings when it asks to be learned, else None."""
    raw = (body.get("spec") or {}).get("learning")
    if not raw:
        return None
    try:
        spec = LearningSpec.model_validate(raw)
    except ValidationError:
        return None  # the API server refuses this; a stale cache entry is skipped
    return spec if spec.enabled else None


def due(
    bodies: Iterable[Mapping[str, Any]], last_run: Mapping[str, float], now: float
) -> list[Mapping[str, Any]]:
    """The policies to learn now, oldest run first (never run: first of all)."""
    out = []
    for body in bodies:
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        spec = learning_of(body)
        if spec is None:
            continue
        last = last_run.get(meta.get("uid", ""))
        if last is None or now - last >= spec.interval_seconds:
            out.append(body)
    return sorted(out, key=lambda b: last_run.get((b.get("metadata") or {}).get("uid", ""), 0))


def status_of(result: Mapping[str, Any], generation: int | None) -> dict[str, Any]:
    """The owned status fields and the ``Learned`` condition for a run's ``result``
    (``learn.job``): proposals replace the previous ones only when a run proposed;
    otherwise the condition says why not and the last proposals stay for review."""
    kind = result.get("outcome")
    out: dict[str, Any] = {}
    if kind == "proposed":
        status = result.get("status") or {}
        out["thresholdProposals"] = status.get("thresholdProposals", [])
        out["learning"] = status.get("learning", {})
        n = len(out["thresholdProposals"])
        cond = condition(
            CONDITION,
            True,
            "Proposed",
            f"{n} threshold proposal(s) from {result.get('outcomes', 0)} labelled outcomes; "
            "review them (slmfleet learn --store ... writes the revision and its evidence); "
            "nothing is applied",
            generation,
        )
    elif kind == "too_few":
        cond = condition(
            CONDITION,
            False,
            "TooFewOutcomes",
            f"{result.get('outcomes', 0)} labelled outcomes in the decision store; "
            f"spec.learning.minOutcomes is {result.get('needed')}",
            generation,
        )
    elif kind == "no_store":
        cond = condition(
            CONDITION,
            False,
            "NoDecisionStore",
            "the operator has no decision store to learn from (chart: learning.enabled "
            "with telemetry.decisionLog.store=postgres)",
            generation,
        )
    elif kind == "store_unavailable":
        cond = condition(
            CONDITION, "Unknown", "StoreUnavailable", str(result.get("message", ""))[:512],
            generation,
        )  # fmt: skip
    else:
        cond = condition(
            CONDITION, False, "LearningFailed", str(result.get("message", ""))[:512], generation
        )
    out["conditions"] = [cond]
    return out
