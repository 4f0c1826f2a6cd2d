"""When a specialist cannot take a request now, pure: wait for it, or cascade at once.

Two situations, both decided per policy (RouterPolicy ``spec.capacity``):

* **scaled to zero**: the specialist has no replica the router knows of
  (``scaledToZero`` in the router configuration empties its replica set until discovery
  finds a Pod). ``wait`` holds the request until the autoscaler has started one
  (bounded by ``maxWaitSeconds``; then 503 with Retry-After), ``cascade`` sends it to
  the next tier at once. Either way the demand is
  exported (the waiting gauge, or the no-replica counter) and wakes the specialist.
* **cost-capped and full**: the autoscaler's cost cap binds (``costCapped``) and every
  replica already has ``targetInFlight`` requests in flight from this router. ``queue``
  lets the request line up at the specialist; ``cascade`` sends the overflow on.

A tier with no tier after it never cascades: there is nowhere to go, so it waits.
"""

from __future__ import annotations

from ..api.routerconfig import CapacityConfig, SpecialistConfig

SCALED_TO_ZERO = "scaled_to_zero"
COST_CAPPED = "cost_capped"
#: Seconds a caller is told to wait (Retry-After) when no replica came up in time: a
#: start from zero is under way, and its duration (image pull, model load) is unknown.
NO_REPLICA_RETRY_AFTER_S = 10


def overflow(
    spec: SpecialistConfig,
    capacity: CapacityConfig,
    *,
    replicas: int,
    in_flight: int,
    has_next: bool,
) -> str | None:
    """Why this request skips ``spec`` for the next tier now (an escalation reason), or
    None to call it. ``replicas`` are the ones the router knows now (active), and
    ``in_flight`` this router's requests to it already under way."""
    if not has_next:
        return None
    # The replicas known now, not the flag: the Pods may be up before the configuration
    # says so (and a specialist scaled to zero has none unless discovery found one).
    if replicas == 0 and capacity.when_scaled_to_zero == "cascade":
        return SCALED_TO_ZERO
    if (
        spec.cost_capped
        and capacity.when_cost_capped == "cascade"
        and replicas > 0
        and in_flight >= replicas * spec.target_in_flight
    ):
        return COST_CAPPED
    return None


def wait_seconds(capacity: CapacityConfig) -> float:
    """Longest a request may wait for a replica of a specialist that has none."""
    return float(capacity.max_wait_seconds)
