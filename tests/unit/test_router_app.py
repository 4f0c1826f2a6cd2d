"""The ASGI app's answers: OpenAI error bodies, models, health, metrics."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from slmfleet.api.routerconfig import RouterConfig
from slmfleet.router import metrics as m
from slmfleet.router.app import RouterApp, Settings
from slmfleet.router.snapshot import build_snapshot
from slmfleet.router.triton import Piece
from tests.unit.router_fakes import (
    CONFIG,
    FakePool,
    KeywordClassifier,
    cfg_with,
    make,
    one_tier,
    spent,
    words,
)


@pytest.fixture
def client():
    snap, _pool, eng = make({"ma": words("alpha answer", 0.95)})
    app = RouterApp(
        settings=Settings(max_body_bytes=2000, max_messages=4, api_keys=frozenset({"k1"})),
        engine=eng,
    )
    app.snapshot = snap
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://r",
        headers={"authorization": "Bearer k1"},
    )


MSG = [{"role": "user", "content": "alpha"}]


MSG_BODY = {"model": "p", "messages": [{"role": "user", "content": "alpha"}]}


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"content": b"{oops"}, 400, "invalid_json"),
        ({"json": {"model": "nope", "messages": MSG}}, 404, "model_not_found"),
        (
            {"content": orjson.dumps({"model": "p", "messages": MSG, "pad": "x" * 3000})},
            413,
            "request_too_large",
        ),
        ({"json": {"model": "p", "messages": MSG * 5}}, 400, "too_many_messages"),
        (
            {"json": {"model": "p", "messages": MSG}, "headers": {"authorization": "Bearer no"}},
            401,
            "invalid_api_key",
        ),
    ],
)
async def test_error_bodies(client, kwargs, status, code):
    r = await client.post("/v1/chat/completions", **kwargs)
    assert r.status_code == status
    err = r.json()["error"]
    assert err["code"] == code and set(err) == {"message", "type", "param", "code"}
    assert r.headers["x-slmfleet-request-id"]


async def test_ok_models_health(client):
    r = await client.post("/v1/chat/completions", json={"model": "p", "messages": MSG})
    assert r.status_code == 200 and r.headers["x-slmfleet-route"] == "ns/a"
    assert r.json()["choices"][0]["message"]["content"] == "alpha answer "
    ids = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
    assert {"p", "t", "ns/a", "ns/big"} <= set(ids)
    assert (await client.get("/readyz")).status_code == 200
    assert "slmfleet_router_requests_total" in (await client.get("/metrics")).text


class BrokenEngine:
    def __init__(self, emit_first: bool):
        self.emit_first = emit_first

    async def run(self, snap, req, d, emit=None, **_):
        if self.emit_first and emit is not None:
            await emit("partial")
        raise RuntimeError("bug")


def app_client(engine):
    app = RouterApp(settings=Settings(), engine=engine)
    app.snapshot = build_snapshot(
        RouterConfig.model_validate(CONFIG), classifier_factory=KeywordClassifier
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r")


async def test_unexpected_exception_is_a_json_500():
    async with app_client(BrokenEngine(False)) as c:
        r = await c.post("/v1/chat/completions", json=MSG_BODY)
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {
            "error": {
                "message": "internal server error",
                "type": "server_error",
                "param": None,
                "code": "internal_error",
            }
        }
        r = await c.post(
            "/v1/chat/completions",
            json={"model": "p", "messages": [{"role": ["user"], "content": "x"}]},
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].role"
        # Not started yet: a stream gets the 500 body too.
        r = await c.post("/v1/chat/completions", json={**MSG_BODY, "stream": True})
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"


async def test_unexpected_exception_mid_stream_ends_with_error_event():
    async with app_client(BrokenEngine(True)) as c:
        r = await c.post("/v1/chat/completions", json={**MSG_BODY, "stream": True})
    assert r.status_code == 200
    events = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    err = orjson.loads(events[-2])["error"]
    assert err["type"] == "server_error" and err["code"] == "internal_error"


# ---- a client that leaves cancels its request ----------------------------------------


class Hanging(FakePool):
    """The routed model sends one token, then hangs until cancelled."""

    def __init__(self):
        super().__init__({})
        self.cancelled = asyncio.Event()

    async def stream(self, endpoint, model, prompt, sampling, *, timeout_s, request_id="", **kw):
        self.calls.append((model, prompt, dict(sampling)))
        try:
            yield Piece("partial ", 0.99, output_tokens=1, input_tokens=len(prompt.split()))
            await asyncio.Event().wait()
        finally:
            self.cancelled.set()


async def _drive(app, body: dict, leave_after: float):
    """One request straight through the ASGI interface; the client leaves after a while."""
    sent: list[dict] = []
    first = True

    async def receive():
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": orjson.dumps(body), "more_body": False}
        await asyncio.sleep(leave_after)
        return {"type": "http.disconnect"}

    async def send(msg):
        sent.append(msg)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"content-type", b"application/json")],
    }
    await asyncio.wait_for(app(scope, receive, send), 5)
    return sent


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_leaves_cancels_the_work_and_the_charging(stream):
    config = cfg_with(
        policies=[
            {
                **one_tier("money", "ns/a", budgets=["ns/cash"]),
                "cascade": [
                    {"name": "routed", "routed": True},
                    {"name": "large", "specialist": "ns/big"},
                ],
            }
        ],
        budgets=[
            {"id": "ns/cash", "spend": [{"window": "1h", "limitUsd": 100, "action": "alert"}]}
        ],
    )
    snap, _pool, eng = make({}, config)
    pool = Hanging()
    eng.specialist_tier.pool = pool
    app = RouterApp(settings=Settings(), engine=eng)
    app.snapshot = snap
    before = m.REQUESTS.labels("money", "routed", "499")._value.get()
    body = {"model": "money", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    sent = await _drive(app, body, leave_after=0.1)
    assert pool.cancelled.is_set()  # the upstream call was closed
    assert len(pool.calls) == 1  # no further tier ran
    if stream:  # the first token went out before the client left, nothing after
        assert [s for s in sent if s["type"] == "http.response.body"][-1]["more_body"]
    else:
        assert sent == []  # nothing answered to nobody
    assert m.REQUESTS.labels("money", "routed", "499")._value.get() == before + 1
    # Charged for what was generated before the client left (one token), no more.
    assert spent(eng, "ns/cash") == pytest.approx((1 * 1 + 1 * 2) / 1e6)
    eng.close()
