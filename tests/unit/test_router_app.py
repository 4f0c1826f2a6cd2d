"""Protocol parsing, the engine over a fake upstream, and the ASGI app's error answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from slmfleet.api.routerconfig import RouterConfig
from slmfleet.router.app import RouterApp, Settings
from slmfleet.router.engine import Decision, Engine
from slmfleet.router.errors import RouterError, UpstreamError
from slmfleet.router.external import ExternalClients
from slmfleet.router.protocol import chat_prompt, parse_chat, parse_completion
from slmfleet.router.snapshot import build_snapshot
from slmfleet.router.triton import Piece


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ([], "invalid_request"),
        ({"messages": [{"role": "user", "content": "x"}]}, "invalid_request"),
        ({"model": "m", "messages": []}, "invalid_request"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "invalid_request"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}] * 3}, "too_many_messages"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "invalid_request",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
            "invalid_request",
        ),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "invalid_request"),
    ],
)
def test_parse_chat_rejects(body, code):
    with pytest.raises(RouterError) as e:
        parse_chat(body, max_messages=2)
    assert e.value.status == 400 and e.value.code == code


def test_parse_chat_and_prompt():
    r = parse_chat(
        {
            "model": "m",
            "stream": True,
            "max_tokens": 5,
            "temperature": 0.1,
            "sampling_parameters": {"think_tokens": 3},
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
        },
        max_messages=8,
    )
    assert r.prompt == "Be brief.\n\nhi" and r.routing_text == "hi"
    assert r.sampling == {"temperature": 0.1, "think_tokens": 3} and r.max_tokens == 5
    assert chat_prompt(
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ]
    ) == ("user: a\nassistant: b\nuser: c\nassistant:")
    assert parse_completion({"model": "m", "prompt": ["x"]}).prompt == "x"


# ---- engine over a fake Triton -------------------------------------------------------


class FakePool:
    """Scripted upstream: model name -> list of deltas, or an exception."""

    def __init__(self, script):
        self.script = script
        self.calls: list[tuple[str, str, dict]] = []

    async def stream(
        self, endpoint, model, prompt, sampling, *, timeout_s, request_id="", **_
    ) -> AsyncIterator[Piece]:
        self.calls.append((model, prompt, dict(sampling)))
        out = self.script[model]
        if callable(out):
            out = out(prompt, sampling)
        if isinstance(out, Exception):
            raise out
        for text, conf in out:
            yield Piece(text, conf)

    async def forget(self, keep):
        pass

    async def close(self):
        pass


class KeywordClassifier:
    def __init__(self, domains):
        self.kw = {sid: set(d.keywords) for sid, d in domains.items()}

    def predict(self, text):
        words = set(text.lower().split())
        scores = {sid: (0.9 if kw & words else 0.1) for sid, kw in self.kw.items()}

        class S:
            pass

        s = S()
        s.scores = scores
        return s


def spec(name, model, **kw):
    return {
        "id": f"ns/{name}",
        "endpoint": "h:1",
        "tritonModel": model,
        "backend": "python",
        "ready": True,
        **kw,
    }


CONFIG = {
    "specialists": [
        spec(
            "a",
            "ma",
            domain={"keywords": ["alpha"]},
            cost={"inputPerMillionUsd": 1, "outputPerMillionUsd": 2},
        ),
        spec("b", "mb", domain={"keywords": ["beta"]}),
        spec("big", "mbig"),
        spec("think", "mthink", reasoning={}),
    ],
    "policies": [
        {
            "modelName": "p",
            "id": "ns/p",
            "specialists": ["ns/a", "ns/b"],
            "cascade": [
                {"name": "routed", "routed": True, "accept": {"minAnswerConfidence": 0.8}},
                {"name": "large", "specialist": "ns/big"},
                {"name": "review", "human": {"queue": "q", "message": "later"}},
            ],
        },
        {
            "modelName": "t",
            "id": "ns/t",
            "specialists": ["ns/think"],
            "routing": {"semantic": {"enabled": False}},
            "budgets": ["ns/bud"],
            "cascade": [{"name": "routed", "routed": True}],
        },
        {
            "modelName": "money",
            "id": "ns/money",
            "specialists": ["ns/a"],
            "routing": {"semantic": {"enabled": False}},
            "budgets": ["ns/cash"],
            "cascade": [{"name": "routed", "routed": True}],
        },
    ],
    "budgets": [
        {"id": "ns/bud", "perRequest": {"maxReasoningTokens": 2, "answerTokens": 3}},
        {"id": "ns/cash", "spend": [{"window": "1h", "limitUsd": 0.00001, "action": "reject"}]},
    ],
}


def words(text, conf=None):
    return [(w + " ", conf) for w in text.split()]


def make(script, config=CONFIG):
    snap = build_snapshot(RouterConfig.model_validate(config), classifier_factory=KeywordClassifier)
    pool = FakePool(script)
    return snap, pool, Engine(pool, ExternalClients())


async def run(engine, snap, content, model="p", **extra):
    req = parse_chat(
        {"model": model, "messages": [{"role": "user", "content": content}], **extra},
        max_messages=8,
    )
    d = Decision("rid")
    out = await engine.run(snap, req, d)
    return out, d


async def test_routes_and_accepts():
    snap, _pool, eng = make({"ma": words("alpha answer", 0.95)})
    out, d = await run(eng, snap, "about alpha")
    assert out.text == "alpha answer " and d.route == "ns/a" and d.tier == "routed"
    assert d.escalations == [] and d.prompt_tokens == 3 and d.completion_tokens == 2
    assert d.cost_usd == pytest.approx((3 * 1 + 2 * 2) / 1e6)


async def test_low_answer_confidence_escalates_with_reason():
    snap, _pool, eng = make({"mb": words("unsure", 0.3), "mbig": words("sure", 0.99)})
    out, d = await run(eng, snap, "beta thing")
    assert out.text.strip() == "sure" and d.tier == "large" and d.target == "ns/big"
    assert d.escalations == ["routed:low_answer_confidence"]


async def test_out_of_domain_and_errors_fall_through_to_human():
    snap, _pool, eng = make({"mbig": UpstreamError("boom")})
    out, d = await run(eng, snap, "gamma")
    assert d.escalations == ["routing:out_of_domain", "large:error"]
    assert out.text == "later" and d.human_queue == "q" and d.target == "human:q"


async def test_all_tiers_fail_is_502_and_timeout_504():
    cfg = {
        **CONFIG,
        "policies": [
            {
                "modelName": "p",
                "id": "ns/p",
                "specialists": ["ns/a"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [{"name": "routed", "routed": True}],
            }
        ],
    }
    snap, _pool, eng = make({"ma": UpstreamError("boom")}, cfg)
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "x")
    assert e.value.status == 502
    snap, _pool, eng = make({"ma": UpstreamError("slow", timeout=True)}, cfg)
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "x")
    assert e.value.status == 504


async def test_trace_budget_cuts_and_answers():
    def think(prompt, sampling):
        if prompt.endswith("</think>"):
            return words("the answer is 5 and more words here")[: sampling["max_tokens"]]
        return [("<think> ", None), *words("w1 w2 w3 w4 w5"), ("</think> ", None), *words("late")]

    snap, pool, eng = make({"mthink": think})
    out, d = await run(eng, snap, "2+3?", model="t")
    assert d.truncated and out.text == "the answer is " and out.reasoning == "w1 w2"
    assert pool.calls[1][1] == "2+3?<think> w1 w2 </think>"
    assert pool.calls[1][2]["max_tokens"] == 3
    assert d.reasoning_tokens == 2 and d.completion_tokens == 5


async def test_request_max_tokens_lowers_the_cap():
    snap, pool, eng = make({"ma": words("one two three four", 0.99)})
    out, _d = await run(eng, snap, "alpha", max_tokens=2)
    assert pool.calls[0][2]["max_tokens"] == 2
    assert out.text == "one two " and out.finish_reason == "length"


async def test_spend_reject_is_429_with_retry_after():
    snap, _pool, eng = make({"ma": words("a b c d e f g h", 0.99)})
    await run(eng, snap, "alpha", model="money")  # spends past the tiny limit
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "alpha", model="money")
    assert e.value.status == 429 and int(e.value.headers["retry-after"]) >= 1


async def test_circuit_breaker_opens_and_skips():
    cfg = {
        **CONFIG,
        "policies": [
            {
                "modelName": "p",
                "id": "ns/p",
                "specialists": ["ns/a"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [{"name": "routed", "routed": True}, {"name": "review", "human": {}}],
            }
        ],
    }
    down = UpstreamError("UNAVAILABLE", retryable=True)
    snap, pool, eng = make({"ma": down}, cfg)
    for _ in range(3):
        await run(eng, snap, "x")
    _, d = await run(eng, snap, "x")
    assert d.escalations == ["routed:circuit_open"] and len(pool.calls) == 3


# ---- the ASGI app's errors -------------------------------------------------------------


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
