"""Feedback, case polling and the review API over real HTTP (uvicorn) on real SQLite:
auth and grants, bad input (unknown ids, oversize bodies, malformed JSON, injection
attempts), a review resolved twice, an expired lease, the answer modes of the human
tier, SLA breaches in metrics, webhooks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import json
import threading
import time

import httpx
import openai
import pytest

from slmfleet.router.metrics import REGISTRY
from slmfleet.telemetry.review import CaseInput
from slmfleet.telemetry.settings import HumanAnswerPolicy, QueueConfig
from slmfleet.telemetry.store import CaseFilter, StoreUnavailable

from .telemetry_support import QUEUES, Served, bearer, decision, make_telemetry, sqlite_url

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def served(tmp_path, clock):
    with Served(make_telemetry(sqlite_url(tmp_path), clock=clock)) as s:
        yield s


def run(coro):
    """Run a coroutine on the server's loop-independent side (its own loop)."""
    return asyncio.run(coro)


def file_case(served: Served, queue: str = "tier2", text: str = "where is my refund?") -> str:
    async def go():
        return await served.tel.review.file(
            CaseInput(
                request_id=f"req-{time.monotonic_ns()}",
                policy="support",
                queue=queue,
                conversation=[{"role": "user", "content": text}],
                answers=[{"tier": "small", "target": "shop/billing", "answer": "refund?"}],
                escalations=["small:label_threshold:refund"],
            )
        )

    # The store is thread-safe; filing from the test's own loop is what a router does.
    return asyncio.run(go()).id


# -- feedback ---------------------------------------------------------------------------


def test_feedback_is_joined_idempotent_and_merged(tmp_path, clock):
    # A flush interval far longer than the test: the decision is still in the writer's
    # buffer when the feedback arrives, and is flushed for it.
    with Served(make_telemetry(sqlite_url(tmp_path), clock=clock, flush_s=60)) as served:
        served.tel.record(decision("req-1"))
        assert served.tel.writer.pending("req-1")
        fb = {"request_id": "req-1", "rating": -1}
        with httpx.Client(base_url=served.url, headers=bearer("client")) as c:
            first = c.post("/v1/feedback", json=fb)
            assert first.status_code == 200, first.text
            clock.t += 1
            again = c.post("/v1/feedback", json=fb)
            assert again.json()["rating"] == first.json()["rating"]  # same state again
            assert again.json()["created_at"] == first.json()["created_at"]
            merged = c.post("/v1/feedback", json={"request_id": "req-1", "label": "refund"})
        body = merged.json()
        assert (body["rating"], body["label"], body["object"]) == (-1.0, "refund", "feedback")
        [ex] = served.tel.store.labelled()
        assert ex.correct_label == "refund" and ex.decision["request_id"] == "req-1"


def test_feedback_with_the_openai_client_as_documented(served):
    served.tel.record(decision("req-sdk"))
    served.tel.writer.wait_flushed(5)
    client = openai.OpenAI(
        base_url=f"{served.url}/v1", api_key=bearer("client")["authorization"][7:]
    )
    out = client.post(
        "/feedback",
        body={"request_id": "req-sdk", "rating": 1, "outcome": "customer happy"},
        cast_to=object,
    )
    assert out["outcome"] == "customer happy"


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"request_id": "nope", "rating": 1}, 404, "request_not_found", "request_id"),
        ({"request_id": "req-2"}, 400, "invalid_request", "rating"),
        ({"request_id": "req-2", "rating": 3}, 400, "invalid_request", "rating"),
        ({"request_id": "req-2", "rating": True}, 400, "invalid_request", "rating"),
        ({"request_id": "req-2", "rating": 1, "admin": True}, 400, "invalid_request", "admin"),
        ({"request_id": "req-2", "label": "x" * 300}, 400, "invalid_request", "label"),
        ({"rating": 1}, 400, "invalid_request", "request_id"),
    ],
)
def test_bad_feedback_is_refused_and_nothing_is_stored(served, body, status, code, param):
    served.tel.record(decision("req-2"))
    served.tel.writer.wait_flushed(5)
    r = httpx.post(f"{served.url}/v1/feedback", json=body, headers=bearer("client"))
    assert r.status_code == status
    err = r.json()["error"]
    assert (err["code"], err["param"]) == (code, param) and err["message"]
    assert served.tel.store.get_feedback("req-2") is None
    assert served.tel.store.get_feedback("nope") is None


def test_feedback_transport_errors(served):
    url = f"{served.url}/v1/feedback"
    h = bearer("client")
    assert httpx.post(url, json={"request_id": "x", "rating": 1}).status_code == 401
    r = httpx.post(url, content=b"{nope", headers=h)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    big = b'{"request_id": "x", "outcome": "' + b"a" * 70_000 + b'"}'
    r = httpx.post(url, content=big, headers=h)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: refused while it streams
        for _ in range(100):
            yield b"a" * 1024

    r = httpx.post(url, content=chunks(), headers=h)
    assert r.status_code == 413
    assert httpx.get(url, headers=h).status_code == 405


# -- review API -------------------------------------------------------------------------


def test_reviewers_see_only_their_queues(served):
    mine = file_case(served, "tier2")
    theirs = file_case(served, "senior")
    with httpx.Client(base_url=served.url) as c:
        assert c.get("/v1/review/cases").status_code == 401
        assert c.get("/v1/review/cases", headers=bearer("client")).status_code == 401
        alice = c.get("/v1/review/cases", headers=bearer("alice")).json()["data"]
        assert [x["id"] for x in alice] == [mine]
        asked = c.get("/v1/review/cases?queue=senior", headers=bearer("alice")).json()["data"]
        assert asked == []
        r = c.get(f"/v1/review/cases/{theirs}", headers=bearer("alice"))
        assert r.status_code == 404  # not 403: its existence is not told
        r = c.post(f"/v1/review/cases/{theirs}/claim", headers=bearer("alice"))
        assert r.status_code == 404
        bob = c.get("/v1/review/cases?state=any", headers=bearer("bob")).json()["data"]
        assert {x["id"] for x in bob} == {mine, theirs}
        queues = c.get("/v1/review/queues", headers=bearer("alice")).json()["data"]
        assert [(q["queue"], q["open"]) for q in queues] == [("tier2", 1)]


def test_claim_resolve_twice_and_the_client_poll(served):
    cid = file_case(served)
    with httpx.Client(base_url=served.url) as c:
        poll = c.get(f"/v1/cases/{cid}", headers=bearer("client")).json()
        assert poll["status"] == "pending" and poll["answer"] is None
        r = c.post(f"/v1/review/cases/{cid}/resolve", json={"answer": "x"}, headers=bearer("alice"))
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_claimed"
        assert (
            c.post(f"/v1/review/cases/{cid}/claim", headers=bearer("alice")).json()["state"]
            == "claimed"
        )
        r = c.post(f"/v1/review/cases/{cid}/claim", headers=bearer("bob"))
        assert r.status_code == 409 and r.json()["error"]["code"] == "claimed"
        res = {"answer": "Your refund was sent today.", "label": "refund"}
        done = c.post(f"/v1/review/cases/{cid}/resolve", json=res, headers=bearer("alice"))
        assert done.status_code == 200 and done.json()["resolution"]["by"] == "alice"
        retry = c.post(f"/v1/review/cases/{cid}/resolve", json=res, headers=bearer("alice"))
        assert retry.status_code == 200  # a retried request: same answer, nothing changes
        twice = c.post(
            f"/v1/review/cases/{cid}/resolve", json={"label": "other"}, headers=bearer("bob")
        )
        assert twice.status_code == 409 and twice.json()["error"]["code"] == "already_resolved"
        poll = c.get(f"/v1/cases/{cid}", headers=bearer("client")).json()
        assert (poll["status"], poll["answer"], poll["label"]) == (
            "resolved",
            res["answer"],
            "refund",
        )
        assert "resolved_by" not in poll and "note" not in poll
        detail = c.get(f"/v1/review/cases/{cid}", headers=bearer("alice")).json()
        assert [e["action"] for e in detail["events"]] == ["file", "claim", "resolve"]
        assert c.get(f"/v1/cases/{cid}").status_code == 401
        assert c.get("/v1/cases/not-a-case", headers=bearer("client")).status_code == 404


def test_a_lease_that_runs_out_mid_review(served, clock):
    cid = file_case(served)
    with httpx.Client(base_url=served.url) as c:
        c.post(f"/v1/review/cases/{cid}/claim", json={"lease_seconds": 60}, headers=bearer("alice"))
        clock.t += 61  # alice is still typing; her lease is gone
        listed = c.get("/v1/review/cases?state=open", headers=bearer("bob")).json()["data"]
        assert [x["id"] for x in listed] == [cid]
        # Nobody took it over: her answer still counts.
        ok = c.post(f"/v1/review/cases/{cid}/resolve", json={"label": "a"}, headers=bearer("alice"))
        assert ok.status_code == 200

        cid2 = file_case(served)
        c.post(
            f"/v1/review/cases/{cid2}/claim", json={"lease_seconds": 60}, headers=bearer("alice")
        )
        clock.t += 61
        assert c.post(f"/v1/review/cases/{cid2}/claim", headers=bearer("bob")).status_code == 200
        late = c.post(
            f"/v1/review/cases/{cid2}/resolve", json={"label": "b"}, headers=bearer("alice")
        )
        assert late.status_code == 409 and late.json()["error"]["code"] == "claimed"
        assert served.tel.store.get_case(cid2).status == "claimed"


def test_release_and_escalate(served):
    cid = file_case(served)
    with httpx.Client(base_url=served.url) as c:
        c.post(f"/v1/review/cases/{cid}/claim", headers=bearer("alice"))
        r = c.post(f"/v1/review/cases/{cid}/release", headers=bearer("alice"))
        assert r.json()["state"] == "open" and r.json()["claimed_by"] is None
        c.post(f"/v1/review/cases/{cid}/claim", headers=bearer("alice"))
        bad = c.post(
            f"/v1/review/cases/{cid}/escalate", json={"queue": "nowhere"}, headers=bearer("alice")
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "queue"
        up = c.post(
            f"/v1/review/cases/{cid}/escalate",
            json={"queue": "senior", "note": "legal question"},
            headers=bearer("alice"),
        )
        assert up.status_code == 200 and up.json()["queue"] == "senior"
        assert up.json()["escalations"][-1] == "review:tier2->senior"
        assert c.get(f"/v1/review/cases/{cid}", headers=bearer("alice")).status_code == 404
        assert c.get(f"/v1/review/cases/{cid}", headers=bearer("bob")).json()["state"] == "open"


def test_filters_refuse_or_bind_injection_attempts(served):
    file_case(served)
    with httpx.Client(base_url=served.url, headers=bearer("root")) as c:
        r = c.get("/v1/review/cases", params={"queue": "tier2' OR '1'='1"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "queue"
        for bad in ("' OR 1=1 --", "x'; DROP TABLE cases; --"):
            r = c.get("/v1/review/cases", params={"policy": bad, "state": "any"})
            assert r.status_code == 200 and r.json()["data"] == []
        r = c.get("/v1/review/cases", params={"state": "any; DROP TABLE cases"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "state"
        r = c.get("/v1/review/cases", params={"limit": "1e9"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "limit"
        assert len(c.get("/v1/review/cases").json()["data"]) == 1  # the table is intact


# -- the human tier's answer modes ---------------------------------------------------------


def _inp(queue: str = "tier2") -> CaseInput:
    return CaseInput("req-h", "support", queue, [{"role": "user", "content": "help"}])


def test_hold_and_async_answers_name_a_filed_case(served):
    async def go():
        rs = served.tel.review
        hold = await rs.answer(_inp(), HumanAnswerPolicy(mode="hold"))
        later = await rs.answer(_inp(), HumanAnswerPolicy(mode="async"))
        return hold, later

    hold, later = run(go())
    assert hold.status == 200 and hold.case.id in hold.text and not hold.resolved
    assert later.status == 202 and later.body()["url"] == f"/v1/cases/{later.case.id}"
    assert (b"location", later.case_url.encode()) in later.headers()
    for o in (hold, later):
        assert served.tel.store.get_case(o.case.id) is not None  # filed before answering


def test_wait_returns_the_reviewers_answer_or_falls_back(served):
    async def go():
        rs = served.tel.review
        task = asyncio.create_task(
            rs.answer(_inp(), HumanAnswerPolicy(mode="wait", wait_seconds=20))
        )
        while True:  # a reviewer (another process, over HTTP) picks it up
            cases = await rs.list_cases(CaseFilter())
            if cases:
                break
            await asyncio.sleep(0.05)
        cid = cases[0].id
        async with httpx.AsyncClient(base_url=served.url, headers=bearer("alice")) as c:
            await c.post(f"/v1/review/cases/{cid}/claim")
            await c.post(f"/v1/review/cases/{cid}/resolve", json={"answer": "Approved."})
        t0 = time.monotonic()
        out = await task
        timed = await rs.answer(
            _inp(), HumanAnswerPolicy(mode="wait", wait_seconds=1, on_timeout="async")
        )
        return out, time.monotonic() - t0, timed

    out, _, timed = run(go())
    assert out.status == 200 and out.resolved and out.text == "Approved."
    assert timed.status == 202 and not timed.resolved


def test_filing_with_the_store_down_raises_and_returns_no_case(start_postgres):
    pg = start_postgres()
    tel = make_telemetry(pg.url)

    async def go():
        await tel.review.file(_inp())  # works while up
        pg.kill()
        with pytest.raises(StoreUnavailable):
            await tel.review.answer(_inp(), HumanAnswerPolicy(mode="hold"))

    run(go())
    with Served(tel) as s:
        r = httpx.get(f"{s.url}/v1/review/cases", headers=bearer("root"))
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
        assert tel.record(decision("while-down"))  # accepted into the buffer, not blocked
        deadline = time.monotonic() + 10
        while tel.writer.health()["ok"] and time.monotonic() < deadline:
            time.sleep(0.05)
        ready = httpx.get(f"{s.url}/readyz")
        assert ready.status_code == 200  # still serving ...
        log = ready.json()["decision_log"]
        assert log["ok"] is False and log["buffered"] == 1 and log["last_error"]  # ... and says so
        metrics = httpx.get(f"{s.url}/metrics").text
        assert "slmfleet_router_decision_store_up 0.0" in metrics
        r = httpx.post(
            f"{s.url}/v1/feedback", json={"request_id": "a", "rating": 1}, headers=bearer("client")
        )
        assert r.status_code == 503


# -- SLA and webhooks -----------------------------------------------------------------------


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_sla_breaches_and_depth_in_metrics(served, clock):
    before = metric("slmfleet_router_review_sla_breaches_total", queue="tier2")
    file_case(served)
    file_case(served)
    clock.t += QUEUES["tier2"].sla_seconds + 1
    run(served.tel.review.sweep())
    run(served.tel.review.sweep())  # counted once per case, not per sweep
    assert metric("slmfleet_router_review_sla_breaches_total", queue="tier2") - before == 2
    assert metric("slmfleet_router_review_open_cases", queue="tier2", state="open") == 2
    assert metric("slmfleet_router_review_oldest_open_age_seconds", queue="tier2") > 3600


class Hook(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict, bytes, str]] = []
    fail_first = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        if Hook.fail_first > 0:
            Hook.fail_first -= 1
            self.send_response(500)
        else:
            Hook.received.append(
                (json.loads(body), body, self.headers.get("x-slmfleet-signature", ""))
            )
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_resolutions_call_the_webhook_signed_and_retried(tmp_path):
    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    secret = tmp_path / "hook.key"
    secret.write_text("s3cret\n")
    Hook.received, Hook.fail_first = [], 1
    queues = {
        "tier2": QueueConfig(
            webhook_url=f"http://127.0.0.1:{hook.server_port}/hook",
            webhook_secret_file=str(secret),
        )
    }
    before = metric("slmfleet_router_review_webhook_failures_total", queue="tier2")
    try:
        with Served(make_telemetry(sqlite_url(tmp_path), queues=queues)) as s:
            cid = file_case(s)
            with httpx.Client(base_url=s.url, headers=bearer("alice")) as c:
                c.post(f"/v1/review/cases/{cid}/claim")
                c.post(f"/v1/review/cases/{cid}/resolve", json={"label": "refund"})
            # First attempt fails (500); the retry 2 s later delivers.
            deadline = time.monotonic() + 20
            while not Hook.received and time.monotonic() < deadline:
                time.sleep(0.1)
            assert Hook.received, "the webhook was never delivered"
            assert s.tel.store.get_case(cid).webhook_state == "delivered"
    finally:
        hook.shutdown()
    [(payload, raw, sig)] = Hook.received
    assert payload["event"] == "review.resolved" and payload["case"]["id"] == cid
    assert payload["case"]["resolution"]["label"] == "refund"
    assert sig == "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
    assert metric("slmfleet_router_review_webhook_failures_total", queue="tier2") - before == 1
