"""Regression tests for the router code-review findings (budgets, deadlines, accounting,
error bodies, caches, the review log, upstream timeouts, the circuit breaker)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import httpx
import orjson
import pytest

from slmfleet.api.budget import SpendWindow
from slmfleet.api.routerconfig import ExternalConfig as ExternalEndpoint
from slmfleet.api.routerconfig import RouterConfig
from slmfleet.router import upstream
from slmfleet.router.app import RouterApp, Settings
from slmfleet.router.breaker import Breaker
from slmfleet.router.egress import EgressPolicy
from slmfleet.router.engine import Decision, Engine
from slmfleet.router.errors import RouterError, UpstreamError
from slmfleet.router.protocol import parse_chat, parse_completion
from slmfleet.router.snapshot import build_snapshot
from slmfleet.router.upstream import ExternalClients, Piece, TritonPool
from tests.unit.test_router_app import CONFIG, FakePool, KeywordClassifier, spec, words

TINY = [{"window": "1h", "limitUsd": 0.00001, "action": "reject"}]


def cfg_with(policies=(), budgets=(), specialists=None):
    return {
        "specialists": specialists or CONFIG["specialists"],
        "policies": list(policies),
        "budgets": list(budgets),
    }


def one_tier(name, sid, **kw):
    return {
        "modelName": name,
        "id": f"ns/{name}",
        "specialists": [sid],
        "routing": {"semantic": {"enabled": False}},
        "cascade": [{"name": "routed", "routed": True}],
        **kw,
    }


class Pool(FakePool):
    """FakePool that also records each call's timeout."""

    def __init__(self, script):
        super().__init__(script)
        self.timeouts: list[float] = []

    def stream(self, endpoint, model, prompt, sampling, *, timeout_s, request_id=""):
        self.timeouts.append(timeout_s)
        return super().stream(
            endpoint, model, prompt, sampling, timeout_s=timeout_s, request_id=request_id
        )


def make(script, config, **engine_kw):
    snap = build_snapshot(RouterConfig.model_validate(config), classifier_factory=KeywordClassifier)
    pool = Pool(script)
    return snap, pool, Engine(pool, ExternalClients(), **engine_kw)


async def run(engine, snap, content, model, emit=None, **extra):
    req = parse_chat(
        {"model": model, "messages": [{"role": "user", "content": content}], **extra},
        max_messages=8,
    )
    d = Decision("rid")
    try:
        return await engine.run(snap, req, d, emit), d
    except RouterError as exc:
        exc.decision = d
        raise


def spent(engine, budget_id, window="1h"):
    w = engine.ledger.window(budget_id, SpendWindow(window=window, limit_usd=1, action="alert"))
    return w.total(time.time())


# ---- 1. budgets of a specialist apply however it is reached ---------------------------


async def test_direct_specialist_model_is_held_to_its_budgets():
    config = cfg_with(
        budgets=[
            {"id": "ns/cash", "spend": TINY, "specialists": ["ns/a"]},
            {"id": "ns/caps", "perRequest": {"maxOutputTokens": 2}, "specialists": ["ns/a"]},
        ]
    )
    snap, pool, eng = make({"ma": words("a b c d e f g h", 0.99)}, config)
    assert {b.id for b in snap.policies["ns/a"].budgets} == {"ns/cash", "ns/caps"}
    await run(eng, snap, "x" * 100, "ns/a")  # spends past the tiny limit
    assert pool.calls[0][2]["max_tokens"] == 2
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "x", "ns/a")
    assert e.value.status == 429 and e.value.code == "budget_exceeded"


async def test_routed_specialist_budget_rejects_and_is_charged_once():
    config = cfg_with(
        policies=[one_tier("p", "ns/a", budgets=["ns/cash"])],
        # ns/cash covers the policy and the specialist: charged once per call.
        budgets=[{"id": "ns/cash", "spend": TINY, "specialists": ["ns/a"], "policies": ["p"]}],
    )
    snap, _pool, eng = make({"ma": words("a b", 0.99)}, config)
    _, d = await run(eng, snap, "x" * 100, "p")
    assert spent(eng, "ns/cash") == pytest.approx(d.cost_usd)
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "x", "p")
    assert e.value.status == 429

    # A Budget covering only the specialist (not the policy) counts too.
    config = cfg_with(
        policies=[one_tier("p", "ns/a")],
        budgets=[{"id": "ns/spec", "spend": TINY, "specialists": ["ns/a"]}],
    )
    snap, _pool, eng = make({"ma": words("a b c d e f g h", 0.99)}, config)
    await run(eng, snap, "x", "p")
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "x", "p")
    assert e.value.status == 429


async def test_fixed_tier_specialist_budget_rejects_that_tier_only():
    config = cfg_with(
        policies=[
            {
                "modelName": "p",
                "id": "ns/p",
                "specialists": ["ns/a"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [
                    {"name": "big", "specialist": "ns/big"},
                    {"name": "small", "specialist": "ns/a"},
                ],
            }
        ],
        budgets=[{"id": "ns/bigcash", "spend": TINY, "specialists": ["ns/big"]}],
        specialists=[
            spec("a", "ma"),
            spec("big", "mbig", cost={"inputPerMillionUsd": 10, "outputPerMillionUsd": 10}),
        ],
    )
    snap, _pool, eng = make({"mbig": words("big", 0.99), "ma": words("small", 0.99)}, config)
    _, d = await run(eng, snap, "x", "p")
    assert d.tier == "big"
    out, d = await run(eng, snap, "x", "p")
    assert d.tier == "small" and d.escalations == ["big:budget_exceeded"]
    assert out.text.strip() == "small"


# ---- 2. routing text is bounded -------------------------------------------------------


async def test_routing_text_is_capped_before_rules_and_classifier():
    big = "alpha " + "x" * 2_000_000 + " omega"
    r = parse_chat({"model": "p", "messages": [{"role": "user", "content": big}]}, max_messages=4)
    assert len(r.routing_text) <= 3001 and r.prompt == big
    assert r.routing_text.startswith("alpha ") and r.routing_text.endswith(" omega")
    assert len(parse_completion({"model": "p", "prompt": big}).routing_text) <= 3001

    seen: list[int] = []

    class Recording(KeywordClassifier):
        def predict(self, text):
            seen.append(len(text))
            return super().predict(text)

    snap = build_snapshot(RouterConfig.model_validate(CONFIG), classifier_factory=Recording)
    eng = Engine(Pool({"ma": words("ok", 0.99)}), ExternalClients())
    req = replace(r, routing_text=big)  # built elsewhere: the engine bounds it too
    await eng.run(snap, req, Decision("r"))
    assert seen and max(seen) <= 3001


# ---- 3. maxLatencyMs is for the whole request -----------------------------------------


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


LATENCY_CFG = cfg_with(
    policies=[
        {
            "modelName": "p",
            "id": "ns/p",
            "specialists": ["ns/a"],
            "routing": {"semantic": {"enabled": False}},
            "budgets": ["ns/fast"],
            "cascade": [
                {"name": "routed", "routed": True, "accept": {"minAnswerConfidence": 0.8}},
                {"name": "large", "specialist": "ns/big"},
            ],
        }
    ],
    budgets=[{"id": "ns/fast", "perRequest": {"maxLatencyMs": 1000}}],
)


def slow(clock, seconds, result):
    def script(prompt, sampling):
        clock.t += seconds
        return result

    return script


async def test_max_latency_spans_every_tier():
    clock = Clock()
    script = {"ma": slow(clock, 0.7, words("meh", 0.1)), "mbig": words("fine", 0.99)}
    snap, pool, eng = make(script, LATENCY_CFG, clock=clock)
    _, d = await run(eng, snap, "x", "p")
    assert d.tier == "large"
    assert pool.timeouts[0] == pytest.approx(1.0)
    assert pool.timeouts[1] == pytest.approx(0.3)


async def test_no_time_left_returns_last_answer_or_504():
    clock = Clock()
    script = {"ma": slow(clock, 1.1, words("meh", 0.1)), "mbig": words("fine", 0.99)}
    snap, pool, eng = make(script, LATENCY_CFG, clock=clock)
    out, d = await run(eng, snap, "x", "p")
    assert out.text.strip() == "meh" and not d.accepted and d.tier == "routed"
    assert len(pool.calls) == 1  # no escalation once the time is up

    clock = Clock()
    script = {"ma": slow(clock, 1.1, UpstreamError("boom")), "mbig": words("fine", 0.99)}
    snap, pool, eng = make(script, LATENCY_CFG, clock=clock)
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "x", "p")
    assert e.value.status == 504 and e.value.code == "upstream_timeout"
    assert len(pool.calls) == 1


# ---- 4. fallback headers describe the answer returned ---------------------------------


async def test_fallback_to_earlier_answer_restores_its_headers():
    config = cfg_with(
        policies=[
            {
                "modelName": "p",
                "id": "ns/p",
                "specialists": ["ns/think"],
                "routing": {"semantic": {"enabled": False}},
                "budgets": ["ns/bud"],
                "cascade": [
                    {"name": "routed", "routed": True, "accept": {"minAnswerConfidence": 0.8}},
                    {"name": "large", "specialist": "ns/big"},
                ],
            }
        ],
        budgets=[{"id": "ns/bud", "perRequest": {"maxReasoningTokens": 1, "answerTokens": 3}}],
    )

    def think(prompt, sampling):
        if prompt.endswith("</think>"):
            return words("short answer", 0.2)
        return [("<think> ", None), *words("w1 w2 w3"), ("</think> ", None)]

    snap, _pool, eng = make({"mthink": think, "mbig": UpstreamError("down")}, config)
    out, d = await run(eng, snap, "x", "p")
    assert out.text.strip() == "short answer" and not d.accepted
    assert (d.tier, d.target, d.truncated) == ("routed", "ns/think", True)
    assert d.answer_confidence == pytest.approx(0.2)
    headers = dict(d.headers())
    assert headers[b"x-slmfleet-tier"] == b"routed"
    assert headers[b"x-slmfleet-target"] == b"ns/think"


# ---- 5. tokens generated before a failure are charged ---------------------------------


class PartialPool(Pool):
    """Yields some pieces, then fails."""

    def __init__(self, pieces, exc):
        super().__init__({})
        self.pieces, self.exc = pieces, exc

    async def _gen(self):
        for p in self.pieces:
            yield Piece(p, None)
        raise self.exc

    def stream(self, endpoint, model, prompt, sampling, *, timeout_s, request_id=""):
        self.calls.append((model, prompt, dict(sampling)))
        return self._gen()


MONEY = cfg_with(
    policies=[one_tier("money", "ns/a", budgets=["ns/cash"])],
    budgets=[{"id": "ns/cash", "spend": TINY}],
)


async def test_tokens_before_an_upstream_error_are_charged():
    snap = build_snapshot(RouterConfig.model_validate(MONEY))
    pool = PartialPool(["a ", "b ", "c ", "d "], UpstreamError("slow", timeout=True))
    eng = Engine(pool, ExternalClients())
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "x", "money")
    assert e.value.status == 504
    d = e.value.decision
    assert d.completion_tokens == 4 and d.cost_usd > 0
    assert spent(eng, "ns/cash") == pytest.approx(d.cost_usd)


async def test_tokens_before_a_client_disconnect_are_charged():
    class Gone(Exception):
        pass

    snap = build_snapshot(RouterConfig.model_validate(MONEY))
    eng = Engine(PartialPool(["a ", "b ", "c "], UpstreamError("never")), ExternalClients())
    n = 0

    async def emit(delta):
        nonlocal n
        n += 1
        if n == 2:
            raise Gone()

    req = parse_chat(
        {"model": "money", "messages": [{"role": "user", "content": "x"}]}, max_messages=4
    )
    d = Decision("r")
    with pytest.raises(Gone):
        await eng.run(snap, req, d, emit)
    assert d.completion_tokens == 2 and d.cost_usd > 0
    assert spent(eng, "ns/cash") == pytest.approx(d.cost_usd)


# ---- 6. errors are always OpenAI error bodies -----------------------------------------


def test_non_string_role_is_a_400_naming_the_field():
    with pytest.raises(RouterError) as e:
        parse_chat({"model": "m", "messages": [{"role": ["user"], "content": "x"}]}, max_messages=4)
    assert e.value.status == 400 and e.value.param == "messages[0].role"


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


MSG = {"model": "p", "messages": [{"role": "user", "content": "alpha"}]}


async def test_unexpected_exception_is_a_json_500():
    async with app_client(BrokenEngine(False)) as c:
        r = await c.post("/v1/chat/completions", json=MSG)
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
        r = await c.post("/v1/chat/completions", json={**MSG, "stream": True})
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"


async def test_unexpected_exception_mid_stream_ends_with_error_event():
    async with app_client(BrokenEngine(True)) as c:
        r = await c.post("/v1/chat/completions", json={**MSG, "stream": True})
    assert r.status_code == 200
    events = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    err = orjson.loads(events[-2])["error"]
    assert err["type"] == "server_error" and err["code"] == "internal_error"


# ---- 7. the classifier cache keeps only what is served --------------------------------


async def test_fit_cache_is_pruned_on_reload():
    app = RouterApp(classifier_factory=KeywordClassifier)
    for kw in ("alpha", "gamma", "delta"):
        cfg = orjson.loads(orjson.dumps(CONFIG))
        cfg["specialists"][0]["domain"]["keywords"] = [kw]
        assert await app.apply(orjson.dumps(cfg))
        assert len(app._fit_cache) == 1
        used = {id(p.classifier) for p in app.snapshot.policies.values() if p.classifier}
        assert {id(v) for v in app._fit_cache.values()} == used
    await app.shutdown()


# ---- 8. review cases survive --log-level error ----------------------------------------


async def test_review_cases_are_logged_whatever_the_log_level(capsys):
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.ERROR)
    try:
        snap, _pool, eng = make({"mbig": UpstreamError("boom")}, CONFIG)
        await run(eng, snap, "gamma", "p")
    finally:
        root.setLevel(old)
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "human_review" in ln]
    assert len(lines) == 1
    case = orjson.loads(lines[0])
    assert case["queue"] == "q" and case["messages"] == [{"role": "user", "content": "gamma"}]
    assert logging.getLogger("slmfleet.router.review").propagate is False


# ---- 9. a stuck shared-stream write respects the deadline ------------------------------


class StuckCall:
    async def read(self):
        await asyncio.Event().wait()

    async def write(self, req):
        await asyncio.Event().wait()

    def cancel(self):
        pass


class StuckStub:
    def ModelStreamInfer(self):
        return StuckCall()


class NoChannel:
    async def close(self, grace=None):
        pass


async def test_stuck_shared_write_times_out_and_kills_the_stream():
    pool = TritonPool()
    pool._stubs["h:1"] = (NoChannel(), StuckStub())
    t0 = time.monotonic()
    with pytest.raises(UpstreamError) as e:
        async with asyncio.timeout(5):
            async for _ in pool.shared_stream("h:1", "m", "p", {}, timeout_s=0.2, request_id="r"):
                pass
    assert e.value.timeout and time.monotonic() - t0 < 1.0
    assert any(s is not None and s.dead for s in pool._shared["h:1"])
    await pool.close()


# ---- 10. the external call, retry included, fits in the tier's time --------------------


async def test_external_call_with_retry_is_bounded_by_the_timeout():
    async def handler(request):
        await asyncio.sleep(0.3)
        raise httpx.ConnectError("refused", request=request)

    # The egress allow-list admits this host over http; the mock stands for the network.
    ext = ExternalClients(egress_policy=EgressPolicy.parse(["ext"], allow_http=True))
    ext._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    endpoint = ExternalEndpoint.model_validate({"baseUrl": "http://ext/v1", "model": "gpt"})
    t0 = time.monotonic()
    with pytest.raises(UpstreamError) as e:
        await ext.chat(endpoint, [], max_tokens=None, sampling={}, timeout_s=0.4, request_id="r")
    assert e.value.timeout and time.monotonic() - t0 < 0.55
    await ext.close()
    assert upstream.RETRY_ATTEMPTS == 2  # without the bound, two attempts take 0.65 s


# ---- 12. the circuit breaker counts only endpoint faults ------------------------------


async def test_budget_shortened_timeouts_do_not_open_the_circuit():
    config = cfg_with(
        policies=[one_tier("p", "ns/a", budgets=["ns/fast"])],
        budgets=[{"id": "ns/fast", "perRequest": {"maxLatencyMs": 50}}],
    )
    snap, pool, eng = make({"ma": UpstreamError("slow", timeout=True)}, config)
    for _ in range(4):
        with pytest.raises(RouterError):
            await run(eng, snap, "x", "p")
    assert len(pool.calls) == 4 and eng.breakers["h:1"].state == "closed"

    # The tier's own timeout still counts.
    snap, pool, eng = make({"ma": UpstreamError("slow", timeout=True)}, MONEY)
    for _ in range(4):
        with pytest.raises(RouterError):
            await run(eng, snap, "x", "money")
    assert len(pool.calls) == 3 and eng.breakers["h:1"].state == "open"


async def test_client_gone_is_not_a_success_and_frees_the_probe():
    snap = build_snapshot(RouterConfig.model_validate(MONEY))
    eng = Engine(PartialPool(["a ", "b "], UpstreamError("never")), ExternalClients())
    eng.breakers["h:1"] = Breaker("open", 3, eng.clock() - 10.0, False)

    async def emit(delta):
        raise ConnectionResetError()

    req = parse_chat(
        {"model": "money", "messages": [{"role": "user", "content": "x"}]}, max_messages=4
    )
    with pytest.raises(ConnectionResetError):
        await eng.run(snap, req, Decision("r"), emit)
    b = eng.breakers["h:1"]
    assert b.state == "half_open" and not b.probing
