"""Status of an SLMSpecialist, from its Deployment."""

from __future__ import annotations

from typing import Any

from . import labels as L
from .conditions import ready_set

#: At zero replicas on purpose (min 0, idle): not Ready (nothing can serve), not failing.
SCALED_TO_ZERO = "ScaledToZero"
#: The first replica after zero is starting: requests wait for it (or cascade).
SCALING_FROM_ZERO = "ScalingFromZero"
#: A pool member unloaded by its pool's residency (LRU): its next request loads it.
MEMBER_UNLOADED = "Unloaded"
#: A pool member being laid out or loaded.
MEMBER_LOADING = "Loading"
#: Reasons under which the router holds requests for a replica instead of refusing them.
WAKEABLE = (SCALED_TO_ZERO, SCALING_FROM_ZERO, MEMBER_UNLOADED, MEMBER_LOADING)


def deployment_progress(
    deployment: dict[str, Any] | None, previous_reason: str | None = None
) -> tuple[bool, bool, str, str]:
    """(ready, stalled, reason, message) of a Deployment's rollout.

    Zero replicas is ``ScaledToZero``: not Ready, because Ready means servable and the
    router must never send a request to zero Pods. ``previous_reason`` (the Ready
    reason written last) tells a start from zero, where requests are held for the
    first replica, from a new or broken Deployment with nothing available."""
    if deployment is None:
        return False, False, "DeploymentMissing", "the Triton Deployment does not exist yet"
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    want = spec.get("replicas", 1)
    generation = deployment.get("metadata", {}).get("generation", 0)
    seen = status.get("observedGeneration", 0)
    updated = status.get("updatedReplicas", 0)
    available = status.get("availableReplicas", 0)
    total = status.get("replicas", 0)
    for cond in status.get("conditions", []):
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return False, True, "ProgressDeadlineExceeded", cond.get("message", "")
    if previous_reason in WAKEABLE and want > 0 and available == 0:
        # Until the first replica is available, whatever the rollout's bookkeeping says.
        return False, False, SCALING_FROM_ZERO, f"starting from zero: 0/{want} replicas available"
    if seen < generation:
        return False, False, "RolloutPending", "the Deployment controller has not seen the change"
    if want == 0:
        return False, False, SCALED_TO_ZERO, "scaled to zero replicas; a request starts one"
    if total > updated:
        return False, False, "RolloutInProgress", f"{total - updated} old replicas terminating"
    if updated < want:
        if total == updated and available > 0:
            # Only the count grew (every Pod runs the current template): still servable
            # by the replicas that are up, so an autoscaler's scale-up is not an outage.
            return True, False, "ScalingUp", f"{available}/{want} replicas available"
        return False, False, "RolloutInProgress", f"{updated}/{want} replicas updated"
    if available < want:
        return False, False, "ReplicasUnavailable", f"{available}/{want} replicas available"
    return True, False, "Available", f"{available}/{want} replicas available"


def specialist_status(
    *,
    name: str,
    namespace: str,
    generation: int | None,
    deployment: dict[str, Any] | None,
    error: str | None = None,
    problem: tuple[str, str] | None = None,
    previous_reason: str | None = None,
) -> dict[str, Any]:
    """The whole status (conditions without transition times; see merge_conditions).

    ``problem`` is (reason, message) when the fleet render leaves the specialist out of
    the router configuration (its examples are missing or too large, ...): it is not
    Ready, whatever its Deployment says, until the user fixes it.
    """
    if error:
        ready, stalled, reason, message = False, True, "ReconcileFailed", error
    elif problem:
        ready, stalled, (reason, message) = False, True, problem
    else:
        ready, stalled, reason, message = deployment_progress(deployment, previous_reason)
    dep_status = (deployment or {}).get("status", {})
    at_rest = reason == SCALED_TO_ZERO
    return {
        "observedGeneration": generation,
        "conditions": ready_set(
            ready, reason, message, generation, stalled=stalled, at_rest=at_rest
        ),
        "replicas": dep_status.get("replicas", 0),
        "readyReplicas": dep_status.get("readyReplicas", 0),
        "endpoint": L.grpc_endpoint(name, namespace),
        "tritonModel": name,
        # The scale subresource's labelSelectorPath: HPA and KEDA read the Pods from it.
        "selector": f"{L.SPECIALIST_LABEL}={name}",
    }
