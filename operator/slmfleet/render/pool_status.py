"""SLMPool and pool-member status: pure functions of the pool, its members, its
Deployment and the residency state.

A member's ``Ready`` says whether the router may send to it now: Loaded is Ready;
Unloaded and Loading are not Ready but *wakeable* (the router holds or cascades a
request as for scale from zero, and that demand loads it); Refused, LoadFailed and
PoolNotFound are Stalled with a message naming the field to fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..api.pool import SLMPoolSpec
from ..api.specialist import SLMSpecialistSpec
from ..pool.fit import Claim, Fit, fit, format_bytes, parse_bytes
from .conditions import condition, ready_set
from .pool import pool_endpoint
from .specialist_status import MEMBER_LOADING, MEMBER_UNLOADED, deployment_progress


def capacity_of(spec: SLMPoolSpec) -> tuple[int, str]:
    """(bytes the members share per replica, the member field that counts against it)."""
    res = spec.resources
    field, quantity = ("gpuMemory", res.gpu_memory or "0") if res.gpu else ("memory", res.memory)
    try:
        return parse_bytes(quantity), f"spec.serving.resources.{field}"
    except ValueError as err:  # stored before the CRD bounded it: name the field
        raise ValueError(f"spec.resources.{field}: {err}") from None


def claim_of(pool: str, spec: SLMPoolSpec, name: str, member: SLMSpecialistSpec) -> Claim:
    """What one member occupies in the pool, or why it cannot be placed at all."""
    if member.model.adapter is not None:
        return Claim(
            name,
            None,
            "spec.model.adapter: an adapter is served by its base's engine; put the base "
            "in a pool of its own or serve the adapter on a base outside pools",
        )
    if member.model.credentials is not None:
        return Claim(
            name,
            None,
            "spec.model.credentials: a pool's repository sidecar holds no member's Secret; "
            "pool members must be fetchable without credentials (or serve it on its own)",
        )
    if spec.resources.gpu:
        if member.serving.resources.gpu_memory is None:
            return Claim(
                name,
                None,
                f"spec.serving.resources.gpuMemory: pool {pool} has GPUs; declare the GPU "
                "memory this model needs there",
            )
        return _claim(name, "gpuMemory", member.serving.resources.gpu_memory)
    return _claim(name, "memory", member.serving.resources.memory)


def _claim(name: str, field: str, quantity: str) -> Claim:
    """A quantity the fit cannot count (past 2^63 bytes, stored before the CRD bounded
    it) refuses this member, naming the field; it never fails the pool."""
    try:
        return Claim(name, parse_bytes(quantity))
    except ValueError as err:
        return Claim(name, None, f"spec.serving.resources.{field}: {err}")


def pool_fit(pool: str, spec: SLMPoolSpec, members: Sequence[tuple[str, SLMSpecialistSpec]]) -> Fit:
    """``members`` in joining order (creation time, then name)."""
    capacity, field_path = capacity_of(spec)
    claims = [claim_of(pool, spec, n, s) for n, s in members]
    return fit(pool, capacity, claims, overcommit=spec.residency.overcommit, field_path=field_path)


@dataclass(frozen=True)
class MemberView:
    """One member's residency as the status shows it."""

    name: str
    state: str
    message: str = ""
    bytes: int | None = None
    last_load_seconds: float | None = None
    last_used: str | None = None


def pool_status(
    *,
    name: str,
    namespace: str,
    generation: int | None,
    spec: SLMPoolSpec,
    deployment: Mapping[str, Any] | None,
    fitted: Fit,
    members: Sequence[MemberView],
) -> dict[str, Any]:
    ready, stalled, reason, message = deployment_progress(dict(deployment) if deployment else None)
    dep = (deployment or {}).get("status", {})
    capacity, _ = capacity_of(spec)
    return {
        "observedGeneration": generation,
        "conditions": [
            *ready_set(ready, reason, message, generation, stalled=stalled),
            condition("Fits", fitted.status, fitted.reason, fitted.message, generation),
        ],
        "replicas": dep.get("replicas", 0),
        "readyReplicas": dep.get("readyReplicas", 0),
        "endpoint": pool_endpoint(name, namespace),
        "capacity": format_bytes(capacity),
        "requested": format_bytes(fitted.requested),
        "members": [
            {
                k: v
                for k, v in {
                    "name": m.name,
                    "memory": format_bytes(m.bytes) if m.bytes is not None else None,
                    "state": m.state,
                    "message": m.message[:1024],
                    "lastLoadSeconds": m.last_load_seconds,
                    "lastUsed": m.last_used,
                }.items()
                if v is not None
            }
            for m in sorted(members, key=lambda m: m.name)
        ],
    }


#: Member state -> (ready, stalled, at rest, reason) of the member's Ready condition.
_MEMBER_READY = {
    "Loaded": (True, False, False, "Loaded"),
    "Unloaded": (False, False, True, MEMBER_UNLOADED),
    "Draining": (False, False, False, MEMBER_UNLOADED),
    "Loading": (False, False, False, MEMBER_LOADING),
    "Pending": (False, False, False, MEMBER_LOADING),
    "Refused": (False, True, False, "PoolMemberRefused"),
    "Failed": (False, True, False, "LoadFailed"),
    "PoolNotFound": (False, True, False, "PoolNotFound"),
}


def member_status(
    *,
    name: str,
    namespace: str,
    pool: str,
    generation: int | None,
    view: MemberView,
    ready_replicas: int = 0,
) -> dict[str, Any]:
    """The member SLMSpecialist's status: served at the pool's endpoint as model ``name``."""
    ready, stalled, at_rest, reason = _MEMBER_READY[view.state]
    message = view.message or {
        "Loaded": f"loaded in pool {pool}",
        "Unloaded": f"not loaded in pool {pool}; its next request loads it",
        "Loading": f"loading in pool {pool}",
        "Pending": f"waiting for pool {pool}",
    }.get(view.state, "")
    return {
        "observedGeneration": generation,
        "conditions": ready_set(
            ready, reason, message, generation, stalled=stalled, at_rest=at_rest
        ),
        "replicas": ready_replicas if view.state == "Loaded" else 0,
        "readyReplicas": ready_replicas if view.state == "Loaded" else 0,
        "endpoint": pool_endpoint(pool, namespace),
        "tritonModel": name,
    }
