"""The operator's learning loop: which policies are due and what status a run makes
(pure), and the bounded child process (a real one)."""

from __future__ import annotations

import pytest

from slmfleet.controller.learning import LearningSettings, run_job
from slmfleet.learn.schedule import due, learning_of, status_of


def policy(uid: str, learning=None, deleting: bool = False) -> dict:
    meta = {"uid": uid, "namespace": "shop", "name": uid}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-30T00:00:00Z"
    spec = {"specialists": {"names": ["a"]}}
    if learning is not None:
        spec["learning"] = learning
    return {"metadata": meta, "spec": spec}


@pytest.mark.parametrize(
    ("learning", "enabled"),
    [
        (None, False),
        ({}, False),
        ({"enabled": False}, False),
        ({"enabled": True}, True),
        ({"enabled": True, "intervalSeconds": 5}, False),  # invalid: the server refuses it
    ],
)
def test_only_policies_that_ask_are_learned(learning, enabled):
    assert (learning_of(policy("p", learning)) is not None) is enabled


def test_due_by_interval_oldest_first():
    on = {"enabled": True, "intervalSeconds": 600}
    bodies = [
        policy("never", on),
        policy("recent", on),
        policy("old", on),
        policy("off", {"enabled": False}),
        policy("gone", on, deleting=True),
    ]
    last = {"recent": 1000.0, "old": 300.0}
    assert [b["metadata"]["uid"] for b in due(bodies, last, 1000.0 + 599)] == ["never", "old"]
    assert [b["metadata"]["uid"] for b in due(bodies, last, 1000.0 + 600)] == [
        "never",
        "old",
        "recent",
    ]


@pytest.mark.parametrize(
    ("result", "status", "reason", "owns_proposals"),
    [
        (
            {
                "outcome": "proposed",
                "outcomes": 300,
                "status": {"thresholdProposals": [{"proposed": 0.4}], "learning": {"outcomes": 3}},
            },
            "True",
            "Proposed",
            True,
        ),
        ({"outcome": "too_few", "outcomes": 3, "needed": 50}, "False", "TooFewOutcomes", False),
        ({"outcome": "no_store"}, "False", "NoDecisionStore", False),
        ({"outcome": "store_unavailable", "message": "x"}, "Unknown", "StoreUnavailable", False),
        ({"outcome": "failed", "message": "boom"}, "False", "LearningFailed", False),
        ({}, "False", "LearningFailed", False),
    ],
)
def test_status_of_a_run(result, status, reason, owns_proposals):
    out = status_of(result, 7)
    [cond] = out["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Learned", status, reason)
    assert cond["observedGeneration"] == 7
    # the last proposals stay for review unless a run proposed new ones
    assert ("thresholdProposals" in out) is owns_proposals
    assert ("learning" in out) is owns_proposals
    if reason == "TooFewOutcomes":
        assert "3 labelled outcomes" in cond["message"] and "50" in cond["message"]


async def test_a_run_is_a_child_process_whose_failure_is_reported():
    beats = []
    result = await run_job({"config": {"version": 7}}, LearningSettings(), lambda: beats.append(1))
    assert result["outcome"] == "failed" and "version" in result["message"]
    assert beats  # the loop kept beating while it waited


async def test_a_run_past_its_time_is_killed():
    settings = LearningSettings(timeout_seconds=0.01)
    result = await run_job({"config": {}}, settings, lambda: None)
    assert result == {"outcome": "failed", "message": "the learning run timed out"}
