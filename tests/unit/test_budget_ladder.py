"""The degrade ladder, hard caps, amounts and Budget.status: table tests of pure logic."""

from __future__ import annotations

import pytest

from slmfleet.api.budget import BudgetSpec, LadderStep, SpendWindow
from slmfleet.budget.amounts import Amount, cost, worst_case_call, worst_case_reasoning_call
from slmfleet.budget.ladder import LadderDecision, decide, halved_reasoning_cap, hard_cap
from slmfleet.budget.ledger import LedgerRead, WindowState
from slmfleet.budget.status import budget_status, comparable
from slmfleet.budget.windows import calendar_period, rfc3339

W = SpendWindow
LADDER = [
    LadderStep(at_percent=70, action="halveReasoning"),
    LadderStep(at_percent=85, action="degrade"),
    LadderStep(at_percent=100, action="reject"),
]
HOUR = W(window="1h", limit_usd=10)
DAY_TOKENS = W(window="day", limit_tokens=1000)


@pytest.mark.parametrize(
    ("hour_usd", "day_tokens", "ladder", "expected"),
    [
        (0.0, 0, LADDER, LadderDecision()),
        (6.99, 0, LADDER, LadderDecision(percent=69)),
        (7.0, 0, LADDER, LadderDecision(True, alert=True, step="halveReasoning", percent=70,
                                        steps=("b:halveReasoning@70",))),
        # Tokens can be the fuller unit.
        (1.0, 860, LADDER, LadderDecision(True, True, alert=True, step="degrade", percent=86,
                                          steps=("b:halveReasoning@70", "b:degrade@85"))),
        (10.0, 0, LADDER, LadderDecision(True, True, True, True, "reject", 100, ("b/1h",),
                                         ("b/1h:alert@100", "b:halveReasoning@70",
                                          "b:degrade@85", "b:reject@100"))),
        # No ladder: only the window's own action at its limit (alert by default).
        (12.0, 0, [], LadderDecision(alert=True, step="alert", percent=120, exceeded=("b/1h",),
                                     steps=("b/1h:alert@100",))),
        (5.0, 1000, [], LadderDecision(alert=True, step="alert", percent=100,
                                       exceeded=("b/day",), steps=("b/day:alert@100",))),
    ],
)  # fmt: skip
def test_ladder(hour_usd, day_tokens, ladder, expected):
    spent = {"1h": Amount(hour_usd, 0), "day": Amount(0.0, day_tokens)}
    assert decide("b", [HOUR, DAY_TOKENS], ladder, spent) == expected


def test_merge_takes_the_union_and_the_most_severe_step():
    a = decide("a", [HOUR], LADDER, {"1h": Amount(7.5)})
    b = decide("b", [W(window="1h", limit_usd=1, action="degrade")], [], {"1h": Amount(1)})
    m = a.merge(b)
    assert m.halve_reasoning and m.degrade and not m.reject
    assert m.step == "degrade" and m.percent == 100 and m.exceeded == ("b/1h",)


@pytest.mark.parametrize(
    ("window", "ladder", "cap"),
    [
        (W(window="1h", limit_usd=1), [], None),
        (W(window="1h", limit_usd=1, action="reject"), [], 1.0),
        (W(window="1h", limit_usd=1), LADDER, 1.0),
        (W(window="1h", limit_usd=1), [LadderStep(at_percent=90, action="reject")], 0.9),
        (W(window="1h", limit_usd=1, action="reject"),
         [LadderStep(at_percent=95, action="reject")], 0.95),
        (W(window="1h", limit_usd=1, action="degrade"), LADDER[:2], None),
    ],
)  # fmt: skip
def test_hard_cap(window, ladder, cap):
    assert hard_cap(window, ladder) == cap


@pytest.mark.parametrize(
    ("rcap", "ocap", "halved"), [(100, 512, 50), (None, 512, 256), (None, None, None), (1, 9, 0)]
)
def test_halved_reasoning_cap(rcap, ocap, halved):
    assert halved_reasoning_cap(rcap, ocap) == halved


def test_amounts():
    assert cost(1_000_000, 2_000_000, 0.5, 1.5) == Amount(3.5, 3_000_000)
    assert worst_case_call(100, 50, 1.0, 2.0) == Amount(200e-6, 150)
    # Without a cap, what is left of the context is the most it can write.
    assert worst_case_call(100, None, 1.0, 1.0, context_length=4096).tokens == 4096
    assert worst_case_call(100, 9000, 1.0, 1.0, context_length=4096).tokens == 4096
    with pytest.raises(ValueError):
        worst_case_call(100, None, 1.0, 1.0)
    # A reasoning cut costs a second call: the prompt again plus the thought so far.
    w = worst_case_reasoning_call(100, 300, 200, 64, 1.0, 1.0, marker_tokens=8)
    assert w.tokens == (100 + 300) + (100 + 200 + 8 + 64)
    assert Amount(1e-9).nano_usd == 1 and Amount(1.5e-9).nano_usd_ceil == 2
    with pytest.raises(ValueError):
        Amount(-1.0)


def spec(**kw) -> BudgetSpec:
    return BudgetSpec.model_validate(kw)


NOW = 1_780_000_000.0


@pytest.mark.parametrize(
    ("windows", "ladder", "spent", "state", "step", "exceeded"),
    [
        ([{"window": "1h", "limitUsd": 10}], [], {"1h": Amount(1)}, "Ok", None, "False"),
        ([{"window": "1h", "limitUsd": 10}], LADDER, {"1h": Amount(7.2)},
         "Degraded", "halveReasoning", "False"),
        ([{"window": "1h", "limitUsd": 10}], LADDER, {"1h": Amount(9.0)},
         "Degraded", "degrade", "False"),
        ([{"window": "1h", "limitUsd": 10}], LADDER, {"1h": Amount(10.0)},
         "Exceeded", "reject", "True"),
        # Alert only: over the limit is Exceeded, though nothing is refused.
        ([{"window": "1h", "limitUsd": 10}], [], {"1h": Amount(11.0)},
         "Exceeded", "alert", "True"),
        # Reject before the limit: Exceeded while refusing.
        ([{"window": "1h", "limitUsd": 10}], [{"atPercent": 90, "action": "reject"}],
         {"1h": Amount(9.5)}, "Exceeded", "reject", "True"),
        ([{"window": "day", "limitTokens": 100, "timeZone": "Europe/Berlin"}], [],
         {"day": Amount(0, 50)}, "Ok", None, "False"),
    ],
)  # fmt: skip
def test_budget_status(windows, ladder, spent, state, step, exceeded):
    s = spec(spend=windows, ladder=ladder)
    read = LedgerRead({("ns/b", w): WindowState(a, Amount(0.5, 5)) for w, a in spent.items()})
    out = budget_status("ns/b", s, read, NOW, 3)
    assert out["state"] == state and out["step"] == step
    conds = {c["type"]: c for c in out["conditions"]}
    assert conds["Exceeded"]["status"] == exceeded
    assert conds["Degraded"]["status"] == ("True" if state == "Degraded" else "False")
    assert conds["LedgerAvailable"]["status"] == "True"
    assert all(c["observedGeneration"] == 3 for c in out["conditions"])
    win = out["spend"][0]
    assert win["reservedUsd"] == 0.5 and win["reservedTokens"] == 5


def test_status_windows_and_resets():
    s = spec(
        spend=[
            {"window": "1h", "limitUsd": 2, "action": "reject"},
            {"window": "day", "timeZone": "Europe/Berlin", "limitUsd": 20, "limitTokens": 10**6},
        ]
    )
    bucket = int(NOW // 60 * 60) - 600
    read = LedgerRead(
        {
            ("ns/b", "1h"): WindowState(Amount(2.5, 10), Amount(), {bucket: Amount(2.5, 10)}),
            ("ns/b", "day"): WindowState(Amount(2.5, 10), Amount()),
        }
    )
    out = budget_status("ns/b", s, read, NOW)
    hour, day = out["spend"]
    assert hour == {
        "window": "1h",
        "spentUsd": 2.5,
        "reservedUsd": 0.0,
        "spentTokens": 10,
        "reservedTokens": 0,
        "percent": 125,
        "limitUsd": 2,
        "resetsAt": rfc3339(bucket + 3660),
    }
    assert day["resetsAt"] == rfc3339(calendar_period("day", "Europe/Berlin", NOW)[1])
    assert day["percent"] == 12 and out["percent"] == 125
    assert out["state"] == "Exceeded"


def test_status_unknown_when_the_ledger_is_unreachable():
    down = LedgerRead({}, available=False, error="connection refused")
    out = budget_status("ns/b", spec(spend=[{"window": "1h", "limitUsd": 1}]), down, NOW)
    assert out["state"] == "Unknown" and out["spend"] == []
    conds = {c["type"]: c for c in out["conditions"]}
    assert conds["LedgerAvailable"]["status"] == "False"
    assert "connection refused" in conds["LedgerAvailable"]["message"]


def test_a_window_that_refuses_is_exceeded_below_its_limit():
    """Reservations keep settled spend under a reject limit: the refusals show it binds."""
    s = spec(spend=[{"window": "1h", "limitUsd": 1, "action": "reject"}])
    st = WindowState(Amount(0.97), Amount(0.01), {}, refused_at=NOW - 5)
    out = budget_status("ns/b", s, LedgerRead({("ns/b", "1h"): st}), NOW)
    conds = {c["type"]: c for c in out["conditions"]}
    assert out["state"] == "Exceeded" and out["step"] == "reject" and out["percent"] == 97
    assert conds["Exceeded"]["reason"] == "Rejecting" and "1h" in conds["Exceeded"]["message"]
    # A refusal long ago is history: the window is within its limit again.
    old = WindowState(Amount(0.97), Amount(), {}, refused_at=NOW - 3600)
    out = budget_status("ns/b", s, LedgerRead({("ns/b", "1h"): old}), NOW)
    assert out["state"] == "Ok" and out["step"] is None


def test_status_says_so_when_no_ledger_is_shared():
    none = LedgerRead({}, available=False, configured=False)
    out = budget_status("ns/b", spec(spend=[{"window": "1h", "limitUsd": 1}]), none, NOW, 2)
    assert out["state"] == "Unknown" and out["spend"] == [] and out["step"] is None
    conds = {c["type"]: c for c in out["conditions"]}
    # Not False: nothing is broken, there is nothing to reach (Argo CD stays Healthy).
    assert conds["LedgerAvailable"]["status"] == "Unknown"
    assert conds["LedgerAvailable"]["reason"] == "NotConfigured"
    assert "SLMFLEET_LEDGER_URL" in conds["Exceeded"]["message"]
    assert all(c["observedGeneration"] == 2 for c in conds.values())


def test_comparable_ignores_transition_times_and_others_conditions():
    s = spec(spend=[{"window": "1h", "limitUsd": 1}])
    desired = budget_status("ns/b", s, LedgerRead({}), NOW)
    current = {
        **{k: desired[k] for k in ("state", "step", "percent")},
        "spend": [dict(w) for w in desired["spend"]],
        "observedGeneration": 4,
        "conditions": [
            {**c, "lastTransitionTime": "2026-01-01T00:00:00Z"} for c in desired["conditions"]
        ]
        + [{"type": "Ready", "status": "True", "reason": "Accepted", "message": ""}],
    }
    assert comparable(current) == comparable(desired)
    current["spend"][0] = {**current["spend"][0], "spentUsd": 0.5}
    assert comparable(current) != comparable(desired)
