"""Table tests of the trace-budget controller, the spend verdict (the degrade ladder over
Budgets) and the circuit breaker."""

from __future__ import annotations

import pytest

from slmfleet.api.routerconfig import (
    BudgetConfig,
    LadderStepConfig,
    SpendWindowConfig,
)
from slmfleet.api.routerconfig import PerRequestConfig as PerRequestLimits
from slmfleet.budget.amounts import Amount, cost
from slmfleet.budget.ledger import WindowState
from slmfleet.router.breaker import (
    Breaker,
    BreakerConfig,
    admitted_probe,
    allow,
    record,
    released,
)
from slmfleet.router.spend import verdict
from slmfleet.router.tracebudget import (
    Caps,
    continuation_prompt,
    effective_caps,
    new_state,
    step,
)

L = PerRequestLimits


@pytest.mark.parametrize(
    ("limits", "req_max", "expected"),
    [
        ([], None, Caps()),
        ([], 50, Caps(max_output_tokens=50, answer_tokens=50)),
        ([L(max_output_tokens=100)], 500, Caps(max_output_tokens=100)),  # never raise
        ([L(max_output_tokens=100)], 20, Caps(max_output_tokens=20, answer_tokens=20)),
        (
            [
                L(max_reasoning_tokens=64, answer_tokens=32),
                L(max_reasoning_tokens=16, max_latency_ms=900),
            ],
            None,
            Caps(max_reasoning_tokens=16, max_latency_ms=900, answer_tokens=32),
        ),
    ],
)
def test_effective_caps(limits, req_max, expected):
    assert effective_caps(limits, req_max) == expected


@pytest.mark.parametrize(
    ("caps", "cap"),
    [
        (Caps(), None),
        (Caps(max_reasoning_tokens=10), 10),
        (Caps(max_reasoning_tokens=100, max_output_tokens=80, answer_tokens=30), 50),
        (Caps(max_output_tokens=20, answer_tokens=64), 0),
    ],
)
def test_reasoning_cap_leaves_room_for_the_answer(caps, cap):
    assert caps.reasoning_cap == cap


def run(pieces, *, rcap=None, ocap=None, markers=("<think>", "</think>")):
    st = new_state(*markers)
    out, action = [], "continue"
    for p in pieces:
        st, s = step(st, p, reasoning_cap=rcap, output_cap=ocap)
        out.append(s.answer_delta)
        if s.action != "continue":
            action = s.action
            break
    return st, "".join(out), action


THINK = ["<think> ", "a ", "b ", "c ", "d ", "</think> ", "The ", "answer."]


@pytest.mark.parametrize(
    ("pieces", "kw", "answer", "reasoning", "rtok", "action"),
    [
        (THINK, {}, "The answer.", "a b c d", 4, "continue"),
        (THINK, {"rcap": 4}, "The answer.", "a b c d", 4, "continue"),  # exactly the cap
        (THINK, {"rcap": 2}, "", "a b", 2, "cut"),
        (THINK, {"rcap": 0}, "", "", 0, "cut"),
        (["Just ", "an ", "answer."], {}, "Just an answer.", "", 0, "continue"),
        (["Just ", "an ", "answer."], {"ocap": 2}, "Just an ", "", 0, "length"),
        # markers split across deltas
        (["<thi", "nk>x ", "y </th", "ink>", " ok"], {}, "ok", "x y", 2, "continue"),
        # marker and text in one delta
        (["<think>x y</think>done"], {}, "done", "x y", 1, "continue"),
        # no markers configured: everything is answer
        (THINK[:2], {"markers": (None, None)}, "<think> a ", "", 0, "continue"),
    ],
)
def test_trace_state_machine(pieces, kw, answer, reasoning, rtok, action):
    st, emitted, act = run(pieces, **kw)
    assert emitted == answer
    assert st.answer == answer
    assert st.reasoning.strip() == reasoning
    assert st.reasoning_tokens == rtok
    assert act == action


def test_continuation_prompt_closes_the_thought():
    st, _, action = run(THINK, rcap=2)
    assert action == "cut"
    assert continuation_prompt("Q: 2+3?\n", st) == "Q: 2+3?\n<think> a b </think>"
    st, _, _ = run(["<think>x ", "y ", "z"], rcap=0)
    assert continuation_prompt("Q", st).endswith("</think>")


def test_answer_only_generation():
    st = new_state(None, None, answering=True)
    st, s = step(st, " 42", reasoning_cap=None, output_cap=1)
    assert s.answer_delta == "42" and s.action == "continue"
    st, s = step(st, " more", reasoning_cap=None, output_cap=1)
    assert s.action == "length"


def test_cost():
    assert cost(1_000_000, 2_000_000, 0.5, 1.5).usd == pytest.approx(3.5)
    assert cost(1_000_000, 2_000_000, 0.5, 1.5).tokens == 3_000_000


def budget(windows, ladder=(), bid="b"):
    return BudgetConfig(
        id=bid,
        spend=[SpendWindowConfig.model_validate(w) for w in windows],
        ladder=[LadderStepConfig(at_percent=p, action=a) for p, a in ladder],
    )


def states(bid="b", **spent):
    """window -> (usd, tokens) settled."""
    return {(bid, w): WindowState(Amount(*v)) for w, v in spent.items()}


W1H = {"window": "1h", "limitUsd": 100.0, "action": "alert"}


@pytest.mark.parametrize(
    ("windows", "ladder", "spent", "flags", "step", "exceeded"),
    [
        ([{**W1H, "action": "reject"}], (), {"1h": (20.0, 0)}, "", None, ()),
        ([{**W1H, "limitUsd": 10}], (), {"1h": (20.0, 0)}, "A", "alert", ("b/1h",)),
        (
            [{**W1H, "limitUsd": 10, "action": "degrade"}],
            (),
            {"1h": (20.0, 0)},
            "AD",
            "degrade",
            ("b/1h",),
        ),
        (
            [
                {**W1H, "limitUsd": 10, "action": "reject"},
                {"window": "1d", "limitUsd": 5, "action": "degrade"},
            ],
            (),
            {"1h": (20.0, 0), "1d": (20.0, 0)},
            "ADR",
            "reject",
            ("b/1h", "b/1d"),
        ),
        # the ladder: steps by the fullest window's settled spend, accumulating
        ([W1H], ((70, "halveReasoning"), (85, "degrade")), {"1h": (69.9, 0)}, "", None, ()),
        (
            [W1H],
            ((70, "halveReasoning"), (85, "degrade")),
            {"1h": (72.0, 0)},
            "AH",
            "halveReasoning",
            (),
        ),
        ([W1H], ((70, "halveReasoning"), (85, "degrade")), {"1h": (90.0, 0)}, "AHD", "degrade", ()),
        # a token-only window (it crashed the old in-process path)
        (
            [{"window": "day", "limitTokens": 1000, "action": "degrade"}],
            (),
            {"day": (0.0, 1000)},
            "AD",
            "degrade",
            ("b/day",),
        ),
        (
            [{"window": "day", "limitTokens": 1000, "action": "degrade"}],
            (),
            {"day": (0.0, 999)},
            "",
            None,
            (),
        ),
        # nothing spent yet: no state at all
        ([W1H], ((1, "alert"),), {}, "", None, ()),
    ],
)
def test_verdict(windows, ladder, spent, flags, step, exceeded):
    b = budget(windows, ladder)
    v = verdict([b, b], states(**spent))  # a Budget listed twice counts once
    assert (v.alert, v.halve_reasoning, v.degrade, v.reject) == (
        "A" in flags,
        "H" in flags,
        "D" in flags,
        "R" in flags,
    )
    assert v.step == step and v.exceeded == exceeded
    assert len(v.steps) == len(set(v.steps))


def test_verdict_merges_budgets_and_skips_those_without_windows():
    caps_only = BudgetConfig(id="c", per_request={"maxOutputTokens": 5})
    a = budget([W1H], ((50, "halveReasoning"),), bid="a")
    b = budget([{**W1H, "limitUsd": 10, "action": "degrade"}], bid="b")
    v = verdict(
        [caps_only, a, b], {**states("a", **{"1h": (60.0, 0)}), **states("b", **{"1h": (5.0, 0)})}
    )
    assert v.halve_reasoning and not v.degrade and v.percent == 60
    assert v.steps == ("a:halveReasoning@50",)
    assert verdict([caps_only], {}) == verdict([], {})


CFG = BreakerConfig(threshold=2, cooldown_s=5.0)


@pytest.mark.parametrize(
    ("events", "state", "allowed"),
    [
        # events: (time, "ok" | "fail" | "try")
        ([], "closed", True),
        ([(0, "fail")], "closed", True),
        ([(0, "fail"), (1, "fail")], "open", False),
        ([(0, "fail"), (1, "fail"), (2, "try")], "open", False),
        ([(0, "fail"), (1, "fail"), (7, "try")], "half_open", False),  # probe in flight
        ([(0, "fail"), (1, "fail"), (7, "try"), (7, "ok")], "closed", True),
        ([(0, "fail"), (1, "fail"), (7, "try"), (7, "fail")], "open", False),
        ([(0, "fail"), (1, "ok"), (2, "fail")], "closed", True),  # success resets
    ],
)
def test_breaker(events, state, allowed):
    b = Breaker()
    now = 0.0
    for now, ev in events:
        if ev == "try":
            _, b = allow(b, now, CFG)
        else:
            b = record(b, ev == "ok", now, CFG)
    assert b.state == state
    assert allow(b, now, CFG)[0] is allowed


@pytest.mark.parametrize(
    ("events", "state", "probing", "allowed"),
    [
        # events: "time verb call", verb: try | ok | fail | gone (the call ended proving
        # nothing: client gone, cancelled). Calls: o (older, admitted while closed), p and
        # q (probes). "0 fail, 1 fail" opens the circuit; its cooldown is 5 s.
        ("0 try o, 0 fail, 1 fail, 7 try p", "half_open", True, False),
        # An older request ending "neither" leaves the probe in flight alone.
        ("0 try o, 0 fail, 1 fail, 7 try p, 8 gone o", "half_open", True, False),
        # The probe itself ending so frees it: the next request probes.
        ("0 fail, 1 fail, 7 try p, 8 gone p", "half_open", False, True),
        # A stale probe (p; re-opened, cooled down, q probes now) ending frees nothing.
        ("0 fail, 1 fail, 7 try p, 8 fail, 14 try q, 15 gone p", "half_open", True, False),
        ("0 fail, 1 fail, 7 try p, 8 fail, 14 try q, 15 gone q", "half_open", False, True),
        # A call admitted while closed is no probe.
        ("0 try o, 0 gone o", "closed", False, True),
    ],
)
def test_breaker_frees_only_its_own_probe(events, state, probing, allowed):
    b = Breaker()
    probes: dict[str, int | None] = {}
    now = 0.0
    for event in events.split(", "):
        t, verb, *call = event.split()
        now = float(t)
        if verb == "try":
            ok, after = allow(b, now, CFG)
            assert ok
            probes[call[0]], b = admitted_probe(b, after), after
        elif verb == "gone":
            b = released(b, probes[call[0]])
        else:
            b = record(b, verb == "ok", now, CFG)
    assert (b.state, b.probing) == (state, probing)
    assert allow(b, now, CFG)[0] is allowed
