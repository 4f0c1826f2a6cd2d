"""Table tests of the trace-budget controller, spend windows and the circuit breaker."""

from __future__ import annotations

import pytest

from slmfleet.api.budget import PerRequestLimits, SpendWindow
from slmfleet.router.breaker import Breaker, BreakerConfig, allow, record
from slmfleet.router.spend import RollingWindow, cost_usd, verdict
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
    assert cost_usd(1_000_000, 2_000_000, 0.5, 1.5) == pytest.approx(3.5)


def test_rolling_window_ages_out():
    w = RollingWindow(60)  # 1 s buckets
    w.add(0.0, 5.0)
    w.add(30.0, 5.0)
    assert w.total(30.0) == 10.0
    assert w.total(61.5) == 5.0  # first bucket gone
    assert w.total(200.0) == 0.0


def test_retry_after_is_when_enough_spend_expires():
    w = RollingWindow(3600)  # 60 s buckets
    w.add(0.0, 30.0)
    w.add(1800.0, 15.0)
    # limit 40: spent 45; the first bucket (0..60) expires at 3660
    assert w.retry_after(1800.0, 40.0) == pytest.approx(1860.0)
    assert w.retry_after(1800.0, 100.0) == 0.0


@pytest.mark.parametrize(
    ("windows", "reject", "degrade", "exceeded"),
    [
        ([("1h", 100.0, "reject")], False, False, ()),
        ([("1h", 10.0, "alert")], False, False, ("b/1h",)),
        ([("1h", 10.0, "degrade")], False, True, ("b/1h",)),
        ([("1h", 10.0, "reject"), ("1d", 5.0, "degrade")], True, True, ("b/1h", "b/1d")),
    ],
)
def test_verdict(windows, reject, degrade, exceeded):
    rows = []
    for window, limit, action in windows:
        w = RollingWindow(3600 if window == "1h" else 86400)
        w.add(100.0, 20.0)
        rows.append(("b", SpendWindow(window=window, limit_usd=limit, action=action), w))
    v = verdict(rows, 200.0)
    assert (v.reject, v.degrade, v.exceeded) == (reject, degrade, exceeded)
    assert (v.retry_after_s > 0) is reject


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
