"""Which Budgets apply to a request, however it reaches a specialist, and their 429."""

from __future__ import annotations

import pytest

from slmfleet.router.errors import RouterError
from tests.unit.router_fakes import (
    CAP8,
    TINY,
    cfg_with,
    make,
    one_tier,
    run,
    spec,
    spent,
    words,
)


async def test_spend_reject_is_429_with_retry_after():
    snap, _pool, eng = make({"ma": words("a b c d e f g h", 0.99)})
    await run(eng, snap, "alpha", model="money")  # spends past the tiny limit
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "alpha", model="money")
    assert e.value.status == 429 and int(e.value.headers["retry-after"]) >= 1


async def test_direct_specialist_model_is_held_to_its_budgets():
    config = cfg_with(
        budgets=[
            {"id": "ns/cash", "spend": TINY, "specialists": ["ns/a"]},
            {"id": "ns/caps", "perRequest": {"maxOutputTokens": 2}, "specialists": ["ns/a"]},
        ]
    )
    snap, pool, eng = make({"ma": words("a b c d e f g h", 0.99)}, config)
    assert {b.id for b in snap.policies["ns/a"].budgets} == {"ns/cash", "ns/caps"}
    # Reserves 27 + 16 input (byte bound) + 2 x 2 output = $0.000047 of $0.00005, settles
    # $0.00001: the same request again no longer fits.
    prompt = "one two three four five six"
    await run(eng, snap, prompt, "ns/a")
    assert pool.calls[0][2]["max_tokens"] == 2
    assert spent(eng, "ns/cash") == pytest.approx((6 + 2 * 2) / 1e6)
    with pytest.raises(RouterError) as e:
        await run(eng, snap, prompt, "ns/a")
    assert e.value.status == 429 and e.value.code == "budget_exceeded"


async def test_routed_specialist_budget_rejects_and_is_charged_once():
    config = cfg_with(
        policies=[one_tier("p", "ns/a", budgets=["ns/cash"])],
        # ns/cash covers the policy and the specialist: charged once per call.
        budgets=[
            {
                "id": "ns/cash",
                "spend": TINY,
                "perRequest": CAP8,
                "specialists": ["ns/a"],
                "policies": ["p"],
            }
        ],
    )
    snap, _pool, eng = make({"ma": words("a b", 0.99)}, config)
    _, d = await run(eng, snap, "x", "p")
    assert spent(eng, "ns/cash") == pytest.approx(d.cost_usd) == pytest.approx(5e-6)
    with pytest.raises(RouterError) as e:  # reserves 18 + 16 + 8 x 2: no room left
        await run(eng, snap, "x" * 18, "p")
    assert e.value.status == 429

    # A Budget covering only the specialist (not the policy) counts too.
    config = cfg_with(
        policies=[one_tier("p", "ns/a")],
        budgets=[{"id": "ns/spec", "spend": TINY, "perRequest": CAP8, "specialists": ["ns/a"]}],
    )
    snap, _pool, eng = make({"ma": words("a b c d e f g h", 0.99)}, config)
    await run(eng, snap, "xx", "p")  # reserves $0.000034, settles $0.000017
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "xx", "p")
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
        budgets=[
            {
                "id": "ns/bigcash",
                "spend": [{"window": "1h", "limitUsd": 0.00003, "action": "reject"}],
                "perRequest": CAP8,
                "specialists": ["ns/big"],
            }
        ],
        specialists=[
            spec("a", "ma"),
            spec("big", "mbig", cost={"inputPerMillionUsd": 1, "outputPerMillionUsd": 1}),
        ],
    )
    # big reserves $0.000025 of $0.00003 and settles $0.000009: the next one does not fit.
    snap, _pool, eng = make({"mbig": words("big " * 8, 0.99), "ma": words("small", 0.99)}, config)
    _, d = await run(eng, snap, "x", "p")
    assert d.tier == "big"
    out, d = await run(eng, snap, "x", "p")
    assert d.tier == "small" and d.escalations == ["big:budget_exceeded"]
    assert out.text.strip() == "small"


def _escalating_policy(limit_usd):
    """routed answers below its minAnswerConfidence, so the cascade escalates to large,
    whose worst case alone exceeds the policy's Budget (or not, with a large limit)."""
    return cfg_with(
        policies=[
            {
                "modelName": "p",
                "id": "ns/p",
                "specialists": ["ns/a"],
                "routing": {"semantic": {"enabled": False}},
                "budgets": ["ns/cash"],
                "cascade": [
                    {"name": "routed", "routed": True, "accept": {"minAnswerConfidence": 0.8}},
                    {"name": "large", "specialist": "ns/big"},
                ],
            }
        ],
        budgets=[
            {
                "id": "ns/cash",
                "spend": [{"window": "1h", "limitUsd": limit_usd, "action": "reject"}],
                "perRequest": CAP8,
            }
        ],
        specialists=[
            spec("a", "ma", cost={"inputPerMillionUsd": 1, "outputPerMillionUsd": 2}),
            spec("big", "mbig", cost={"inputPerMillionUsd": 10, "outputPerMillionUsd": 20}),
        ],
    )


async def test_a_refused_escalation_returns_the_answer_already_paid_for():
    # large reserves ~$0.0003 (30 prompt bytes x $10 + 8 x $20 per million) > $0.0002.
    snap, pool, eng = make(
        {"ma": words("small answer", 0.5), "mbig": words("big answer", 0.99)},
        _escalating_policy(0.0002),
    )
    out, d = await run(eng, snap, "hello alpha " * 3, model="p")
    assert out.text == "small answer " and d.accepted is False and d.tier == "routed"
    assert d.escalations == ["routed:low_answer_confidence", "large:budget_exceeded"]
    assert [(a.tier, a.outcome) for a in d.attempts] == [
        ("routed", "returned"),
        ("large", "skipped"),
    ]
    assert d.budget_step == "reject" and d.budget_refusal is not None
    assert [c[0] for c in pool.calls] == ["ma"]
    assert d.cost_usd > 0 and spent(eng, "ns/cash") == pytest.approx(d.cost_usd)
    # With room, the same request escalates and large answers.
    snap, pool, eng = make(
        {"ma": words("small answer", 0.5), "mbig": words("big answer", 0.99)},
        _escalating_policy(1.0),
    )
    out, d = await run(eng, snap, "hello alpha " * 3, model="p")
    assert out.text == "big answer " and d.accepted and d.tier == "large"


async def test_a_refused_first_tier_is_429_with_its_escalation():
    # routed (a) reserves ~$0.00005 on its own: over the $0.00004 cap, nothing to return.
    snap, pool, eng = make(
        {"ma": words("small answer", 0.5), "mbig": words("big answer", 0.99)},
        _escalating_policy(0.00004),
    )
    with pytest.raises(RouterError) as e:
        await run(eng, snap, "hello alpha " * 3, model="p")
    assert e.value.status == 429 and e.value.code == "budget_exceeded"
    assert e.value.decision.escalations == ["routed:budget_exceeded"]
    assert pool.calls == []
