"""Conditions and status computations."""

import pytest

from slmfleet.render.conditions import (
    MAX_MESSAGE,
    condition,
    merge_conditions,
    ready_set,
    stalled_news,
    status_changed,
)
from slmfleet.render.specialist_status import deployment_progress, specialist_status

ROLLOUT = "RolloutInProgress"


def deployment(replicas=1, generation=2, observed=2, updated=1, available=1, total=1, conds=()):
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "readyReplicas": available,
            "replicas": total,
            "conditions": list(conds),
        },
    }


@pytest.mark.parametrize(
    ("dep", "ready", "stalled", "reason"),
    [
        (None, False, False, "DeploymentMissing"),
        (deployment(observed=1), False, False, "RolloutPending"),
        (deployment(updated=0, available=0, total=0), False, False, "RolloutInProgress"),
        (deployment(total=2), False, False, "RolloutInProgress"),
        (deployment(available=0), False, False, "ReplicasUnavailable"),
        # Scaled from 2 to 3, same template: the two running replicas keep serving.
        (deployment(replicas=3, updated=2, available=2, total=2), True, False, "ScalingUp"),
        # ... but a rollout with old Pods still around is not "scaling up".
        (deployment(replicas=3, updated=2, available=3, total=3), False, False, ROLLOUT),
        # Scaled up from zero: nothing serves yet.
        (deployment(replicas=1, updated=0, available=0, total=0), False, False, ROLLOUT),
        (deployment(), True, False, "Available"),
        # Zero replicas: nothing can serve, so not Ready (the router holds or cascades).
        (deployment(replicas=0, updated=0, available=0, total=0), False, False, "ScaledToZero"),
        (
            deployment(conds=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]),
            False,
            True,
            "ProgressDeadlineExceeded",
        ),
    ],
)
def test_deployment_progress(dep, ready, stalled, reason):
    got = deployment_progress(dep)
    assert got[:3] == (ready, stalled, reason)


ZERO = deployment(replicas=0, updated=0, available=0, total=0)


@pytest.mark.parametrize(
    ("dep", "previous", "ready", "reason"),
    [
        # From zero: whatever the rollout bookkeeping says, until a replica is available.
        (deployment(replicas=1, updated=0, available=0, total=0), "ScaledToZero", False,
         "ScalingFromZero"),
        (deployment(replicas=1, observed=1, updated=0, available=0, total=0), "ScaledToZero",
         False, "ScalingFromZero"),
        (deployment(replicas=1, updated=1, available=0, total=1), "ScalingFromZero", False,
         "ScalingFromZero"),
        (deployment(replicas=2, updated=1, available=1, total=1), "ScalingFromZero", True,
         "ScalingUp"),
        (deployment(), "ScalingFromZero", True, "Available"),
        # Not from zero: a new or broken Deployment with nothing available is not held for.
        (deployment(available=0), "Available", False, "ReplicasUnavailable"),
        (deployment(available=0), None, False, "ReplicasUnavailable"),
        (ZERO, "ScalingFromZero", False, "ScaledToZero"),
        (
            deployment(available=0, conds=[{"type": "Progressing",
                                            "reason": "ProgressDeadlineExceeded"}]),
            "ScalingFromZero", False, "ProgressDeadlineExceeded",
        ),
    ],
)  # fmt: skip
def test_deployment_progress_from_zero(dep, previous, ready, reason):
    assert deployment_progress(dep, previous)[0] == ready
    assert deployment_progress(dep, previous)[2] == reason


def test_scaled_to_zero_is_at_rest_not_ready_not_reconciling():
    """kubectl wait --for=condition=Ready waits (nothing serves); kstatus reads neither
    Reconciling nor Stalled as Current (healthy, at rest)."""
    status = specialist_status(name="a", namespace="ns", generation=2, deployment=ZERO)
    conds = by_type(status["conditions"])
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "ScaledToZero")
    assert conds["Reconciling"]["status"] == "False"
    assert conds["Stalled"]["status"] == "False"
    waking = specialist_status(
        name="a", namespace="ns", generation=3,
        deployment=deployment(replicas=1, updated=1, available=0, total=1),
        previous_reason="ScaledToZero",
    )  # fmt: skip
    conds = by_type(waking["conditions"])
    assert (conds["Ready"]["status"], conds["Ready"]["reason"]) == ("False", "ScalingFromZero")
    assert conds["Reconciling"]["status"] == "True"


def by_type(conditions):
    return {c["type"]: c for c in conditions}


def test_specialist_status_ready():
    status = specialist_status(name="a", namespace="ns", generation=3, deployment=deployment())
    conds = by_type(status["conditions"])
    assert conds["Ready"]["status"] == "True"
    assert conds["Reconciling"]["status"] == "False"
    assert conds["Stalled"]["status"] == "False"
    assert all(c["observedGeneration"] == 3 for c in conds.values())
    assert status["observedGeneration"] == 3
    assert status["endpoint"] == "slm-a.ns.svc:8001"
    assert status["readyReplicas"] == 1
    assert status["selector"] == "slmfleet.io/specialist=a"  # the scale subresource's


def test_specialist_status_error_is_stalled_not_reconciling():
    status = specialist_status(
        name="a", namespace="ns", generation=1, deployment=deployment(), error="boom"
    )
    conds = by_type(status["conditions"])
    assert conds["Ready"]["status"] == "False"
    assert conds["Stalled"]["status"] == "True"
    assert conds["Stalled"]["message"] == "boom"
    assert conds["Reconciling"]["status"] == "False"


def test_merge_keeps_transition_time_when_status_unchanged():
    old = merge_conditions([], ready_set(False, "Pending", "", 1), now="T1")
    same = merge_conditions(old, ready_set(False, "StillPending", "x", 1), now="T2")
    assert by_type(same)["Ready"]["lastTransitionTime"] == "T1"
    flipped = merge_conditions(same, ready_set(True, "Available", "", 1), now="T3")
    assert by_type(flipped)["Ready"]["lastTransitionTime"] == "T3"
    assert by_type(flipped)["Stalled"]["lastTransitionTime"] == "T1"


def test_status_changed_ignores_transition_times_only():
    desired = {"observedGeneration": 1, "conditions": ready_set(True, "Available", "", 1)}
    current = {**desired, "conditions": merge_conditions([], desired["conditions"], now="T")}
    assert not status_changed(current, desired)
    assert status_changed(current, {**desired, "observedGeneration": 2})
    assert status_changed(None, desired)
    assert status_changed(current, {**desired, "conditions": ready_set(False, "X", "", 1)})


def test_conditions_of_other_writers_survive_a_write_and_do_not_count_as_a_change():
    """The reconciler owns Ready/Reconciling/Stalled; another loop (budget status,
    autoscaler) owns its own types on the same object. A write by one keeps the other's
    conditions, and the other's conditions alone never make a write look necessary."""
    scaling = {"type": "Scaling", "status": "True", "reason": "InFlightAboveTarget",
               "message": "", "lastTransitionTime": "T0"}  # fmt: skip
    current_conds = [*merge_conditions([], ready_set(True, "Available", "", 1), now="T"), scaling]
    desired = {"observedGeneration": 1, "conditions": ready_set(True, "Available", "", 1)}
    current = {"observedGeneration": 1, "conditions": current_conds}
    assert not status_changed(current, desired)
    merged = merge_conditions(current_conds, ready_set(False, "Degraded", "x", 1), now="T2")
    assert [c["type"] for c in merged] == ["Ready", "Reconciling", "Stalled", "Scaling"]
    assert merged[-1] == scaling
    assert merged[0]["status"] == "False" and merged[0]["lastTransitionTime"] == "T2"
    assert status_changed(current, {**desired, "conditions": ready_set(False, "X", "", 1)})
    # A writer's new type is appended, the others keep their place.
    extra = merge_conditions(merged, [{"type": "Exceeded", "status": "False", "reason": "Ok"}])
    assert [c["type"] for c in extra][-2:] == ["Scaling", "Exceeded"]


STALLED_NEWS = [
    # (previous conditions, desired conditions, the Warning Event's (reason, message))
    (None, ready_set(False, "NoTargets", "none", 1, stalled=True), ("NoTargets", "none")),
    (ready_set(True, "Ready", "", 1), ready_set(False, "NoTargets", "none", 2, stalled=True),
     ("NoTargets", "none")),
    # Still Stalled for the same reason (a loop's next tick, a new message): no news.
    (ready_set(False, "NoTargets", "a", 1, stalled=True),
     ready_set(False, "NoTargets", "b", 1, stalled=True), None),
    # Stalled for another reason: news.
    (ready_set(False, "NoTargets", "a", 1, stalled=True),
     ready_set(False, "SecretNotFound", "llm", 1, stalled=True), ("SecretNotFound", "llm")),
    # Not Stalled: recovering, progressing or at rest is no Warning.
    (ready_set(False, "NoTargets", "a", 1, stalled=True), ready_set(True, "Ready", "", 1), None),
    (None, ready_set(False, "Progressing", "", 1), None),
    (None, ready_set(False, "Unloaded", "", 1, at_rest=True), None),
    (None, [condition("Exceeded", True, "Limit")], None),
]  # fmt: skip


@pytest.mark.parametrize(("previous", "desired", "news"), STALLED_NEWS)
def test_stalled_news_once_per_transition(previous, desired, news):
    assert stalled_news(previous, desired) == news


@pytest.mark.parametrize(
    ("length", "cut"),
    [(0, False), (4096, False), (4097, True), (54_022, True), (1_000_000, True)],
)
def test_condition_messages_are_capped_saying_how_much(length: int, cut: bool) -> None:
    message = "m" * length
    written = condition("Ready", False, "TargetsNotFound", message)["message"]
    assert len(written) <= MAX_MESSAGE < 32_768  # the CRDs' bound
    if cut:
        assert written.startswith("m" * 1000)
        assert written.endswith(f"... ({length - (MAX_MESSAGE - 40)} more characters)")
    else:
        assert written == message
