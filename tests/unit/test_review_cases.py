"""What reviewers may do to a case, decided purely (the store applies it under a lock)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from slmfleet.telemetry.review.cases import (
    Case,
    Change,
    Claim,
    Escalate,
    Refusal,
    Release,
    Resolve,
    decide,
)

T = 1000.0
OPEN = Case("c1", "tier2", "support", "r1", "open", created_at=T, sla_due_at=T + 100)
ALICE = replace(OPEN, status="claimed", claimed_by="alice", lease_until=T + 60)
EXPIRED = replace(ALICE, lease_until=T - 1)
DONE = replace(
    OPEN, status="resolved", resolved_by="alice", resolved_at=T, answer="yes", label="ok"
)


def code(result: Change | Refusal) -> str:
    return result.code if isinstance(result, Refusal) else "ok"


@pytest.mark.parametrize(
    ("case", "action", "want"),
    [
        (OPEN, Claim("alice", 60), "ok"),
        (ALICE, Claim("alice", 60), "ok"),  # renew
        (ALICE, Claim("bob", 60), "claimed"),
        (EXPIRED, Claim("bob", 60), "ok"),  # a lease that ran out frees the case
        (DONE, Claim("bob", 60), "already_resolved"),
        (OPEN, Release("alice"), "not_claimed"),
        (ALICE, Release("bob"), "claimed"),
        (ALICE, Release("alice"), "ok"),
        (EXPIRED, Release("alice"), "ok"),
        (OPEN, Resolve("alice", answer="x"), "not_claimed"),
        (ALICE, Resolve("bob", answer="x"), "claimed"),
        (ALICE, Resolve("alice", answer="x"), "ok"),
        (EXPIRED, Resolve("alice", answer="x"), "ok"),  # nobody took over: the work counts
        (EXPIRED, Resolve("bob", answer="x"), "not_claimed"),  # alice's lapsed claim
        (DONE, Resolve("alice", answer="yes", label="ok"), "ok"),  # a retry
        (DONE, Resolve("alice", answer="no", label="ok"), "already_resolved"),
        (DONE, Resolve("bob", answer="yes", label="ok"), "already_resolved"),
        (ALICE, Escalate("alice", "senior", 500), "ok"),
        (ALICE, Escalate("alice", "tier2", 500), "invalid_queue"),
        (OPEN, Escalate("alice", "senior", 500), "not_claimed"),
        (DONE, Escalate("alice", "senior", 500), "already_resolved"),
    ],
)
def test_decide(case, action, want):
    assert code(decide(case, action, T)) == want


def test_claim_sets_the_lease_and_audits():
    out = decide(OPEN, Claim("alice", 60), T)
    assert (out.case.status, out.case.claimed_by, out.case.lease_until) == (
        "claimed",
        "alice",
        T + 60,
    )
    assert out.event == {"at": T, "actor": "alice", "action": "claim"}
    assert decide(ALICE, Claim("alice", 30), T).event["action"] == "renew"


def test_resolve_records_the_resolution_and_a_late_breach():
    late = decide(ALICE, Resolve("alice", answer="a", label="l", note="n"), T + 101)
    c = late.case
    assert (c.status, c.resolved_by, c.resolved_at, c.answer, c.label, c.note) == (
        "resolved",
        "alice",
        T + 101,
        "a",
        "l",
        "n",
    )
    assert late.resolved_now and late.breached_now and c.sla_breached
    on_time = decide(ALICE, Resolve("alice", label="l"), T + 10)
    assert on_time.resolved_now and not on_time.breached_now


def test_a_repeated_resolution_changes_nothing():
    out = decide(DONE, Resolve("alice", answer="yes", label="ok"), T + 50)
    assert isinstance(out, Change) and not out.changed and out.case is DONE


def test_escalate_reopens_in_the_new_queue_with_a_fresh_sla():
    out = decide(replace(ALICE, sla_breached=True), Escalate("alice", "senior", 500, "legal"), T)
    c = out.case
    assert (c.queue, c.status, c.claimed_by, c.lease_until) == ("senior", "open", None, None)
    assert (c.sla_due_at, c.sla_breached) == (T + 500, False)
    assert c.escalations[-1] == "review:tier2->senior"
    assert out.event == {
        "at": T,
        "actor": "alice",
        "action": "escalate",
        "to": "senior",
        "note": "legal",
    }


def test_state_and_views():
    assert EXPIRED.state(T) == "open" and ALICE.state(T) == "claimed"
    pub = EXPIRED.public(T)
    assert pub["claimed_by"] is None and pub["state"] == "open"
    client = DONE.for_client(T)
    assert client == {
        "id": "c1",
        "object": "review.case",
        "status": "resolved",
        "created_at": T,
        "resolved_at": T,
        "answer": "yes",
        "label": "ok",
    }
    assert OPEN.for_client(T)["answer"] is None
    assert OPEN.public(T + 101)["sla_breached"] is True
