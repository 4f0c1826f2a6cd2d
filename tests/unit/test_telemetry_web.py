"""Pure parts of the telemetry endpoints: request validation, reviewer keys and console
sessions, settings files, and the console's escaping."""

from __future__ import annotations

import pytest

from slmfleet.telemetry.auth import Reviewer, ReviewerAuth, cookie_value, key_digest
from slmfleet.telemetry.console import render
from slmfleet.telemetry.review.cases import Case
from slmfleet.telemetry.settings import (
    ReviewerConfig,
    SettingsError,
    decision_log_from_env,
    load_queues,
    load_reviewers,
)
from slmfleet.telemetry.web import parse
from slmfleet.telemetry.web.common import HttpError


def refused(fn, *args) -> tuple[int, str | None]:
    with pytest.raises(HttpError) as e:
        fn(*args)
    return e.value.status, e.value.param


def test_feedback_parsing():
    fb = parse.feedback({"request_id": "r", "rating": 1, "outcome": "ok"})
    assert (fb.rating, fb.outcome, fb.label) == (1.0, "ok", None)
    assert refused(parse.feedback, {"request_id": "r"}) == (400, "rating")
    assert refused(parse.feedback, {"request_id": "", "rating": 1}) == (400, "request_id")
    assert refused(parse.feedback, {"request_id": "r", "rating": float("nan")}) == (400, "rating")
    assert refused(parse.feedback, {"request_id": 5, "rating": 1}) == (400, "request_id")
    assert refused(parse.feedback, {"request_id": "r", "answer": "x" * 40000}) == (400, "answer")


def test_case_filter_parsing():
    f = parse.case_filter({"state": "open", "limit": "10", "after": "12.5:" + "a" * 32}, ("q",))
    assert (f.state, f.limit, f.after, f.queues) == ("open", 10, (12.5, "a" * 32), ("q",))
    assert refused(parse.case_filter, {"state": "all"}, None) == (400, "state")
    assert refused(parse.case_filter, {"limit": "0"}, None) == (400, "limit")
    assert refused(parse.case_filter, {"after": "x:y"}, None) == (400, "after")
    assert refused(parse.case_filter, {"created_after": "inf"}, None) == (400, "created_after")
    assert parse.wanted_queues({"queue": "a,b"}) == ["a", "b"]
    assert refused(parse.wanted_queues, {"queue": "a,b c"}) == (400, "queue")
    assert refused(parse.case_id, "../etc/passwd")[0] == 404


def test_resolution_needs_an_answer_or_a_label():
    assert parse.resolution({"label": " refund "}) == (None, "refund", None)
    assert refused(parse.resolution, {"note": "n"}) == (400, "answer")
    assert refused(parse.resolution, {"answer": "   "}) == (400, "answer")
    assert refused(parse.resolution, {"answer": "a", "by": "me"}) == (400, "by")


REVIEWERS = [
    ReviewerConfig(name="alice", key="alice-key-0123456789", queues=["tier2"]),
    ReviewerConfig(name="root", keySha256=key_digest("root-key-0123456789"), queues=["*"]),
]


def test_reviewer_keys_and_grants():
    auth = ReviewerAuth(REVIEWERS, b"secret")
    alice = auth.by_key("alice-key-0123456789")
    assert alice == Reviewer("alice", frozenset({"tier2"}))
    assert auth.by_key("root-key-0123456789") == Reviewer("root", None)
    assert auth.by_key("alice-key-012345678") is None and auth.by_key("") is None
    assert auth.from_headers([(b"authorization", b"Bearer alice-key-0123456789")]) == alice
    assert auth.from_headers([(b"authorization", b"Basic alice-key-0123456789")]) is None
    assert alice.visible(["tier2", "senior"]) == ("tier2",)
    assert alice.visible(None) == ("tier2",) and Reviewer("r", None).visible(None) is None


def test_sessions_are_signed_expire_and_follow_the_file():
    now = [1000.0]
    auth = ReviewerAuth(REVIEWERS, b"secret", session_ttl_s=60, clock=lambda: now[0])
    alice = auth.by_key("alice-key-0123456789")
    s = auth.session(alice)
    assert auth.from_session(s) == alice
    assert ReviewerAuth(REVIEWERS, b"other").from_session(s) is None  # another secret
    assert auth.from_session(s[:-2] + ("AA" if not s.endswith("AA") else "BB")) is None
    assert auth.from_session("bm9uc2Vuc2U") is None
    gone = ReviewerAuth(REVIEWERS[1:], b"secret", clock=lambda: now[0])
    assert gone.from_session(s) is None  # removed from the reviewers file
    assert auth.check_csrf(s, auth.csrf(s)) and not auth.check_csrf(s, "x")
    now[0] += 61
    assert auth.from_session(s) is None
    assert cookie_value([(b"cookie", b"a=1; slmfleet_review=xyz")]) == "xyz"


def test_settings_files(tmp_path):
    good = tmp_path / "r.yaml"
    good.write_text("- {name: a, key: aaaaaaaaaaaaaaaa, queues: [q]}\n")
    assert load_reviewers(str(good))[0].name == "a"
    for text, match in [
        ("- {name: a, queues: [q]}\n", "exactly one"),
        ("- {name: a, key: aaaaaaaaaaaaaaaa, queues: [q]}\n" * 2, "unique"),
        ("- {name: 'a b', key: aaaaaaaaaaaaaaaa, queues: [q]}\n", "name"),
        ("- {name: a, key: short, queues: [q]}\n", "key"),
        ("{name: a}\n", "list"),
    ]:
        good.write_text(text)
        with pytest.raises(SettingsError, match=match):
            load_reviewers(str(good))
    q = tmp_path / "q.yaml"
    q.write_text("tier2: {slaSeconds: 60, webhookUrl: 'http://x/h'}\nsenior: {}\n")
    assert load_queues(str(q))["tier2"].sla_seconds == 60
    q.write_text("tier2: {slaSeconds: 0}\n")
    with pytest.raises(SettingsError, match="sla"):
        load_queues(str(q))
    with pytest.raises(SettingsError, match="SLMFLEET_DECISION_BUFFER"):
        decision_log_from_env({"SLMFLEET_DECISION_BUFFER": "lots"})
    with pytest.raises(SettingsError, match="CONTENT"):
        decision_log_from_env({"SLMFLEET_DECISION_CONTENT": "everything"})
    s = decision_log_from_env(
        {"SLMFLEET_DECISION_FLUSH_MS": "50", "SLMFLEET_DECISION_CONTENT": "hashed"}
    )
    assert s.flush_interval_s == 0.05 and s.content.content == "hashed" and s.store_url is None


HOSTILE = "\"'><script>alert(1)</script><img src=x onerror=alert(2)>&amp;"


def test_every_user_supplied_text_is_escaped():
    case = Case(
        id="f" * 32,
        queue="tier2",
        policy=HOSTILE,
        request_id=HOSTILE,
        status="resolved",
        created_at=0.0,
        sla_due_at=10.0,
        reason=HOSTILE,
        escalations=(HOSTILE,),
        conversation=({"role": HOSTILE, "content": HOSTILE},),
        answers=({"tier": HOSTILE, "target": HOSTILE, "answer": HOSTILE, "reasons": [HOSTILE]},),
        resolved_by=HOSTILE,
        answer=HOSTILE,
        label=HOSTILE,
        note=HOSTILE,
    )
    pages = [
        render.case_page(
            case,
            [{"at": 1.0, "actor": HOSTILE, "action": HOSTILE, "to": HOSTILE, "label": HOSTILE}],
            now=5.0,
            reviewer=HOSTILE,
            csrf=HOSTILE,
            escalate_to=[HOSTILE],
            default_escalation=HOSTILE,
            error=HOSTILE,
        ),
        render.queue_page(
            [case],
            [
                {
                    "queue": HOSTILE,
                    "open": 1,
                    "claimed": 0,
                    "oldest_age_s": 1,
                    "sla_seconds": 1,
                    "breached": 0,
                }
            ],
            now=5.0,
            reviewer=HOSTILE,
            csrf=HOSTILE,
            queues=[HOSTILE],
            selected_queue=HOSTILE,
            state="any",
            flash=HOSTILE,
        ),
        render.login_page(HOSTILE),
    ]
    for page in pages:
        assert "<script>alert" not in page and "<img" not in page and "\"'>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "&amp;amp;" in page  # already-escaped text is escaped again, shown as typed
