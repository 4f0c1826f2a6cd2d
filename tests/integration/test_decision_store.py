"""The decision store on real SQLite and real PostgreSQL: the same behaviour from both
backends (decisions, feedback joined to them, cases under concurrent reviewers,
retention, injection attempts in filters)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from slmfleet.telemetry.record import DecisionRecord, TierAttempt, to_row
from slmfleet.telemetry.review.cases import Case, Claim, Refusal, Resolve
from slmfleet.telemetry.settings import ContentPolicy
from slmfleet.telemetry.store import CaseFilter, FeedbackInput, Store, open_store

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'd.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    s = open_store(url)
    yield s
    s.close()


def rec(rid: str, ts: float, **kw) -> tuple:
    return to_row(DecisionRecord(rid, ts, kw.pop("policy", "support"), **kw))


def case(cid: str, now: float, queue: str = "tier2", **kw) -> Case:
    return Case(
        id=cid,
        queue=queue,
        policy=kw.pop("policy", "support"),
        request_id=kw.pop("request_id", "r-" + cid),
        status="open",
        created_at=now,
        sla_due_at=now + kw.pop("sla", 60),
        **kw,
    )


def test_decisions_round_trip_with_their_record(store: Store):
    now = time.time()
    r = DecisionRecord(
        "req-1",
        now,
        "support",
        route="shop/billing",
        route_source="classifier",
        routing_confidence=0.91,
        route_scores={"shop/billing": 0.91, "shop/shipping": 0.05},
        tier="large",
        target="shop/generalist",
        accepted=True,
        attempts=[
            TierAttempt("small", "rejected", ("label_threshold:refund",)),
            TierAttempt("large", "accepted"),
        ],
        prompt_tokens=12,
        completion_tokens=30,
        cost_usd=0.0021,
        prompt="I want my money back",
        answer="refund",
        content=ContentPolicy(content="hashed"),
    )
    store.write_decisions([to_row(r, b"k")])
    got = store.get_decision("req-1")
    assert got["route"] == {
        "specialist": "shop/billing",
        "source": "classifier",
        "confidence": 0.91,
        "scores": {"shop/billing": 0.91, "shop/shipping": 0.05},
    }
    assert [a["outcome"] for a in got["attempts"]] == ["rejected", "accepted"]
    assert got["tokens"] == {"input": 12, "output": 30, "reasoning": 0}
    assert "text" not in got["prompt"] and len(got["prompt"]["sha256"]) == 64
    assert store.get_decision("req-2") is None


def test_a_repeated_request_id_keeps_its_first_decision(store: Store):
    now = time.time()
    store.write_decisions([rec("dup", now, policy="first")])
    store.write_decisions([rec("dup", now + 1, policy="second"), rec("other", now)])
    assert store.get_decision("dup")["policy"] == "first"
    assert store.count_decisions() == 2


def test_feedback_joins_the_decision_and_merges_idempotently(store: Store):
    now = time.time()
    store.write_decisions([rec("r1", now)])
    first = store.put_feedback(FeedbackInput("r1", rating=-1.0), now)
    assert first is not None and first.created and first.rating == -1.0
    again = store.put_feedback(FeedbackInput("r1", rating=-1.0), now + 1)
    assert not again.created and again.rating == -1.0 and again.created_at == first.created_at
    merged = store.put_feedback(FeedbackInput("r1", label="refund", answer="Refunded."), now + 2)
    assert (merged.rating, merged.label, merged.answer) == (-1.0, "refund", "Refunded.")
    [ex] = store.labelled()
    assert ex.source == "feedback" and ex.correct_label == "refund"
    assert ex.decision["request_id"] == "r1"


def test_feedback_for_an_unknown_id_stores_nothing(store: Store):
    assert store.put_feedback(FeedbackInput("ghost", rating=1.0), time.time()) is None
    assert store.get_feedback("ghost") is None
    assert store.labelled() == []


def test_retention_by_age_and_rows_deletes_oldest_with_their_feedback(store: Store):
    now = 1_000_000.0
    store.write_decisions([rec(f"r{i:03d}", now + i) for i in range(120)])
    store.put_feedback(FeedbackInput("r000", rating=1.0), now)
    store.put_feedback(FeedbackInput("r119", rating=1.0), now)
    assert store.prune(older_than=now + 10, max_rows=None, chunk=7) == 10
    assert store.prune(older_than=None, max_rows=100, chunk=7) == 10
    left = store.decision_ids()
    assert len(left) == 100 and min(left) == "r020" and max(left) == "r119"
    assert store.get_feedback("r000") is None  # went with its decision
    assert store.get_feedback("r119") is not None


def test_filters_are_parameters_not_sql(store: Store):
    now = time.time()
    store.file_case(case("a" * 32, now))
    attacks = [
        "tier2' OR '1'='1",
        "x'; DROP TABLE cases; --",
        'tier2" OR 1=1 --',
        "%",
        "tier2) OR (1=1",
    ]
    for bad in attacks:
        f = CaseFilter(queues=(bad,), state="any", policy=bad, request_id=bad, claimed_by=bad)
        assert store.list_cases(f, now) == []
        assert store.list_cases(CaseFilter(queues=None, state="any", policy=bad), now) == []
    # Still there, and still found by an honest filter.
    assert [c.id for c in store.list_cases(CaseFilter(queues=("tier2",), state="any"), now)] == [
        "a" * 32
    ]


def test_listing_pages_by_cursor_and_state(store: Store):
    now = time.time()
    for i in range(5):
        store.file_case(case(f"{i:032x}", now + i))
    store.apply(f"{1:032x}", Claim("alice", 60), now + 10)
    store.apply(f"{2:032x}", Claim("bob", 1), now + 10)  # lease runs out at now+11
    store.apply(f"{3:032x}", Claim("bob", 60), now + 10)
    store.apply(f"{3:032x}", Resolve("bob", answer="done"), now + 10)
    t = now + 20
    ids = lambda state: [c.id[-1] for c in store.list_cases(CaseFilter(state=state), t)]  # noqa: E731
    assert ids("open") == ["0", "2", "4"]  # the expired claim is open again
    assert ids("claimed") == ["1"]
    assert ids("resolved") == ["3"]
    assert ids("unresolved") == ["0", "1", "2", "4"]
    page1 = store.list_cases(CaseFilter(state="any", limit=2), t)
    page2 = store.list_cases(
        CaseFilter(state="any", limit=2, after=(page1[-1].created_at, page1[-1].id)), t
    )
    assert [c.id[-1] for c in page1 + page2] == ["0", "1", "2", "3"]


def test_one_claim_wins_when_reviewers_race(store: Store):
    now = time.time()
    store.file_case(case("c" * 32, now))
    barrier = threading.Barrier(8)

    def grab(i: int):
        barrier.wait()
        return store.apply("c" * 32, Claim(f"rev{i}", 60), now)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(grab, range(8)))
    winners = [r for r in results if not isinstance(r, Refusal)]
    assert len(winners) == 1
    assert all(r.code == "claimed" for r in results if isinstance(r, Refusal))
    assert store.get_case("c" * 32).claimed_by == winners[0].case.claimed_by


def test_resolve_twice_and_audit_trail(store: Store):
    now = time.time()
    cid = "d" * 32
    store.file_case(case(cid, now))
    store.apply(cid, Claim("alice", 60), now)
    first = store.apply(cid, Resolve("alice", answer="yes", label="ok"), now + 1)
    assert first.resolved_now
    retry = store.apply(cid, Resolve("alice", answer="yes", label="ok"), now + 2)
    assert not retry.changed  # the same reviewer's retried request: answered as before
    other = store.apply(cid, Resolve("bob", answer="no"), now + 3)
    assert isinstance(other, Refusal) and other.code == "already_resolved"
    got = store.get_case(cid)
    assert (got.answer, got.resolved_by, got.resolved_at) == ("yes", "alice", now + 1)
    assert [e["action"] for e in store.case_events(cid)] == ["file", "claim", "resolve"]
    [ex] = store.labelled()
    assert (ex.source, ex.correct_label, ex.by, ex.case_id) == ("review", "ok", "alice", cid)


def test_queue_outside_the_grant_is_not_found(store: Store):
    now = time.time()
    store.file_case(case("e" * 32, now, queue="senior"))
    assert store.apply("e" * 32, Claim("alice", 60), now, queues=frozenset({"tier2"})) is None
    assert store.get_case("e" * 32).status == "open"


def test_sla_breaches_are_flagged_once(store: Store):
    now = time.time()
    store.file_case(case("f" * 32, now, sla=10))
    store.file_case(case("9" * 32, now, queue="senior", sla=1000))
    assert store.mark_breaches(now + 5) == {}
    assert store.mark_breaches(now + 11) == {"tier2": 1}
    assert store.mark_breaches(now + 12) == {}
    [tier2] = [s for s in store.queue_stats(now + 12) if s.queue == "tier2"]
    assert (tier2.open, tier2.claimed, tier2.breached) == (1, 0, 1)


def test_webhook_deliveries_are_taken_once(store: Store):
    now = time.time()
    cid = "b" * 32
    store.file_case(case(cid, now))
    store.apply(cid, Claim("alice", 60), now)
    store.apply(cid, Resolve("alice", label="x"), now, webhook_queues=frozenset({"tier2"}))
    assert [c.id for c in store.due_webhooks(now + 1, lease_s=30)] == [cid]
    assert store.due_webhooks(now + 2, lease_s=30) == []  # taken: not handed out twice
    store.webhook_done(cid, ok=False, next_at=now + 5)
    assert [c.webhook_attempts for c in store.due_webhooks(now + 6)] == [1]
    store.webhook_done(cid, ok=True, next_at=None)
    assert store.due_webhooks(now + 100) == []
    assert store.get_case(cid).webhook_state == "delivered"


def test_labelled_for_some_policies_is_their_newest_selected_in_sql(store: Store):
    """One policy's feedback volume never fills another's read window: the policy
    filter is in SQL and the newest rows are kept (returned oldest first)."""
    now = time.time()
    store.write_decisions([rec(f"q{i}", now + i, policy="ns/quiet") for i in range(3)])
    store.write_decisions([rec(f"l{i}", now + 10 + i, policy="loud") for i in range(30)])
    for i in range(3):
        store.put_feedback(FeedbackInput(f"q{i}", rating=1.0), now + i)
    for i in range(30):
        store.put_feedback(FeedbackInput(f"l{i}", rating=-1.0), now + 10 + i)
    cid = "e" * 32
    store.file_case(case(cid, now, policy="ns/quiet", request_id="q0"))
    store.apply(cid, Claim("ann", 60), now)
    store.apply(cid, Resolve("ann", answer="yes", label="refund"), now + 1)
    # The shared window (the oldest 10 of all) would hold all quiet rows here; the
    # newest 10 of all would hold none of them.
    shared = store.labelled(0.0, 10, newest=True)
    assert {e.policy for e in shared if e.source == "feedback"} == {"loud"}
    quiet = store.labelled(0.0, 10, policies=["quiet", "ns/quiet"], newest=True)
    assert sorted((e.source, e.request_id) for e in quiet) == [
        ("feedback", "q0"), ("feedback", "q1"), ("feedback", "q2"), ("review", "q0"),
    ]  # fmt: skip
    loud = store.labelled(0.0, 10, policies=["loud"], newest=True)
    assert [e.request_id for e in loud] == [f"l{i}" for i in range(20, 30)]
    assert store.labelled(0.0, 10, policies=[]) == []
    assert store.labelled(0.0, 10, policies=["x') OR 1=1 --"]) == []
