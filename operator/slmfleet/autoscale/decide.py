"""The autoscaler's decision, pure: signals + current replicas + bounds + cost cap ->
desired replicas with a reason.

Everything that depends on time or history comes in as arguments (``now``, the
``ScalerState`` the previous call returned), so a day of traffic replays in seconds
(benchmarks/autoscale_economics.py) and every rule is a table test
(tests/unit/test_autoscale_decide.py). The rule, in the order it is applied:

1. **Need.** The concurrency the load demands is the largest of: the in-flight requests
   seen at the router (those waiting for a replica included); the arrival rate times the mean
   service time (Little's law: it leads in-flight when requests pile up); and the rate of
   escalations into this specialist from the cascade tiers in front of it times its
   service time (escalations are counted when they happen, before this specialist's own
   latency shows them: a fallback tier is sized ahead of its queue). Need is that
   concurrency over ``slo.targetInFlight``, rounded up, unless it is within ``TOLERANCE``
   of what the current replicas give (no change for noise). When the replicas that exist
   are all ready, p95 latency above the SLO (with queueing, or with requests overlapping on
   a replica, so more replicas would help) or Triton's queue time above half the SLO adds
   replicas in proportion to the overshoot; while new replicas are still starting these
   relative rules wait, so a slow cold start does not snowball into max replicas.
2. **Scale up fast**: at once, at most to ``max(2 x current, current + 4)`` per decision.
3. **Scale down stabilised**: only to the highest need of the trailing
   ``scaleDownStabilizationSeconds``. After a scale-up no scale-down can happen within a
   window, so replicas never go up-down-up within one.
4. **Zero**: with ``min`` 0, any demand keeps at least one replica; zero only after
   ``scaleToZeroAfterSeconds`` without any demand *and* with metrics available throughout;
   from zero, any demand (a request waiting, routed, or escalated) asks for replicas.
5. **Bounds** ``[min, max]``, then the **cost cap** (replicas x price <= cap: CostCapped).
6. **Missing metrics**: hold the current replicas (bounds and cap still apply), say so, and
   restart the idle clock: missing data never scales to zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from ..api.specialist import SLMSpecialistSpec

#: Relative change of the load that is ignored (as Kubernetes' HPA does, 10%).
TOLERANCE = 0.1
#: Latency rule: p95 above this multiple of the SLO adds replicas.
LATENCY_TRIGGER = 1.1
#: Latency rule: Triton queueing above this fraction of the SLO means replicas would help.
QUEUE_EVIDENCE = 0.1
#: Queue rule: Triton's mean queue time above this fraction of the SLO adds a replica.
QUEUE_LIMIT = 0.5
#: Scale-up bound per decision: to max(FACTOR x current, current + STEP).
MAX_UP_FACTOR, MAX_UP_STEP = 2, 4

# Reasons (the Scaling condition's reason and the Event's reason).
IN_FLIGHT = "InFlightAboveTarget"
LATENCY = "LatencyAboveSLO"
QUEUE = "QueueBuilding"
ESCALATION = "EscalationDemand"
FROM_ZERO = "ScaleFromZero"
BELOW = "BelowTarget"
WITHIN = "WithinTarget"
STABILIZING = "StabilizingScaleDown"
IDLE = "ScaledToZero"
MAX_REACHED = "MaxReplicasReached"
BOUNDS = "OutsideBounds"
CAPPED = "CostCapped"
MISSING = "MetricsUnavailable"
REASONS = (IN_FLIGHT, LATENCY, QUEUE, ESCALATION, FROM_ZERO, BELOW, WITHIN, STABILIZING,
           IDLE, MAX_REACHED, BOUNDS, CAPPED, MISSING)  # fmt: skip


@dataclass(frozen=True)
class Signals:
    """What the metrics say about one specialist over the trailing window."""

    window_s: float
    """Span the rates and averages cover."""
    request_rps: float = 0.0
    """Requests this specialist completed per second (router upstream calls)."""
    in_flight: float = 0.0
    """Mean concurrent requests to it over the window, all replicas together, those the
    router holds for a replica included."""
    p95_ms: float | None = None
    """p95 of its upstream latency; None when no request completed in the window."""
    mean_ms: float | None = None
    """Mean upstream latency (the service time); None when no request completed."""
    queue_ms: float | None = None
    """Mean time requests waited in Triton's queue; None when Triton was not scraped."""
    waiting: float = 0.0
    """Requests the router holds for lack of a ready replica (scale from zero)."""
    unavailable_rps: float = 0.0
    """Requests per second that found no replica here (cascaded on, or gave up waiting)."""
    escalation_rps: float = 0.0
    """Requests per second escalated into this specialist's cascade tiers."""

    def finite(self) -> bool:
        """False when a value is NaN, infinite or negative (a broken exporter): such a
        window is treated as missing, never acted on."""
        values = (self.window_s, self.request_rps, self.in_flight, self.waiting,
                  self.unavailable_rps, self.escalation_rps, self.p95_ms, self.mean_ms,
                  self.queue_ms)  # fmt: skip
        return all(v is None or (math.isfinite(v) and v >= 0) for v in values)

    @property
    def active(self) -> bool:
        """Any demand at all in the window."""
        return (
            self.request_rps > 0
            or self.in_flight > 0.01
            or self.waiting > 0
            or self.unavailable_rps > 0
            or self.escalation_rps > 0
        )


@dataclass(frozen=True)
class ScalePolicy:
    """The bounds and targets of one specialist, from its spec."""

    min_replicas: int
    max_replicas: int
    target_in_flight: float
    latency_p95_ms: float
    scale_down_stabilization_s: float = 300.0
    scale_to_zero_after_s: float = 600.0
    replica_hour_usd: float = 0.0
    max_cost_usd_per_hour: float | None = None

    def __post_init__(self) -> None:
        # The CRD refuses these; a policy built by hand gets the same answer.
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(f"need 0 <= min <= max and max >= 1: {self}")
        if self.target_in_flight <= 0 or self.latency_p95_ms <= 0:
            raise ValueError(f"targetInFlight and latencyP95Ms must be > 0: {self}")
        cap = self.max_cost_usd_per_hour
        if cap is not None and cap < self.replica_hour_usd * max(1, self.min_replicas):
            raise ValueError(
                f"maxCostUsdPerHour {cap:g} does not pay for max(1, min) replicas at "
                f"{self.replica_hour_usd:g} USD/h"
            )
        if cap is not None and self.replica_hour_usd <= 0:
            raise ValueError("maxCostUsdPerHour needs cost.replicaHourUsd > 0")

    @classmethod
    def from_spec(cls, spec: SLMSpecialistSpec) -> ScalePolicy:
        auto = spec.serving.autoscaling
        return cls(
            min_replicas=spec.serving.replicas.min,
            max_replicas=spec.serving.replicas.max,
            target_in_flight=float(spec.slo.target_in_flight),
            latency_p95_ms=float(spec.slo.latency_p95_ms),
            scale_down_stabilization_s=float(auto.scale_down_stabilization_seconds),
            scale_to_zero_after_s=float(auto.scale_to_zero_after_seconds),
            replica_hour_usd=spec.cost.replica_hour_usd,
            max_cost_usd_per_hour=auto.max_cost_usd_per_hour,
        )

    @property
    def cost_cap_replicas(self) -> int | None:
        """Most replicas the cost cap pays for (None: no cap); at least max(1, min), at
        most max. A quotient past max (or past float range: a 1e-305 USD/h replica under
        a 1e6 USD/h cap) means the cap does not bind, so it is max, never an overflow
        that would fail every tick of the loop."""
        if self.max_cost_usd_per_hour is None:
            return None
        quotient = self.max_cost_usd_per_hour / self.replica_hour_usd
        if not math.isfinite(quotient) or quotient >= self.max_replicas:
            return self.max_replicas
        return math.floor(quotient + 1e-9)


@dataclass(frozen=True)
class ScalerState:
    """What one decision hands to the next (kept in memory by the loop)."""

    recommendations: tuple[tuple[float, int], ...] = ()
    """(time, need) over the stabilisation window, oldest first."""
    last_active: float | None = None
    """Last time any demand was seen."""
    fresh_since: float | None = None
    """Start of the current unbroken run of available metrics."""


@dataclass(frozen=True)
class Decision:
    replicas: int
    """Desired replicas."""
    reason: str
    """One of REASONS."""
    message: str
    """What the reason means here, with the numbers."""
    need: int | None
    """Replicas the load needs before stabilisation, bounds and cap (None: no metrics)."""
    state: ScalerState = field(default_factory=ScalerState)
    """Pass to the next call."""


def _ceil(x: float) -> int:
    return math.ceil(x - 1e-9)


def _need(s: Signals, current: int, ready: int, p: ScalePolicy) -> tuple[int, str, str]:
    """Replicas the load needs, the rule that says so, and the numbers behind it."""
    service_s = (s.mean_ms if s.mean_ms else p.latency_p95_ms) / 1000.0
    demands = {
        # The router's in-flight gauge (and Little's law on its latency sum) already
        # counts the requests waiting for a replica; waiting alone matters without it.
        IN_FLIGHT: max(s.in_flight, s.waiting),
        # Little's law: arrivals x service time, counting requests that found no replica.
        "rate": (s.request_rps + s.unavailable_rps) * service_s,
        ESCALATION: s.escalation_rps * service_s,
    }
    rule = max(demands, key=lambda k: demands[k])
    demand = demands[rule]
    rule = IN_FLIGHT if rule == "rate" else rule
    target = p.target_in_flight
    if current > 0 and abs(demand / (current * target) - 1) <= TOLERANCE:
        need = current
    else:
        need = _ceil(demand / target)
    why = f"demand {demand:.1f} in flight for target {target:g}/replica"
    if current == 0 and s.active:
        return max(1, need), FROM_ZERO, f"{why}; no replica to serve it"
    # Relative rules only when every replica asked for is up: extra replicas still
    # starting will take load that the latency and queue seen now do not show yet.
    if current > 0 and ready >= current:
        slo = p.latency_p95_ms
        queue = s.queue_ms
        contended = queue >= QUEUE_EVIDENCE * slo if queue is not None else demand > current
        if s.p95_ms is not None and s.p95_ms > slo * LATENCY_TRIGGER and contended:
            grow = current + max(1, _ceil(current * min(1.0, s.p95_ms / slo - 1)))
            if grow > need:
                return grow, LATENCY, f"p95 {s.p95_ms:.0f} ms above SLO {slo:g} ms; {why}"
        if queue is not None and queue > QUEUE_LIMIT * slo and current + 1 > need:
            return current + 1, QUEUE, f"Triton queue {queue:.0f} ms > {QUEUE_LIMIT:g} x SLO"
    return need, rule, why


def decide(
    signals: Signals | None,
    *,
    current: int,
    ready: int,
    policy: ScalePolicy,
    state: ScalerState,
    now: float,
    missing: str = "no metrics in the window",
) -> Decision:
    """Desired replicas for one specialist now. ``current`` is spec.replicas (the scale
    subresource), ``ready`` the Deployment's ready replicas."""
    p = policy
    lo, hi = p.min_replicas, p.max_replicas
    cap = p.cost_cap_replicas

    def finish(replicas: int, reason: str, message: str, need: int | None, st: ScalerState):
        """Bounds, then the cost cap; the reason names what limited the count."""
        keep = reason == MISSING  # holding: say why, whatever else applies
        if replicas > hi:
            why = MAX_REACHED if need is not None and need > hi else BOUNDS
            replicas, reason, message = hi, reason if keep else why, f"{message}; max {hi}"
        if replicas < lo:
            replicas, reason, message = lo, reason if keep else BOUNDS, f"{message}; min {lo}"
        if cap is not None and replicas > cap:
            replicas, reason = cap, reason if keep else CAPPED
            message = f"{message}; cost cap {p.max_cost_usd_per_hour:g} USD/h pays for {cap}"
        return Decision(replicas, reason, message, need, st)

    if signals is not None and not signals.finite():
        signals, missing = None, f"malformed metrics {signals}"
    if signals is None:
        held = replace(state, fresh_since=None, last_active=None)
        return finish(current, MISSING, f"holding {current} replicas: {missing}", None, held)

    fresh_since = state.fresh_since if state.fresh_since is not None else now
    last_active = now if signals.active else state.last_active
    need, rule, why = _need(signals, current, ready, p)

    # Zero: only after a whole idle period with metrics all along.
    if not signals.active:
        idle_for = now - max(t for t in (last_active, fresh_since) if t is not None)
        if lo == 0 and idle_for >= p.scale_to_zero_after_s:
            st = ScalerState((), last_active, fresh_since)
            return finish(0, IDLE, f"no demand for {idle_for:.0f}s", 0, st)
        if lo == 0 and current > 0:
            need = max(need, 1)  # idle, but not for long enough: keep one warm

    if need < lo:
        need, rule, why = lo, BOUNDS, f"{why}; min {lo}"

    window = p.scale_down_stabilization_s
    recs = (*((t, n) for t, n in state.recommendations if t >= now - window), (now, need))
    st = ScalerState(recs, last_active, fresh_since)

    if need > current:
        up = min(need, max(current * MAX_UP_FACTOR, current + MAX_UP_STEP))
        return finish(up, rule, f"{why} -> {need}", need, st)
    if need == current:
        return finish(current, WITHIN, why, need, st)
    # Scale down only as low as the highest need of the stabilisation window, and not
    # before a whole window of fresh metrics (after a restart or an outage the history is
    # unknown); bounds and the cap (lowered below current by an edit) apply at once.
    floor = max(n for _, n in recs) if now - fresh_since >= window else current
    target = max(need, min(current, floor))
    if target < current:
        return finish(target, BELOW, f"{why} -> {target}", need, st)
    message = f"{why}; needs {need}, holding {current} for the {window:g}s scale-down window"
    return finish(current, STABILIZING, message, need, st)
