"""The router's decision log on real SQLite and PostgreSQL, through the official openai
client against the real Triton: one record per request with its route, scores, every
tier attempt and the texts its policy allows; feedback for it joins; a store that goes
down never fails a request."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from slmfleet.router.metrics import REGISTRY

from .telemetry_router import client_for, telemetry_router, wait_decision
from .telemetry_support import CLIENT_KEY, sqlite_url

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def router(request, triton, tmp_path):
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("pg_url")
    with telemetry_router(triton.grpc_url, url, tmp_path) as r:
        yield r


def ask(client: openai.OpenAI, model: str, text: str, **kw):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw
    )
    return raw.parse(), raw.headers


def test_a_request_is_logged_with_every_tier_and_feedback_joins(router):
    client = client_for(router)
    store = router.app.telemetry.store
    resp, h = ask(client, "support", "give me my money back")
    rid = h["x-slmfleet-request-id"]
    rec = wait_decision(store, rid)
    assert rec["request_id"] == rid and rec["policy"] == "support" and rec["status"] == 200
    assert rec["route"]["specialist"] == "shop/billing" and rec["route"]["source"] == "rule:refunds"
    assert rec["tier"] == "large" and rec["target"] == "shop/generalist" and rec["accepted"]
    small, large = rec["attempts"]
    assert small["tier"] == "routed" and small["outcome"] == "rejected"
    assert small["reasons"] == ["label_threshold:refund"] and small["target"] == "shop/billing"
    assert 0 < small["answer_confidence"] < 0.97 and small["latency_ms"] > 0
    assert large["outcome"] == "accepted" and large["target"] == "shop/generalist"
    assert small["completion_tokens"] + large["completion_tokens"] == rec["tokens"]["output"]
    assert rec["tokens"]["input"] == resp.usage.prompt_tokens
    assert rec["tokens"]["output"] == resp.usage.completion_tokens
    assert rec["cost_usd"] == pytest.approx(float(h["x-slmfleet-cost-usd"]), abs=1e-8)
    lat = rec["latency_ms"]
    assert lat["total"] >= lat["upstream"] > 0 and lat["router"] >= 0
    # spec.decisionLog of "support": the texts, cut at 16 characters.
    assert rec["prompt"] == {"text": "give me my money", "chars": 21, "cut": True}
    assert rec["answer"]["text"] == resp.choices[0].message.content[:16]

    # Feedback through the same client and key: joined, idempotent, merged.
    body = {"request_id": rid, "rating": -1, "label": "refund"}
    first = client.post("/feedback", body=body, cast_to=object)
    again = client.post("/feedback", body=body, cast_to=object)
    same = {k: v for k, v in again.items() if k != "updated_at"}
    assert same == {k: v for k, v in first.items() if k != "updated_at"}
    assert first["rating"] == -1 and first["label"] == "refund"
    client.post("/feedback", body={"request_id": rid, "outcome": "called back"}, cast_to=object)
    rows = [r for r in store.labelled(0.0) if r.request_id == rid]
    assert len(rows) == 1
    row = rows[0].as_dict()
    assert row["source"] == "feedback" and row["correct_label"] == "refund"
    assert row["rating"] == -1 and row["outcome"] == "called back"
    assert row["route"] == "shop/billing" and row["tier"] == "large"
    assert row["attempts"][0]["reasons"] == ["label_threshold:refund"]

    with pytest.raises(openai.NotFoundError) as err:
        client.post(
            "/feedback", body={"request_id": "no-such-request", "rating": 1}, cast_to=object
        )
    assert err.value.body["code"] == "request_not_found"
    assert store.get_feedback("no-such-request") is None
    bad = openai.OpenAI(base_url=router.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.post("/feedback", body=body, cast_to=object)


def test_scores_stage_hashes_streams_and_what_is_not_logged(router):
    client = client_for(router)
    store = router.app.telemetry.store
    _resp, h = ask(client, "support", "where is my package, it has not arrived yet")
    rec = wait_decision(store, h["x-slmfleet-request-id"])
    scores = rec["route"]["scores"]
    assert set(scores) == {"shop/billing", "shop/shipping"}
    assert (
        scores["shop/shipping"] > scores["shop/billing"] and rec["route"]["source"] == "classifier"
    )
    assert rec["route"]["stage"] in ("cheap", "static", "full", "cache")

    # spec.decisionLog of "extract": hashed, never the text.
    text = "order id AB-12345 from bob@example.com"
    _resp, h = ask(client, "extract", text)
    rec = wait_decision(store, h["x-slmfleet-request-id"])
    assert set(rec["prompt"]) == {"sha256", "chars"} and rec["prompt"]["chars"] == len(text)
    assert "bob@example.com" not in str(rec) and rec["attempts"][0]["validators"] == {
        "order-json": True
    }
    # No decisionLog on "think": the router's default (off) keeps neither text.
    chunks = list(
        client.chat.completions.create(
            model="think", messages=[{"role": "user", "content": "what is 2 + 3"}], stream=True
        )
    )
    rid = chunks[0].id.removeprefix("chatcmpl-")
    rec = wait_decision(store, rid)
    assert rec["stream"] is True and "prompt" not in rec and "answer" not in rec
    assert rec["truncated"] is True and rec["tokens"]["reasoning"] == 8

    # An unknown model is a logged 404; an unauthenticated request is not logged.
    with pytest.raises(openai.NotFoundError) as err:
        ask(client, "no-such-model", "hi")
    rec404 = wait_decision(store, err.value.response.headers["x-slmfleet-request-id"])
    assert rec404["status"] == 404 and rec404["policy"] == "-" and rec404["attempts"] == []
    r401 = httpx.post(
        router.url + "/v1/chat/completions",
        json={"model": "support", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": "Bearer wrong"},
    )
    assert r401.status_code == 401
    _resp, h = ask(client, "support", "can you send me a copy of my invoice")
    wait_decision(store, h["x-slmfleet-request-id"])  # written after the 401 was handled
    assert store.get_decision(r401.headers["x-slmfleet-request-id"]) is None


def test_store_down_requests_are_served_and_readiness_says_so(triton, tmp_path, start_postgres):
    pg = start_postgres()
    with telemetry_router(triton.grpc_url, pg.url, tmp_path) as router:
        client = client_for(router)
        store = router.app.telemetry.store
        _resp, h = ask(client, "support", "where is my package")
        wait_decision(store, h["x-slmfleet-request-id"])
        pg.kill()
        _resp, h = ask(client, "support", "can you send me a copy of my invoice")  # served
        rid = h["x-slmfleet-request-id"]
        deadline = time.monotonic() + 10
        while True:
            ready = httpx.get(router.url + "/readyz")
            log = ready.json()["decision_log"]
            if not log["ok"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert ready.status_code == 200 and log["ok"] is False and log["buffered"] >= 1
        assert log["last_error"] == "see the router's log"  # never the store's address
        assert REGISTRY.get_sample_value("slmfleet_router_decision_store_up") == 0
        fb = httpx.post(
            router.url + "/v1/feedback",
            json={"request_id": rid, "rating": 1},
            headers={"authorization": f"Bearer {CLIENT_KEY}"},
            timeout=30,
        )
        assert fb.status_code == 503 and fb.json()["error"]["code"] == "store_unavailable"
        assert str(pg.port) not in fb.text
        pg.start()  # back: the buffered decision is written
        assert wait_decision(store, rid, timeout=20)["status"] == 200
