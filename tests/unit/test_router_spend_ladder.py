"""The degrade ladder drives requests, a reservation bounds what the upstream may do, and
what a call costs is counted exactly (backend counts, usage, or the router's tokenizer).
The ledgers are the real ones: in-process, or Redis on a port nothing listens on."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from slmfleet.api.routerconfig import RouterConfig
from slmfleet.budget.amounts import Amount
from slmfleet.budget.ledger import BudgetLimits
from slmfleet.budget.redis_ledger import RedisLedger, RedisSettings
from slmfleet.budget.tokens import TokenizerCounter
from slmfleet.local.cluster import free_port
from slmfleet.router import metrics as m
from slmfleet.router.accounting import LedgerAccounting
from slmfleet.router.egress import EgressPolicy
from slmfleet.router.embed import model_dir
from slmfleet.router.engine import Engine
from slmfleet.router.errors import RouterError
from slmfleet.router.external import ExternalClients
from slmfleet.router.snapshot import build_snapshot
from tests.unit.router_fakes import (
    CAP8,
    FakePool,
    KeywordClassifier,
    cfg_with,
    make,
    one_tier,
    run,
    spec,
    spent,
    words,
)

LADDER = [
    {"atPercent": 50, "action": "halveReasoning"},
    {"atPercent": 80, "action": "degrade"},
]
WINDOW = {"window": "1h", "limitUsd": 1.0, "action": "reject"}


async def prespend(eng: Engine, snap, budget_id: str, usd: float) -> None:
    """Settle ``usd`` on a Budget's windows, as earlier traffic would have."""
    cfg = next(b for b in snap.config.budgets if b.id == budget_id)
    limits = [BudgetLimits.from_config(cfg)]
    hold = await eng.accounting.ledger.reserve(limits, Amount(), ttl_s=5, request_id="pre")
    await eng.accounting.ledger.settle(hold.reservation, Amount(usd, 0))


def headers(d) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in d.headers()}


# ---- halveReasoning --------------------------------------------------------------------


def thinker(prompt, sampling):
    if prompt.endswith("</think>"):
        return words("five")
    return [("<think> ", None), *words("a b c d e f g h"), ("</think> ", None), *words("late")]


THINK = cfg_with(
    policies=[one_tier("t", "ns/think", budgets=["ns/lad"])],
    budgets=[
        {
            "id": "ns/lad",
            "perRequest": {"maxReasoningTokens": 6, "answerTokens": 3},
            "spend": [WINDOW],
            "ladder": LADDER,
        }
    ],
)


async def test_halve_reasoning_step_halves_the_reasoning_cap():
    snap, _pool, eng = make({"mthink": thinker}, THINK)
    out, d = await run(eng, snap, "q", model="t")
    assert d.truncated and out.reasoning == "a b c d e f" and not d.reasoning_halved
    assert d.budget_step is None and "x-slmfleet-budget-step" not in headers(d)
    await prespend(eng, snap, "ns/lad", 0.6)
    out, d = await run(eng, snap, "q", model="t")
    assert out.reasoning == "a b c" and d.reasoning_halved
    h = headers(d)
    assert h["x-slmfleet-budget-step"] == "halveReasoning"
    assert h["x-slmfleet-budget-steps"] == "ns/lad:halveReasoning@50"
    assert h["x-slmfleet-budget-percent"] == "60"
    assert h["x-slmfleet-reasoning-halved"] == "true"
    assert d.summary()["budget_step"] == "halveReasoning"


# ---- degrade: cheapest eligible specialist, no costly escalation -----------------------


DEGRADE = {
    "specialists": [
        spec("cheap", "mcheap", domain={"keywords": ["alpha"]}),
        spec(
            "pricey",
            "mpricey",
            domain={"keywords": ["alpha"]},
            cost={"inputPerMillionUsd": 5, "outputPerMillionUsd": 5},
        ),
        spec("big", "mbig", cost={"inputPerMillionUsd": 9, "outputPerMillionUsd": 9}),
    ],
    "policies": [
        {
            "modelName": "p",
            "id": "ns/p",
            "specialists": ["ns/cheap", "ns/pricey"],
            "budgets": ["ns/lad"],
            "cascade": [
                {"name": "routed", "routed": True, "accept": {"minAnswerConfidence": 0.9}},
                {"name": "large", "specialist": "ns/big"},
            ],
        }
    ],
    "budgets": [{"id": "ns/lad", "spend": [WINDOW], "ladder": LADDER, "perRequest": CAP8}],
}


async def test_degrade_step_routes_cheapest_and_skips_costly_tiers():
    script = {"mcheap": words("c", 0.5), "mpricey": words("p", 0.5), "mbig": words("b", 0.99)}
    snap, _pool, eng = make(script, DEGRADE)
    before = m.BUDGET_STEPS.labels("p", "degrade")._value.get()
    _, d = await run(eng, snap, "alpha")  # a tie: the later id wins, the low answer escalates
    assert d.route == "ns/pricey" and d.tier == "large" and not d.degraded
    await prespend(eng, snap, "ns/lad", 0.85)
    _, d = await run(eng, snap, "alpha")
    assert d.degraded and d.route == "ns/cheap" and d.route_source == "cost"
    assert d.escalations == ["routed:low_answer_confidence", "large:budget_degrade"]
    assert d.budget_step == "degrade"
    assert d.budget_steps == ("ns/lad:halveReasoning@50", "ns/lad:degrade@80")
    assert headers(d)["x-slmfleet-degraded"] == "true"
    assert m.BUDGET_STEPS.labels("p", "degrade")._value.get() == before + 1


# ---- reject: 429 with Retry-After, from the ledger's atomic reserve --------------------


async def test_reject_at_the_limit_is_429_with_retry_after_and_the_step():
    snap, pool, eng = make({"mcheap": words("c", 0.99), "mpricey": words("p", 0.99)}, DEGRADE)
    await prespend(eng, snap, "ns/lad", 1.0)  # exhausted: even the free model is refused
    calls = len(pool.calls)
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "alpha")
    err = e.value
    assert err.status == 429 and err.code == "budget_exceeded"
    assert 1 <= int(err.headers["retry-after"]) <= 3600 + 60
    assert "ns/lad/1h" in err.message
    assert err.decision.budget_step == "reject" and len(pool.calls) == calls  # never called
    # The log line says why, as the atomic reserve saw it.
    detail = err.decision.summary()["budget_refusal"]
    assert detail["reason"] == "limit" and detail["refused_by"] == ["ns/lad/1h"]
    assert detail["windows"]["ns/lad/1h"]["spent_usd"] == pytest.approx(1.0)
    assert "x-slmfleet-budget-refusal" not in headers(err.decision)


async def test_a_request_too_large_for_the_window_is_429_at_once():
    config = cfg_with(
        policies=[one_tier("money", "ns/a", budgets=["ns/tiny"])],
        budgets=[{"id": "ns/tiny", "spend": [{"window": "day", "limitTokens": 10}]}],
    )
    # alert is the window's own action: no hard cap, the request is served
    snap, _pool, eng = make({"ma": words("ok", 0.99)}, config)
    await run(eng, snap, "hello", "money")
    config["budgets"][0]["ladder"] = [{"atPercent": 100, "action": "reject"}]
    snap, _pool, eng = make({"ma": words("ok", 0.99)}, config)
    with pytest.raises(RouterError) as e:  # 5 + 16 prompt tokens at worst, 4075 output
        await run(eng, snap, "hello", "money")
    assert e.value.status == 429 and "on its own" in e.value.message


# ---- what the upstream may do is what the reservation covers ---------------------------


async def test_a_caller_cannot_raise_what_the_reservation_covers():
    snap, pool, eng = make({"ma": words("a b c d e f g h i j", 0.99)})
    hostile = {"max_tokens": 10**6, "n": 8, "best_of": 8, "min_tokens": 10**5}
    await run(eng, snap, "x", "money", max_tokens=500, sampling_parameters=hostile)
    assert pool.calls[-1][2] == {"max_tokens": 8, "min_tokens": 8}  # the Budget's cap
    # No cap anywhere: what the model's context leaves after the prompt (its byte
    # bound, 5 + 16), never the caller's number.
    await run(eng, snap, "alpha", "p", sampling_parameters={"max_tokens": 10**6})
    assert pool.calls[-1][2] == {"max_tokens": 4096 - 21}


# ---- counting when the backend does not count ------------------------------------------


async def test_without_backend_counts_the_router_tokenizer_counts():
    tokenizer = TokenizerCounter.from_file(model_dir() / "tokenizer.json")
    config = cfg_with(
        policies=[one_tier("money", "ns/a", budgets=["ns/cash"])],
        budgets=[{"id": "ns/cash", "spend": [{"window": "1h", "limitUsd": 1}]}],
    )
    snap = build_snapshot(RouterConfig.model_validate(config))
    text = "Ünïcödé refunds, please: order #12345"
    pool = FakePool({"ma": words("refund issued today", 0.99)}, counts=False)
    eng = Engine(pool, ExternalClients(), counter=tokenizer)
    _, d = await run(eng, snap, text, "money")
    assert d.prompt_tokens == tokenizer.count(text)
    assert d.completion_tokens == max(3, tokenizer.count("refund issued today "))
    assert spent(eng, "ns/cash") == pytest.approx(d.cost_usd)
    # Without a tokenizer: the input's byte bound (safe side), the output's deltas.
    eng = Engine(
        FakePool({"ma": words("refund issued today", 0.99)}, counts=False), ExternalClients()
    )
    _, d = await run(eng, snap, text, "money")
    assert d.prompt_tokens == len(text.encode()) and d.completion_tokens == 3


# ---- the shared ledger down: each Budget's fail mode -----------------------------------


def down_ledger() -> RedisLedger:
    """The real Redis client, pointed at a port nothing listens on."""
    port = free_port()
    return RedisLedger(RedisSettings(url=f"redis://127.0.0.1:{port}/0", timeout_s=0.2))


@pytest.mark.parametrize("mode", ["failOpen", "failClosed"])
async def test_ledger_down_follows_the_fail_mode(mode):
    config = cfg_with(
        policies=[one_tier("money", "ns/a", budgets=["ns/cash"])],
        budgets=[
            {"id": "ns/cash", "spend": [WINDOW], "perRequest": CAP8, "failMode": mode},
        ],
    )
    snap = build_snapshot(RouterConfig.model_validate(config))
    acc = LedgerAccounting(down_ledger())
    eng = Engine(FakePool({"ma": words("ok", 0.99)}), ExternalClients(), accounting=acc)
    try:
        if mode == "failClosed":
            with pytest.raises(RouterError) as e:
                await run(eng, snap, "x", "money")
            assert e.value.status == 429 and e.value.code == "budget_ledger_unavailable"
            assert int(e.value.headers["retry-after"]) >= 1
            assert not e.value.decision.ledger_available
        else:
            _, d = await run(eng, snap, "x", "money")
            assert d.status == 200 and not d.ledger_available
            assert headers(d)["x-slmfleet-ledger"] == "unavailable"
            await acc.drain()  # a shared ledger settles in the background
            assert acc.ledger.pending == 1  # counted locally, replayed when Redis is back
        assert m.LEDGER_AVAILABLE._value.get() == 0
    finally:
        await eng.aclose()


# ---- the external tier: usage, reasoning apart, unknown outcomes -----------------------


def external_snapshot(base_url: str) -> Any:
    """A policy whose only tier is an external endpoint at ``base_url``, under a spend
    window and an 8-token output cap."""
    config = cfg_with(
        policies=[
            {
                "modelName": "ext",
                "id": "ns/ext",
                "specialists": ["ns/a"],
                "routing": {"semantic": {"enabled": False}},
                "budgets": ["ns/cash"],
                "cascade": [
                    {
                        "name": "vendor",
                        "external": {
                            "baseUrl": base_url,
                            "model": "big",
                            "inputPerMillionUsd": 3,
                            "outputPerMillionUsd": 6,
                        },
                        "timeoutMs": 300,
                    }
                ],
            }
        ],
        budgets=[{"id": "ns/cash", "spend": [{"window": "1h", "limitUsd": 1}], "perRequest": CAP8}],
    )
    return build_snapshot(RouterConfig.model_validate(config), classifier_factory=KeywordClassifier)


def external_engine(handler):
    snap = external_snapshot("http://ext/v1")
    clients = ExternalClients(egress_policy=EgressPolicy.parse(["ext"], allow_http=True))
    clients._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return snap, Engine(FakePool({}), clients)


async def test_external_usage_is_settled_with_reasoning_apart():
    seen = []

    async def handler(request):
        seen.append(orjson.loads(request.content))
        usage = {
            "prompt_tokens": 11,
            "completion_tokens": 7,
            "completion_tokens_details": {"reasoning_tokens": 3},
        }
        body = {"choices": [{"message": {"content": "fine"}}], "usage": usage}
        return httpx.Response(200, json=body)

    snap, eng = external_engine(handler)
    _, d = await run(eng, snap, "hello", "ext")
    assert seen[0]["max_tokens"] == 8  # the reserved cap, always sent
    assert (d.prompt_tokens, d.completion_tokens, d.reasoning_tokens) == (11, 7, 3)
    assert (
        spent(eng, "ns/cash") == pytest.approx((11 * 3 + 7 * 6) / 1e6) == pytest.approx(d.cost_usd)
    )


async def test_external_http_error_costs_nothing():
    # A timeout (the worst case, charged and recorded) and a connection never made (nothing)
    # are tested on real local servers in test_router_external.py.
    async def refused(request):
        return httpx.Response(400, json={"error": {"message": "no"}})

    snap, eng = external_engine(refused)
    with pytest.raises(RouterError):
        await run(eng, snap, "hello", "ext")
    assert spent(eng, "ns/cash") == 0.0


# ---- settling in the background ----------------------------------------------------------


async def test_a_background_settle_lands_before_the_same_requests_next_reservation():
    """The answer does not wait for the settle; an escalation waits for it, so the
    previous tier's worst case never blocks the next tier of the same request."""
    priced = {"cost": {"inputPerMillionUsd": 1, "outputPerMillionUsd": 2}}
    config = cfg_with(
        specialists=[spec("a", "ma", **priced), spec("a2", "ma2", **priced)],
        policies=[
            {
                **one_tier("esc", "ns/a", budgets=["ns/cash"]),
                "cascade": [
                    {"name": "first", "routed": True, "accept": {"minAnswerConfidence": 0.9}},
                    {"name": "second", "specialist": "ns/a2"},
                ],
            }
        ],
        # Each tier reserves 21 + 16 = $0.000037; two holds do not fit $0.00006, the
        # first tier's settled $0.000003 and the second's hold do.
        budgets=[
            {
                "id": "ns/cash",
                "spend": [{"window": "1h", "limitUsd": 0.00006, "action": "reject"}],
                "perRequest": CAP8,
            }
        ],
    )
    snap = build_snapshot(RouterConfig.model_validate(config))
    acc = LedgerAccounting(settle_in_background=True)
    pool = FakePool({"ma": words("ok", 0.5), "ma2": words("fine", 0.99)})
    eng = Engine(pool, ExternalClients(), accounting=acc)
    _, d = await run(eng, snap, "alpha", "esc")
    assert d.tier == "second" and d.escalations == ["first:low_answer_confidence"]
    await acc.drain()
    assert spent(eng, "ns/cash") == pytest.approx(d.cost_usd) == pytest.approx(6e-6)
