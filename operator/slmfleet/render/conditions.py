"""Status conditions: pure computations read by kubectl wait, Argo CD and Flux (kstatus).

Every resource carries ``Ready``; ``Reconciling`` and ``Stalled`` follow kstatus'
abnormal-true convention so GitOps tools tell progressing from failed. Several writers
share one object's conditions (the reconciler owns Ready/Reconciling/Stalled, the budget
loop Exceeded/Degraded, the autoscaler Scaling, ...): each writer computes the types it
owns, and a write merges them by type into the list it read (merge patches replace
lists whole), keeping the other writers' conditions and each lastTransitionTime when
the status did not flip.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..api.base import now_rfc3339

#: Longest condition message written. The CRDs refuse more than 32,768 characters, and a
#: refused status write must never come from a message a tenant can grow (a policy
#: naming 1,000 absent specialists once wrote 54,022): cut here, saying how much.
MAX_MESSAGE = 4096


def cap_message(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` if it fits ``limit`` characters, else its start and how much was cut."""
    if len(message) <= limit:
        return message
    cut = limit - 40  # room for the note
    return f"{message[:cut]} ... ({len(message) - cut} more characters)"


def condition(
    type_: str, status: bool | str, reason: str, message: str = "", generation: int | None = None
) -> dict[str, Any]:
    if isinstance(status, bool):
        status = "True" if status else "False"
    message = cap_message(message)
    cond: dict[str, Any] = {"type": type_, "status": status, "reason": reason, "message": message}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def merge_conditions(
    previous: Iterable[dict[str, Any]] | None, new: Iterable[dict[str, Any]], now: str | None = None
) -> list[dict[str, Any]]:
    """``previous`` with the types in ``new`` replaced (in place; new types appended),
    each keeping its old lastTransitionTime when its status is unchanged. Conditions of
    types ``new`` does not name belong to another writer and are kept as they are."""
    before_list = list(previous or ())
    old = {c.get("type"): c for c in before_list}
    stamp = now or now_rfc3339()
    fresh: dict[str, dict[str, Any]] = {}
    for cond in new:
        before = old.get(cond["type"])
        same = before is not None and before.get("status") == cond["status"]
        keep = before.get("lastTransitionTime") if same and before else None
        fresh[cond["type"]] = {**cond, "lastTransitionTime": keep or stamp}
    merged = [fresh.pop(c.get("type"), c) for c in before_list]
    return merged + list(fresh.values())


def ready_set(
    ready: bool,
    reason: str,
    message: str,
    generation: int | None,
    *,
    stalled: bool = False,
    at_rest: bool = False,
) -> list[dict[str, Any]]:
    """Ready, Reconciling and Stalled, consistent with each other. ``at_rest``: not
    Ready, yet nothing is in progress or wrong (a specialist scaled to zero): neither
    Reconciling nor Stalled, which kstatus (Flux) reads as Current."""
    reconciling = not ready and not stalled and not at_rest
    return [
        condition("Ready", ready, reason, message, generation),
        condition("Reconciling", reconciling, reason, message, generation),
        condition(
            "Stalled",
            stalled,
            reason if stalled else "NotStalled",
            message if stalled else "",
            generation,
        ),
    ]


def status_changed(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """Whether writing ``desired`` would change anything, ignoring transition times and
    the conditions of types ``desired`` does not own (see merge_conditions)."""
    current = current or {}
    owned = {c["type"] for c in desired.get("conditions", [])}

    def strip(status: dict[str, Any]) -> dict[str, Any]:
        out = dict(status)
        out["conditions"] = sorted(
            (
                {k: v for k, v in c.items() if k != "lastTransitionTime"}
                for c in status.get("conditions", [])
                if c.get("type") in owned
            ),
            key=lambda c: str(c.get("type")),
        )
        return out

    keys = set(desired)
    return strip({k: current.get(k) for k in keys if k in current}) != strip(desired)


def _find(conditions: Iterable[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)


def stalled_news(
    previous: Iterable[dict[str, Any]] | None, desired: Iterable[dict[str, Any]]
) -> tuple[str, str] | None:
    """(reason, message) when a status write turns ``Stalled`` True, or changes why it is
    True; None otherwise. What deserves a Warning Event: once per transition, never once
    per tick of a loop that keeps finding the same problem."""
    new = _find(desired, "Stalled")
    if new is None or new.get("status") != "True":
        return None
    old = _find(previous, "Stalled")
    if old is not None and old.get("status") == "True" and old.get("reason") == new["reason"]:
        return None
    return str(new["reason"]), str(new.get("message") or "")
