"""Canary and shadow: the pure decisions (tables) and the engine applying them over a
scripted upstream (arms, automatic rollback, shadow comparison)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
import pytest

from slmfleet.api.routerconfig import RouterConfig
from slmfleet.budget.inprocess import InProcessLedger
from slmfleet.router import metrics as m
from slmfleet.router.accounting import LedgerAccounting
from slmfleet.router.engine import Decision, Engine
from slmfleet.router.errors import RouterError, UpstreamError
from slmfleet.router.external import ExternalClients
from slmfleet.router.protocol import parse_chat
from slmfleet.router.rollout import (
    ArmStats,
    agreement,
    arm_outcome,
    picked,
    rollback_decision,
)
from slmfleet.router.rollouts import shadow_log
from slmfleet.router.snapshot import build_snapshot
from tests.unit.router_fakes import CONFIG, FakePool, counted, make, spec, words


@pytest.mark.parametrize("percent", [0, 10, 25, 50, 90, 100])
def test_picked_share_is_the_percent_and_deterministic(percent):
    ids = [f"req-{i}" for i in range(4000)]
    share = sum(picked(i, percent, "salt") for i in ids) / len(ids)
    assert abs(share - percent / 100) < 0.03
    assert [picked(i, percent, "salt") for i in ids[:50]] == [
        picked(i, percent, "salt") for i in ids[:50]
    ]


def test_picked_depends_on_the_rollout():
    ids = [f"r{i}" for i in range(400)]
    assert [picked(i, 50, "a") for i in ids] != [picked(i, 50, "b") for i in ids]


@pytest.mark.parametrize(
    ("escalations", "failed", "outcome"),
    [
        ([], False, "ok"),
        ([], True, None),  # the request failed before the tier ran
        (["routed:error"], False, "error"),
        (["routed:timeout", "large:error"], True, "error"),
        (["routed:codec"], False, "error"),
        (["routed:label_threshold:refund"], False, "escalated"),
        (["routed:validator:json", "routed:low_answer_confidence"], False, "escalated"),
        (["routed:low_routing_confidence"], False, None),  # never ran: not the model's
        (["routed:budget_exceeded"], True, None),
        (["small:budget_exceeded"], True, None),  # ended before reaching routed: not its error
        (["routing:out_of_domain"], False, "ok"),  # other prefixes are not this tier's
        (["large:error"], False, "ok"),
    ],
)
def test_arm_outcome(escalations, failed, outcome):
    assert arm_outcome(escalations, "routed", failed=failed) == outcome


A = ArmStats


@pytest.mark.parametrize(
    ("incumbent", "candidate", "kw", "rollback", "reason"),
    [
        (A(100, 5), A(100, 30), {}, True, "worse"),
        (A(100, 5), A(100, 8), {}, False, "within_margin"),  # +3 points < 5-point margin
        (A(100, 5), A(100, 2), {}, False, "within_margin"),  # better
        (A(40, 0), A(100, 40), {}, False, "collecting"),  # incumbent below min samples
        (A(100, 0), A(49, 49), {}, False, "collecting"),
        (A(50, 0), A(50, 50), {}, True, "worse"),  # the first moment both have 50
        (A(100, 0), A(100, 0), {}, False, "within_margin"),
        (A(100, 100), A(100, 100), {}, False, "within_margin"),
        (A(2000, 100), A(2000, 140), {"margin": 0.0}, True, "worse"),  # 5% vs 7%, big n
        (A(2000, 100), A(2000, 140), {}, False, "within_margin"),  # ... but within 5 points
        (A(100, 5), A(100, 30), {"enabled": False}, False, "disabled"),
        (A(20, 0), A(20, 4), {"min_samples": 20}, False, "within_margin"),  # too few to tell
    ],
)
def test_rollback_decision(incumbent, candidate, kw, rollback, reason):
    args = {"margin": 0.05, "min_samples": 50, "confidence": 0.95} | kw
    v = rollback_decision(incumbent, candidate, **args)
    assert (v.rollback, v.reason) == (rollback, reason)


def test_stricter_confidence_needs_more_evidence():
    inc, cand = A(200, 10), A(200, 40)  # 5% vs 20%
    assert rollback_decision(inc, cand, margin=0.05, min_samples=50, confidence=0.95).rollback
    assert not rollback_decision(inc, cand, margin=0.05, min_samples=50, confidence=0.9999).rollback


@pytest.mark.parametrize(
    ("a", "b", "agree"),
    [
        ("refund: This is a refund request.", "refund: sure, a refund", True),
        ("Refund", "refund.", True),
        ('{"label": "invoice", "x": 1}', "invoice: here it is", True),
        ("refund: yes", "invoice: yes", False),
        ("The answer is 42.", "the   answer is 42.", True),
        ("The answer is 42.", "The answer is 41.", True),  # same first word: "the"
        ("", "", True),
        ("", "x", False),
    ],
)
def test_agreement(a, b, agree):
    assert agreement(a, b) is agree


# -- the engine ---------------------------------------------------------------------------

SPECIALISTS = [*CONFIG["specialists"], spec("a2", "ma2"), spec("cold", "mcold", ready=False)]


def rollout_config(**rollout):
    policy = {
        "modelName": "r",
        "id": "ns/r",
        "specialists": ["ns/a"],
        "routing": {"semantic": {"enabled": False}},
        "cascade": [
            {"name": "routed", "routed": True, "accept": {"minAnswerConfidence": 0.8}},
            {"name": "large", "specialist": "ns/big"},
        ],
        "rollouts": [{"specialist": "ns/a", "candidate": "ns/a2", **rollout}],
    }
    return {"specialists": SPECIALISTS, "policies": [policy], "budgets": []}


async def ask(eng, snap, rid, text="hello"):
    req = parse_chat(
        {"model": "r", "messages": [{"role": "user", "content": text}]}, max_messages=4
    )
    d = Decision(rid)
    return await eng.run(snap, req, d), d


SCRIPT = {
    "ma": words("incumbent says", 0.95),
    "ma2": words("candidate says", 0.95),
    "mbig": words("big says", 0.99),
}


async def test_canary_sends_its_share_to_the_candidate():
    snap, pool, eng = make(SCRIPT, rollout_config(percent=30))
    targets = []
    for i in range(300):
        out, d = await ask(eng, snap, f"q{i}")
        targets.append(d.target)
        arm = d.extra["rollout"]["arm"]
        assert d.extra_headers["rollout"] == f"canary:{arm}"
        assert d.route == "ns/a"  # routing chose the incumbent; the canary served
        assert (d.target == "ns/a2") == (arm == "candidate")
        assert out.text.startswith("candidate" if arm == "candidate" else "incumbent")
    share = targets.count("ns/a2") / len(targets)
    assert 0.22 < share < 0.38, share
    assert sum(1 for c in pool.calls if c[0] == "ma2") == targets.count("ns/a2")


@pytest.mark.parametrize(("percent", "target"), [(0, "ns/a"), (100, "ns/a2")])
async def test_canary_extremes(percent, target):
    snap, _pool, eng = make(SCRIPT, rollout_config(percent=percent))
    for i in range(20):
        _out, d = await ask(eng, snap, f"x{i}")
        assert d.target == target


async def test_unready_candidate_is_no_rollout():
    cfg = rollout_config(percent=100)
    cfg["policies"][0]["rollouts"][0]["candidate"] = "ns/cold"
    snap, _pool, eng = make(SCRIPT, cfg)
    _out, d = await ask(eng, snap, "x")
    assert d.target == "ns/a" and "rollout" not in d.extra


def _gauge(policy="r"):
    return m.REGISTRY.get_sample_value(
        "slmfleet_router_rollout_rolled_back",
        {"policy": policy, "specialist": "ns/a", "candidate": "ns/a2"},
    )


async def test_a_failing_canary_is_rolled_back_and_stays_back(caplog):
    script = {**SCRIPT, "ma2": UpstreamError("candidate broken")}
    rollback = {"minSamples": 10, "margin": 0.05, "confidence": 0.95}
    snap, _pool, eng = make(script, rollout_config(percent=50, rollback=rollback))
    arms = []
    with caplog.at_level(logging.WARNING, logger="slmfleet.router"):
        for i in range(80):
            out, d = await ask(eng, snap, f"f{i}")
            arms.append(d.extra_headers["rollout"])
            if d.extra["rollout"]["arm"] == "candidate":
                # The cascade still answers: the candidate's error escalates.
                assert d.escalations == ["routed:error"] and out.text.startswith("big")
    first_back = arms.index("canary:rolled-back")
    before = arms[:first_back]
    assert before.count("canary:candidate") >= 10 and before.count("canary:incumbent") >= 10
    assert set(arms[first_back:]) == {"canary:rolled-back"}
    st = next(iter(eng.rollouts.states.values()))
    assert st.rolled_back and st.verdict.reason == "worse" and st.candidate.bad == st.candidate.n
    assert _gauge() == 1
    events = [orjson.loads(r.message) for r in caplog.records if "canary_rolled_back" in r.message]
    assert len(events) == 1 and events[0]["candidate"] == "ns/a2"
    # A new rollout spec (another percent) starts a new canary.
    snap2, _pool, _engine = make(script, rollout_config(percent=60, rollback=rollback))
    _out, d = await ask(eng, snap2, "f0")  # the same engine, a new snapshot
    assert d.extra_headers["rollout"] != "canary:rolled-back"


async def test_an_escalating_canary_counts_as_bad_but_a_good_one_is_kept():
    script = {**SCRIPT, "ma2": words("candidate unsure", 0.3)}  # below minAnswerConfidence
    rollback = {"minSamples": 10}
    snap, _pool, eng = make(script, rollout_config(percent=50, rollback=rollback))
    for i in range(60):
        await ask(eng, snap, f"e{i}")
    st = next(iter(eng.rollouts.states.values()))
    assert st.rolled_back and st.candidate.bad == st.candidate.n > 0
    snap, _pool, eng = make(SCRIPT, rollout_config(percent=50, rollback=rollback))
    for i in range(200):
        await ask(eng, snap, f"g{i}")
    st = next(iter(eng.rollouts.states.values()))
    assert not st.rolled_back and st.verdict.reason == "within_margin"
    assert st.candidate.n + st.incumbent.n == 200


class Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(orjson.loads(record.getMessage()))


@pytest.fixture
def shadows():
    h = Capture()
    shadow_log.addHandler(h)
    yield h.records
    shadow_log.removeHandler(h)


@pytest.mark.parametrize(
    ("candidate", "agree"),
    [(words("incumbent again", 0.9), True), (words("candidate differs", 0.9), False)],
)
async def test_shadow_mirrors_without_touching_the_answer(shadows, candidate, agree):
    snap, pool, eng = make({**SCRIPT, "ma2": candidate}, rollout_config(mode="shadow", percent=100))
    out, d = await ask(eng, snap, "s1")
    assert out.text == "incumbent says " and d.target == "ns/a"
    assert d.extra_headers["rollout"] == "shadow:mirrored"
    await asyncio.gather(*eng.rollouts.shadows)
    assert [c[0] for c in pool.calls] == ["ma", "ma2"]
    (rec,) = shadows
    assert rec["event"] == "shadow" and rec["request_id"] == "s1" and rec["agree"] is agree
    assert rec["incumbent_arm"]["answer"] == "incumbent says "
    assert rec["candidate_arm"]["answer"] == "".join(w for w, _ in candidate)
    assert rec["candidate_arm"]["outcome"] == "ok" and rec["candidate_arm"]["tokens"] > 0
    assert rec["incumbent_arm"]["latency_ms"] >= 0


async def test_shadow_share_errors_and_the_cap(shadows):
    snap, _pool, eng = make(
        {**SCRIPT, "ma2": UpstreamError("nope")}, rollout_config(mode="shadow", percent=40)
    )
    mirrored = 0
    for i in range(200):
        _out, d = await ask(eng, snap, f"m{i}")
        mirrored += d.extra["rollout"]["mirrored"]
        assert d.target == "ns/a"
    await asyncio.gather(*eng.rollouts.shadows)
    assert 60 < mirrored < 100 and len(shadows) == mirrored
    assert all(r["candidate_arm"]["error"] == "error" and r["agree"] is None for r in shadows)
    # With MAX_SHADOWS in flight, more are dropped (counted), the answer unaffected.
    from slmfleet.router import rollouts as ro

    gate = asyncio.Event()

    async def hang(*a, **k):
        await gate.wait()
        raise UpstreamError("late")

    snap, _pool, eng = make(SCRIPT, rollout_config(mode="shadow", percent=100))
    real = eng.specialist_tier.call

    async def call(c):
        if c.tier.cfg.name == "shadow":
            return await hang()
        return await real(c)

    eng.specialist_tier.call = call
    for i in range(ro.MAX_SHADOWS + 5):
        _out, d = await ask(eng, snap, f"c{i}")
    assert len(eng.rollouts.shadows) == ro.MAX_SHADOWS
    assert d.extra_headers["rollout"] == "shadow:-"
    gate.set()
    await asyncio.gather(*eng.rollouts.shadows)
    eng.close()


# -- Budgets and rollouts ------------------------------------------------------------------


def _sample(name, labels):
    return m.REGISTRY.get_sample_value(name, labels) or 0.0


def _arm_count(arm, outcome):
    return _sample(
        "slmfleet_router_rollout_requests_total",
        {
            "policy": "r",
            "specialist": "ns/a",
            "candidate": "ns/a2",
            "mode": "canary",
            "arm": arm,
            "outcome": outcome,
        },
    )


def budgeted_rollout(limit_usd, *, covers, action="reject", **rollout):
    """A rollout whose Budget (limit per hour, capped output) covers ``covers``: the
    candidate alone ("candidate") or the policy ("policy"); the candidate has prices."""
    cfg = rollout_config(**rollout)
    cfg["specialists"] = [
        *[s for s in SPECIALISTS if s["id"] != "ns/a2"],
        spec("a2", "ma2", cost={"inputPerMillionUsd": 1, "outputPerMillionUsd": 1}),
    ]
    budget = {
        "id": "ns/cand",
        "spend": [{"window": "1h", "limitUsd": limit_usd, "action": action}],
        "perRequest": {"maxOutputTokens": 8},
    }
    if covers == "candidate":
        budget["specialists"] = ["ns/a2"]
    else:
        cfg["policies"][0]["budgets"] = ["ns/cand"]
    cfg["budgets"] = [budget]
    return cfg


async def test_a_candidate_budget_refusal_runs_the_incumbent_and_is_no_error():
    # The candidate's worst case (8 output tokens at $1/M) is over its Budget's $1e-9 on
    # its own: the router's view shows no step, the ledger refuses the reservation.
    snap, pool, eng = make(SCRIPT, budgeted_rollout(1e-9, covers="candidate", percent=100))
    errors = _arm_count("candidate", "error")
    for i in range(12):
        out, d = await ask(eng, snap, f"b{i}")
        assert out.text == "incumbent says " and d.accepted and d.target == "ns/a"
        assert d.escalations == ["routed:budget_exceeded"]
        assert d.extra_headers["rollout"] == "canary:incumbent"
        assert d.extra["rollout"]["arm"] == "incumbent"
        assert [(a.tier, a.outcome) for a in d.attempts] == [
            ("routed", "skipped"),
            ("routed", "accepted"),
        ]
    assert [c[0] for c in pool.calls] == ["ma"] * 12
    st = next(iter(eng.rollouts.states.values()))
    assert st.candidate.n == st.incumbent.n == 0 and not st.rolled_back  # counted for neither
    assert _arm_count("candidate", "error") == errors


async def test_a_request_handed_to_the_incumbent_counts_for_neither_arm_when_it_fails():
    """The incumbent's failures alone, counted for requests the candidate's Budget handed
    over, would make the candidate look better than it is."""
    script = {**SCRIPT, "ma": UpstreamError("incumbent broken")}
    snap, _pool, eng = make(script, budgeted_rollout(1e-9, covers="candidate", percent=100))
    errors = _arm_count("incumbent", "error")
    for i in range(6):
        with contextlib.suppress(RouterError, UpstreamError):
            await ask(eng, snap, f"h{i}")
    st = next(iter(eng.rollouts.states.values()))
    assert st.candidate.n == st.incumbent.n == 0
    assert _arm_count("incumbent", "error") == errors


async def test_a_policy_budget_refusal_is_429_and_no_arm_error():
    snap, pool, eng = make(SCRIPT, budgeted_rollout(1e-9, covers="policy", percent=100))
    errors = _arm_count("candidate", "error")
    with pytest.raises(RouterError) as e:
        await ask(eng, snap, "p1")
    assert e.value.status == 429 and e.value.code == "budget_exceeded"
    assert pool.calls == []
    st = next(iter(eng.rollouts.states.values()))
    assert st.candidate.n == st.incumbent.n == 0
    assert _arm_count("candidate", "error") == errors


def _shadow_result(result):
    return _sample(
        "slmfleet_router_shadow_comparisons_total",
        {"policy": "r", "specialist": "ns/a", "candidate": "ns/a2", "result": result},
    )


async def test_a_refused_shadow_is_compared_as_budget_exceeded(shadows):
    snap, pool, eng = make(
        SCRIPT, budgeted_rollout(1e-9, covers="candidate", mode="shadow", percent=100)
    )
    before = _shadow_result("candidate_error")
    out, d = await ask(eng, snap, "s1")
    assert out.text == "incumbent says " and d.extra_headers["rollout"] == "shadow:mirrored"
    assert await asyncio.gather(*eng.rollouts.shadows, return_exceptions=True) == [None]
    (rec,) = shadows
    assert rec["candidate_arm"]["error"] == "budget_exceeded" and rec["agree"] is None
    assert rec["candidate_arm"]["outcome"] is None and rec["candidate_arm"]["tokens"] == 0
    assert _shadow_result("candidate_error") == before + 1
    assert [c[0] for c in pool.calls] == ["ma"]


async def test_a_shadow_is_skipped_while_the_candidates_budget_is_exceeded(shadows):
    # A degrade window never refuses: the first shadow spends past it, the next is skipped.
    cfg = budgeted_rollout(1e-9, covers="candidate", action="degrade", mode="shadow", percent=100)
    snap, pool, eng = make(SCRIPT, cfg)
    _out, d = await ask(eng, snap, "s1")
    assert d.extra_headers["rollout"] == "shadow:mirrored"
    await asyncio.gather(*eng.rollouts.shadows)
    assert len(shadows) == 1 and shadows[0]["candidate_arm"]["outcome"] == "ok"
    _out, d = await ask(eng, snap, "s2")
    assert d.extra_headers["rollout"] == "shadow:-" and not d.extra["rollout"]["mirrored"]
    assert not d.budget_exceeded  # the candidate's Budget is not the request's
    assert [c[0] for c in pool.calls] == ["ma", "ma2", "ma"]


async def test_a_shadow_that_breaks_still_logs_its_comparison(shadows, caplog):
    snap, _pool, eng = make(SCRIPT, rollout_config(mode="shadow", percent=100))
    real = eng.specialist_tier.call

    async def call(c):
        if c.tier.cfg.name == "shadow":
            raise RuntimeError("bug")
        return await real(c)

    eng.specialist_tier.call = call
    with caplog.at_level(logging.ERROR, logger="slmfleet.router"):
        await ask(eng, snap, "s1")
        assert await asyncio.gather(*eng.rollouts.shadows, return_exceptions=True) == [None]
    (rec,) = shadows
    assert rec["candidate_arm"]["error"] == "internal_error"
    assert rec["candidate_arm"]["outcome"] == "error"
    assert any("shadow of s1 failed" in r.getMessage() for r in caplog.records)


class RecordingLedger(InProcessLedger):
    def __init__(self):
        super().__init__()
        self.events = []

    async def settle(self, reservation, actual):
        self.events.append(("settle", actual.usd > 0))
        return await super().settle(reservation, actual)

    async def close(self):
        self.events.append(("close", None))
        await super().close()


class HangingCandidate(FakePool):
    """The candidate generates one token, then hangs until cancelled."""

    async def stream(self, endpoint, model, prompt, sampling, *, timeout_s, **kw):
        if model != "ma2":
            async for piece in super().stream(
                endpoint, model, prompt, sampling, timeout_s=timeout_s, **kw
            ):
                yield piece
            return
        self.calls.append((model, prompt, dict(sampling)))
        yield counted("partial", None, prompt, kw.get("counts"))
        await asyncio.Event().wait()


async def test_shutdown_settles_the_cancelled_shadows_before_closing_the_ledger():
    cfg = budgeted_rollout(1.0, covers="policy", mode="shadow", percent=100)
    snap = build_snapshot(RouterConfig.model_validate(cfg))
    ledger = RecordingLedger()
    acc = LedgerAccounting(ledger, settle_in_background=True)  # as with Redis
    pool = HangingCandidate(SCRIPT)
    eng = Engine(pool, ExternalClients(), accounting=acc)
    await ask(eng, snap, "s1")
    await asyncio.sleep(0)  # the shadow is generating
    assert [c[0] for c in pool.calls] == ["ma", "ma2"] and len(eng.rollouts.shadows) == 1
    await acc.drain()  # the answer's settle is done: no settle is under way at shutdown
    assert ledger.events == [("settle", True)]
    await eng.aclose()
    # Both calls (the answer and the shadow's one token) settled, then the ledger closed.
    assert ledger.events == [("settle", True), ("settle", True), ("close", None)]
    assert not eng.rollouts.shadows
