"""What the autoscaler writes: status.observed, the Scaling condition, Events, claimants."""

from __future__ import annotations

import pytest

from slmfleet.autoscale.decide import Signals
from slmfleet.autoscale.record import (
    claimants,
    event_body,
    observed,
    scaling_condition,
    sig2,
)


@pytest.mark.parametrize(
    ("x", "expected"),
    [(None, None), (0.0, 0.0), (412.3, 410.0), (0.01234, 0.012), (1234567.0, 1200000.0)],
)
def test_two_significant_digits(x, expected):
    assert sig2(x) == expected


def test_noise_does_not_change_observed():
    a = Signals(window_s=30, request_rps=10.04, in_flight=8.12, p95_ms=412.3, mean_ms=200)
    b = Signals(window_s=30, request_rps=10.01, in_flight=8.14, p95_ms=409.9, mean_ms=201)
    assert observed(a, 2, 1.5, "T") == observed(b, 2, 1.5, "T")
    assert observed(a, 2, 1.5, "T") == {
        "latencyP95Ms": 410.0,
        "throughputRps": 10.0,
        "costUsdPerHour": 3.0,
        "inFlight": 8.1,
        "inFlightPerReplica": 4.1,
        "escalationRps": 0.0,
        "windowSeconds": 30,
        "time": "T",
    }  # queueMs unknown: left out


def test_observed_at_zero_replicas_has_no_per_replica_value():
    got = observed(Signals(window_s=5, waiting=3), 0, 1.0, "T")
    assert "inFlightPerReplica" not in got and got["costUsdPerHour"] == 0


def hpa(name, target, ns="shop", kind="SLMSpecialist", api="slmfleet.io/v1alpha1"):
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {"scaleTargetRef": {"apiVersion": api, "kind": kind, "name": target}},
    }


def test_claimants_are_hpas_on_this_specialist_only():
    hpas = [
        hpa("mine", "billing"),
        hpa("keda-hpa-billing", "billing"),
        hpa("other-ns", "billing", ns="else"),
        hpa("a-deployment", "billing", kind="Deployment", api="apps/v1"),
        hpa("other-specialist", "shipping"),
        {"metadata": {"name": "broken", "namespace": "shop"}, "spec": {}},
    ]
    assert claimants(hpas, "shop", "billing") == ["keda-hpa-billing", "mine"]


def test_condition_keeps_its_transition_time_while_status_holds():
    first = scaling_condition("True", "WithinTarget", "ok", 3, None)
    again = scaling_condition("True", "InFlightAboveTarget", "busy", 4, first)
    assert again["lastTransitionTime"] == first["lastTransitionTime"]
    assert again["observedGeneration"] == 4
    flipped = scaling_condition("False", "MetricsUnavailable", "x", 4, {**first,
                                "lastTransitionTime": "2000-01-01T00:00:00Z"})  # fmt: skip
    assert flipped["lastTransitionTime"] != "2000-01-01T00:00:00Z"
    long = scaling_condition("True", "WithinTarget", "x" * 10_000, 1, None)
    assert len(long["message"]) == 4096


def test_event_body_names_the_specialist():
    body = {"metadata": {"name": "billing", "namespace": "shop", "uid": "u-1"}}
    event = event_body(body, "Normal", "InFlightAboveTarget", "scaled from 1 to 3: ...", "op-0")
    assert event["involvedObject"] == {
        "apiVersion": "slmfleet.io/v1alpha1",
        "kind": "SLMSpecialist",
        "name": "billing",
        "namespace": "shop",
        "uid": "u-1",
    }
    assert event["metadata"] == {"generateName": "billing.", "namespace": "shop"}
    assert (event["type"], event["reason"]) == ("Normal", "InFlightAboveTarget")
    assert event["source"] == {"component": "slmfleet-autoscaler"}


def test_event_body_about_another_kind():
    body = {"metadata": {"name": "support", "namespace": "shop", "uid": "u-2"}}
    event = event_body(body, "Warning", "TargetsNotFound", "ghost", "op-0",
                       kind="RouterPolicy", component="slmfleet-operator")  # fmt: skip
    assert event["involvedObject"]["kind"] == "RouterPolicy"
    assert event["involvedObject"]["name"] == "support"
    assert event["reportingComponent"] == "slmfleet-operator"
    assert event["source"] == {"component": "slmfleet-operator"}
