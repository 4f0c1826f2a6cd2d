"""The autoscaler's pure decision: table tests of every rule, bad input and missing data."""

from __future__ import annotations

import math
import random

import pytest

from slmfleet.api.specialist import SLMSpecialistSpec
from slmfleet.autoscale import decide as D
from slmfleet.autoscale.decide import ScalePolicy, ScalerState, Signals, decide

NOW = 10_000.0


def policy(**kw) -> ScalePolicy:
    base = dict(min_replicas=1, max_replicas=8, target_in_flight=8, latency_p95_ms=400)
    return ScalePolicy(**(base | kw))


def sig(**kw) -> Signals:
    base = dict(window_s=30.0, request_rps=10.0, in_flight=8.0, p95_ms=300.0, mean_ms=200.0)
    return Signals(**(base | kw))


# A state whose metrics have been fresh for an hour, with no recent recommendations.
FRESH = ScalerState(fresh_since=NOW - 3600, last_active=NOW - 1)


def run(signals, current, *, ready=None, pol=None, state=FRESH, now=NOW):
    return decide(
        signals,
        current=current,
        ready=current if ready is None else ready,
        policy=pol or policy(),
        state=state,
        now=now,
    )


# fmt: off
CASES = [
    # id, signals, current, ready, policy overrides, state, expected replicas, reason
    ("within target", sig(in_flight=16), 2, None, {}, FRESH, 2, D.WITHIN),
    ("noise within tolerance", sig(in_flight=17), 2, None, {}, FRESH, 2, D.WITHIN),
    ("in-flight above target", sig(in_flight=40), 2, None, {}, FRESH, 5, D.IN_FLIGHT),
    ("up at most x2 or +4", sig(in_flight=200), 1, None, {}, FRESH, 5, D.IN_FLIGHT),
    ("up at most x2 (larger)", sig(in_flight=400), 6, None, {"max_replicas": 50}, FRESH, 12,
     D.IN_FLIGHT),
    # The router's in-flight gauge includes the requests it holds for a replica: waiting
    # alone counts where in-flight is lower (a gauge averaged differently), never twice.
    ("waiting requests count", sig(in_flight=8, waiting=24), 1, None, {}, FRESH, 3, D.IN_FLIGHT),
    ("waiting is within in-flight", sig(in_flight=32, waiting=24), 1, None, {}, FRESH, 4,
     D.IN_FLIGHT),
    ("rate x service time leads in-flight", sig(in_flight=4, request_rps=100, mean_ms=200), 1,
     None, {}, FRESH, 3, D.IN_FLIGHT),
    ("max reached", sig(in_flight=200), 8, None, {}, FRESH, 8, D.MAX_REACHED),
    ("latency above SLO with queueing", sig(in_flight=15, p95_ms=900, queue_ms=200), 2, None, {},
     FRESH, 4, D.LATENCY),
    ("latency above SLO, small overshoot: +1", sig(in_flight=16, p95_ms=480, queue_ms=100), 4,
     None, {}, FRESH, 5, D.LATENCY),
    ("latency without queueing is not capacity", sig(in_flight=15, p95_ms=900, queue_ms=5), 2,
     None, {}, FRESH, 2, D.WITHIN),
    ("latency, no Triton data, requests overlap", sig(in_flight=15, p95_ms=900), 2, None, {},
     FRESH, 4, D.LATENCY),
    ("latency, no Triton data, one request per replica: no scale-up",
     sig(in_flight=1.5, p95_ms=900), 2, None, {}, FRESH, 1, D.BELOW),
    ("no scale-down before a window of fresh metrics", sig(in_flight=8), 4, None, {},
     ScalerState((), NOW - 1, NOW - 100), 4, D.STABILIZING),
    ("latency rule waits for starting replicas", sig(in_flight=30, p95_ms=2000, queue_ms=900),
     4, 2, {}, FRESH, 4, D.WITHIN),
    ("queue building", sig(in_flight=16, p95_ms=390, queue_ms=250), 2, None, {}, FRESH, 3,
     D.QUEUE),
    ("escalations pre-scale a fallback tier",
     sig(in_flight=2, request_rps=2, escalation_rps=20, mean_ms=1000), 1, None, {}, FRESH, 3,
     D.ESCALATION),
    ("scale down after the window", sig(in_flight=8), 4, None, {},
     ScalerState(((NOW - 400, 4),), NOW - 1, NOW - 3600), 1, D.BELOW),
    ("scale down held by the window", sig(in_flight=8), 4, None, {},
     ScalerState(((NOW - 100, 4),), NOW - 1, NOW - 3600), 4, D.STABILIZING),
    ("scale down to the window's highest need", sig(in_flight=8), 5, None, {},
     ScalerState(((NOW - 200, 3), (NOW - 100, 2)), NOW - 1, NOW - 3600), 3, D.BELOW),
    ("min raised above current", sig(in_flight=1), 1, None, {"min_replicas": 3}, FRESH, 3,
     D.BOUNDS),
    ("max lowered below current", sig(in_flight=40), 6, None, {"max_replicas": 4}, FRESH, 4,
     D.MAX_REACHED),
    ("max lowered, low load", sig(in_flight=1), 6, None, {"max_replicas": 4},
     ScalerState(((NOW - 10, 6),), NOW - 1, NOW - 3600), 4, D.BOUNDS),
    ("cost cap binds", sig(in_flight=48), 2, None,
     {"replica_hour_usd": 3.0, "max_cost_usd_per_hour": 10.0}, FRESH, 3, D.CAPPED),
    ("cost cap lowered below current", sig(in_flight=48), 6, None,
     {"replica_hour_usd": 3.0, "max_cost_usd_per_hour": 10.0}, FRESH, 3, D.CAPPED),
    ("cost cap not binding", sig(in_flight=16), 2, None,
     {"replica_hour_usd": 3.0, "max_cost_usd_per_hour": 10.0}, FRESH, 2, D.WITHIN),
    # Zero and back.
    ("from zero: a waiting request", sig(request_rps=0, in_flight=0, waiting=1, p95_ms=None,
     mean_ms=None), 0, 0, {"min_replicas": 0}, FRESH, 1, D.FROM_ZERO),
    ("from zero: requests found no replica", sig(request_rps=0, in_flight=0, unavailable_rps=50,
     p95_ms=None, mean_ms=None), 0, 0, {"min_replicas": 0}, FRESH, 3, D.FROM_ZERO),
    ("from zero: escalations", sig(request_rps=0, in_flight=0, escalation_rps=0.2, p95_ms=None,
     mean_ms=None), 0, 0, {"min_replicas": 0}, FRESH, 1, D.FROM_ZERO),
    ("idle long enough: zero", sig(request_rps=0, in_flight=0, p95_ms=None, mean_ms=None), 1,
     None, {"min_replicas": 0}, ScalerState((), NOW - 700, NOW - 3600), 0, D.IDLE),
    ("idle, not long enough: one stays", sig(request_rps=0, in_flight=0, p95_ms=None,
     mean_ms=None), 1, None, {"min_replicas": 0}, ScalerState((), NOW - 100, NOW - 3600), 1,
     D.WITHIN),
    ("idle, metrics back only recently: one stays", sig(request_rps=0, in_flight=0,
     p95_ms=None, mean_ms=None), 1, None, {"min_replicas": 0}, ScalerState((), None, NOW - 60),
     1, D.WITHIN),
    ("idle, never seen active, fresh for long: zero", sig(request_rps=0, in_flight=0,
     p95_ms=None, mean_ms=None), 1, None, {"min_replicas": 0}, ScalerState((), None, NOW - 900),
     0, D.IDLE),
    ("idle at min 1 stays at 1", sig(request_rps=0, in_flight=0, p95_ms=None, mean_ms=None), 1,
     None, {}, ScalerState((), NOW - 7200, NOW - 7200), 1, D.WITHIN),
    ("idle with min 0 stays at zero", sig(request_rps=0, in_flight=0, p95_ms=None,
     mean_ms=None), 0, 0, {"min_replicas": 0}, ScalerState((), None, NOW - 60), 0, D.WITHIN),
    # Missing or malformed data: hold.
    ("metrics unreachable: hold", None, 3, None, {}, FRESH, 3, D.MISSING),
    ("metrics unreachable at min 0: never zero", None, 1, None, {"min_replicas": 0},
     ScalerState((), NOW - 7200, NOW - 7200), 1, D.MISSING),
    ("metrics unreachable, max lowered: bounds still apply", None, 6, None, {"max_replicas": 4},
     FRESH, 4, D.MISSING),
    ("NaN in the metrics: hold", sig(in_flight=math.nan), 3, None, {}, FRESH, 3, D.MISSING),
    ("negative rate (a broken exporter): hold", sig(request_rps=-5), 3, None, {}, FRESH, 3,
     D.MISSING),
]
# fmt: on


@pytest.mark.parametrize(
    ("signals", "current", "ready", "overrides", "state", "replicas", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decide(signals, current, ready, overrides, state, replicas, reason):
    got = run(signals, current, ready=ready, pol=policy(**overrides), state=state)
    assert (got.replicas, got.reason) == (replicas, reason), got.message
    assert got.reason in D.REASONS and got.message


def test_missing_data_restarts_the_idle_clock():
    """After an outage of the metrics, zero needs a whole idle period of fresh data."""
    pol = policy(min_replicas=0, scale_to_zero_after_s=600)
    idle = sig(request_rps=0, in_flight=0, p95_ms=None, mean_ms=None)
    state = ScalerState((), NOW - 3000, NOW - 3600)
    held = run(None, 1, pol=pol, state=state)
    assert held.replicas == 1 and held.state.fresh_since is None
    back = run(idle, 1, pol=pol, state=held.state, now=NOW + 10)
    assert back.replicas == 1  # idle for ages, but metrics only just came back
    later = run(idle, 1, pol=pol, state=back.state, now=NOW + 10 + 600)
    assert (later.replicas, later.reason) == (0, D.IDLE)


def test_state_keeps_only_the_stabilisation_window():
    pol = policy(scale_down_stabilization_s=60)
    state = FRESH
    for t in range(0, 300, 15):
        state = run(sig(), 1, pol=pol, state=state, now=NOW + t).state
    times = [t for t, _ in state.recommendations]
    assert min(times) >= NOW + 285 - 60 and len(times) == 5


@pytest.mark.parametrize(
    "bad",
    [
        {"min_replicas": 3, "max_replicas": 2},
        {"max_replicas": 0, "min_replicas": 0},
        {"target_in_flight": 0},
        {"latency_p95_ms": 0},
        {"replica_hour_usd": 2.0, "max_cost_usd_per_hour": 1.0},  # below one replica
        {"replica_hour_usd": 2.0, "max_cost_usd_per_hour": 5.0, "min_replicas": 3},
        {"replica_hour_usd": 0.0, "max_cost_usd_per_hour": 5.0},  # a cap that never binds
    ],
)
def test_bad_policy_is_refused_with_a_message(bad):
    with pytest.raises(ValueError, match=r"\w"):
        policy(**bad)


def test_policy_from_spec():
    spec = SLMSpecialistSpec.model_validate(
        {
            "model": {"uri": "hf://o/m", "backend": "vllm"},
            "serving": {
                "replicas": {"min": 0, "max": 6},
                "autoscaling": {
                    "scaleDownStabilizationSeconds": 120,
                    "scaleToZeroAfterSeconds": 900,
                    "maxCostUsdPerHour": 5.0,
                },
            },
            "cost": {"replicaHourUsd": 1.2},
            "slo": {"latencyP95Ms": 250, "targetInFlight": 4},
        }
    )
    pol = ScalePolicy.from_spec(spec)
    assert (pol.min_replicas, pol.max_replicas, pol.target_in_flight) == (0, 6, 4.0)
    assert (pol.scale_down_stabilization_s, pol.scale_to_zero_after_s) == (120.0, 900.0)
    assert pol.cost_cap_replicas == 4  # 5.0 / 1.2


def test_no_up_down_up_within_a_window_on_random_load():
    """Whatever the load does, a scale-down never follows a scale-up within the window."""
    rng = random.Random(7)
    window = 120.0
    pol = policy(max_replicas=20, scale_down_stabilization_s=window)
    state, current, changes = ScalerState(), 2, []
    for step in range(2000):
        now = NOW + step * 5
        load = max(0.0, 40 + 30 * math.sin(step / 40) + rng.gauss(0, 15))
        d = run(sig(in_flight=load, request_rps=load * 5), current, pol=pol, state=state, now=now)
        if d.replicas != current:
            changes.append((now, d.replicas - current))
        state, current = d.state, d.replicas
    ups = [t for t, delta in changes if delta > 0]
    downs = [t for t, delta in changes if delta < 0]
    assert ups and downs, "the load should move replicas both ways"
    for t_down in downs:
        assert not any(t_down - window <= t_up < t_down for t_up in ups), t_down


@pytest.mark.parametrize(
    ("cap_usd", "replica_usd", "max_replicas", "want"),
    [
        (5.0, 1.2, 6, 4),  # the cap binds: 5.0 / 1.2
        (5.0, 1.0, 6, 5),  # exact multiple
        (100.0, 1.0, 6, 6),  # the cap pays for more than max: max
        (1e6, 1e-305, 6, 6),  # quotient past float range (inf): max, not OverflowError
        (1.7e308, 1e-10, 6, 6),  # inf again, from the other side
        (1e6, 5e-324, 1000, 1000),  # smallest subnormal price
    ],
)
def test_cost_cap_replicas_is_bounded_by_max_and_never_overflows(
    cap_usd, replica_usd, max_replicas, want
):
    pol = policy(
        max_replicas=max_replicas, replica_hour_usd=replica_usd, max_cost_usd_per_hour=cap_usd
    )
    assert pol.cost_cap_replicas == want
    # decide() at max under heavy load: the cap (or max) is what it keeps
    assert run(sig(in_flight=1e9), max_replicas, pol=pol).replicas == want
