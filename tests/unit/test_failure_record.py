"""The decision record of requests that fail: the status a stream that failed mid-way
would have had, never ``accepted`` without an accepted answer, and no review queue named
for a review tier that filed no case."""

from __future__ import annotations

import httpx
import orjson
import pytest

from slmfleet.router import metrics as m
from slmfleet.router.answering import midstream_error
from slmfleet.router.app import RouterApp, Settings
from slmfleet.router.engine import Engine
from slmfleet.router.errors import RouterError, UpstreamError
from slmfleet.router.external import ExternalClients
from slmfleet.router.tiers.human import HumanTier
from tests.unit.router_fakes import PartialPool, cfg_with, make, one_tier, run, words
from tests.unit.test_router_attempts import REVIEW, FakeReview


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (UpstreamError("svc-a.ns:8001 read", timeout=True), 504, "upstream_timeout"),
        (UpstreamError("svc-a.ns:8001 reset"), 502, "upstream_error"),
        (UpstreamError("svc-a.ns gone", reason="unready"), 502, "upstream_error"),
        (RouterError(503, "no replica", code="no_replica"), 503, "no_replica"),
        (RouterError(429, "over budget", code="budget_exceeded"), 429, "budget_exceeded"),
    ],
)
def test_a_stream_that_fails_midway_keeps_the_status_it_would_have_had(exc, status, code):
    err = midstream_error(exc)
    assert (err.status, err.body()["error"]["code"]) == (status, code)
    assert err.body()["error"]["type"] == "upstream_error"
    assert "svc-a" not in err.message  # the public message, not the internal one


@pytest.mark.parametrize(("timeout", "status"), [(True, "504"), (False, "502")])
async def test_a_timeout_mid_stream_is_recorded_504(timeout, status):
    snap, _pool, _eng = make({}, cfg_with(policies=[one_tier("solo", "ns/a")]))
    pool = PartialPool(["partial "], UpstreamError("read timed out", timeout=timeout))
    app = RouterApp(settings=Settings(), engine=Engine(pool, ExternalClients()))
    app.snapshot = snap

    def count() -> float:
        labels = {"policy": "solo", "tier": "routed", "status": status}
        return m.REGISTRY.get_sample_value("slmfleet_router_requests_total", labels) or 0.0

    before = count()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c:
        r = await c.post(
            "/v1/chat/completions",
            json={"model": "solo", "stream": True, "messages": [{"role": "user", "content": "q"}]},
        )
    assert r.status_code == 200 and pool.calls  # the 200 went out with the first token
    events = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "partial" in events[-3]
    err = orjson.loads(events[-2])["error"]
    assert err["code"] == ("upstream_timeout" if timeout else "upstream_error")
    assert count() == before + 1


async def test_a_failed_request_is_not_accepted():
    snap, _pool, eng = make(
        {"ma": UpstreamError("down")}, cfg_with(policies=[one_tier("solo", "ns/a")])
    )
    with pytest.raises(RouterError) as err:
        await run(eng, snap, "alpha", model="solo")
    d = err.value.decision
    assert err.value.status == 502 and not d.accepted
    assert (b"x-slmfleet-accepted", b"false") in d.headers()
    assert d.summary()["accepted"] is False


async def test_an_answered_request_is_accepted():
    snap, _pool, eng = make({"ma": words("alpha answer", 0.95)})
    _out, d = await run(eng, snap, "alpha question")
    assert d.accepted and (b"x-slmfleet-accepted", b"false") not in d.headers()


async def test_a_review_tier_that_filed_nothing_names_no_queue():
    review = FakeReview(fail=True)  # the store is down: review_unavailable
    snap, _pool, eng = make(
        {"ma": words("refund maybe", 0.4), "mbig": words("big answer", 0.99)}, REVIEW
    )
    eng.human_tier = HumanTier(review)
    out, d = await run(eng, snap, "I want my money", model="r")
    assert out.text == "big answer " and d.tier == "large" and d.target == "ns/big"
    assert "review:review_unavailable" in d.escalations
    assert d.human_queue is None and d.case_id is None
    names = [k for k, _v in d.headers()]
    assert b"x-slmfleet-human-review" not in names and b"x-slmfleet-review-case" not in names
    assert d.summary()["human_review"] is None
