"""Budget.status from the ledger's state, pure.

The status loop owns ``state``, ``step``, ``percent``, ``spend`` and the conditions
``Exceeded``, ``Degraded`` and ``LedgerAvailable``; the fleet loop owns the rest
(``observedGeneration``, ``policies``, Ready/Reconciling/Stalled). Amounts are rounded
(USD to 1e-6) so the status changes when spend does, not with float noise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..api.budget import BudgetSpec
from ..render.conditions import cap_message
from .amounts import Amount
from .ladder import LadderDecision, decide, fraction, percent_of
from .ledger import LedgerRead, WindowState
from .windows import Window, rfc3339

OWNED_FIELDS = ("state", "step", "percent", "spend")
OWNED_CONDITIONS = ("Exceeded", "Degraded", "LedgerAvailable")
_USD_DIGITS = 6
#: A window that refused a request this recently counts as refusing (Exceeded): settled
#: spend stays below a limit that reservations enforce, so refusals are what show that
#: the limit binds.
REFUSING_FOR_S = 30.0


def _usd(v: float) -> float:
    return round(v, _USD_DIGITS)


def resets_at(spec_window: Any, st: WindowState, now: float) -> str | None:
    """Calendar: the next period's start. Rolling: when spend over the limit has aged out
    enough to be under it again (None while under it)."""
    win = Window.of(spec_window)
    period = win.period(now)
    if period.resets_at is not None:
        return rfc3339(period.resets_at)
    if fraction(spec_window, st.spent) < 1.0:
        return None
    wait = 0.0
    buckets = st.buckets or {}
    for limit, unit in ((spec_window.limit_usd, "usd"), (spec_window.limit_tokens, "tokens")):
        if not limit:
            continue
        if unit == "usd":
            series = {b: a.nano_usd for b, a in buckets.items()}
            cap, one = round(limit * 1e9), 1
        else:
            series = {b: a.tokens for b, a in buckets.items()}
            cap, one = int(limit), 1
        w = win.retry_after(series, cap=cap, reserved=0, amount=one, now=now)
        wait = max(wait, w or 0.0)
    return rfc3339(now + wait)


def _window_status(spec_window: Any, st: WindowState, now: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "window": spec_window.window,
        "spentUsd": _usd(st.spent.usd),
        "reservedUsd": _usd(st.reserved.usd),
        "spentTokens": st.spent.tokens,
        "reservedTokens": st.reserved.tokens,
        "percent": percent_of(fraction(spec_window, st.spent)),
    }
    if spec_window.limit_usd is not None:
        out["limitUsd"] = spec_window.limit_usd
    if spec_window.limit_tokens is not None:
        out["limitTokens"] = spec_window.limit_tokens
    reset = resets_at(spec_window, st, now)
    if reset is not None:
        out["resetsAt"] = reset
    return out


def _cond(type_: str, status: str, reason: str, message: str, gen: int | None) -> dict[str, Any]:
    message = cap_message(message)
    c: dict[str, Any] = {"type": type_, "status": status, "reason": reason, "message": message}
    if gen is not None:
        c["observedGeneration"] = gen
    return c


def state_of(decision: LadderDecision, refusing: bool = False) -> str:
    if decision.reject or decision.exceeded or refusing:
        return "Exceeded"
    if decision.degrade or decision.halve_reasoning:
        return "Degraded"
    return "Ok"


def budget_status(
    budget_id: str,
    spec: BudgetSpec,
    read: LedgerRead,
    now: float,
    generation: int | None = None,
) -> dict[str, Any]:
    """The fields of Budget.status the status loop owns, in wire form (conditions
    without lastTransitionTime: the writer keeps or stamps those)."""
    if not read.configured:
        msg = (
            "no shared spend ledger configured (SLMFLEET_LEDGER_URL, chart ledger.mode): "
            "each router replica enforces the windows on its own traffic"
        )
        return {
            "state": "Unknown",
            "step": None,
            "percent": None,
            "spend": [],
            "conditions": [
                _cond("Exceeded", "Unknown", "NoSharedLedger", msg, generation),
                _cond("Degraded", "Unknown", "NoSharedLedger", msg, generation),
                _cond("LedgerAvailable", "Unknown", "NotConfigured", msg, generation),
            ],
        }
    if not read.available:
        msg = f"shared ledger unreachable: {read.error}" if read.error else "unreachable"
        return {
            "state": "Unknown",
            "step": None,
            "percent": None,
            "spend": [],
            "conditions": [
                _cond("Exceeded", "Unknown", "LedgerUnavailable", msg, generation),
                _cond("Degraded", "Unknown", "LedgerUnavailable", msg, generation),
                _cond("LedgerAvailable", "False", "Unreachable", msg, generation),
            ],
        }
    states: Mapping[str, WindowState] = {
        w: st for (b, w), st in read.states.items() if b == budget_id
    }
    spent: dict[str, Amount] = {w: st.spent for w, st in states.items()}
    decision = decide(budget_id, spec.spend, spec.ladder, spent)
    windows = [_window_status(w, states.get(w.window, WindowState()), now) for w in spec.spend]
    refusing = [
        w.window
        for w in spec.spend
        if (at := states.get(w.window, WindowState()).refused_at) is not None
        and now - at <= REFUSING_FOR_S
    ]
    state = state_of(decision, bool(refusing))
    full = ", ".join(f"{w['window']} at {w['percent']}%" for w in windows if w["percent"] >= 100)
    if refusing and not decision.reject:
        exceeded = _cond(
            "Exceeded",
            "True",
            "Rejecting",
            "requests refused with 429: no room left in "
            + ", ".join(refusing)
            + " for their worst case (settled spend plus requests in flight)",
            generation,
        )
    elif decision.reject:
        exceeded = _cond(
            "Exceeded",
            "True",
            "Rejecting",
            f"requests refused with 429 (step reject at {decision.percent}%)"
            + (f"; {full}" if full else ""),
            generation,
        )
    elif decision.exceeded:
        exceeded = _cond("Exceeded", "True", "LimitReached", full, generation)
    else:
        exceeded = _cond("Exceeded", "False", "WithinLimits", "", generation)
    if state == "Degraded":
        degraded = _cond(
            "Degraded",
            "True",
            "LadderStep",
            f"{', '.join(decision.steps)} (fullest window at {decision.percent}%)",
            generation,
        )
    else:
        degraded = _cond("Degraded", "False", "NoStep", "", generation)
    return {
        "state": state,
        "step": "reject" if refusing else decision.step,
        "percent": decision.percent if spec.spend else None,
        "spend": windows,
        "conditions": [
            exceeded,
            degraded,
            _cond("LedgerAvailable", "True", "Reachable", "", generation),
        ],
    }


def comparable(status: Mapping[str, Any] | None) -> dict[str, Any]:
    """The owned part of a status, without transition times: equal means no write."""
    status = status or {}
    out = {k: status.get(k) for k in OWNED_FIELDS}
    out["spend"] = out["spend"] or []
    out["conditions"] = sorted(
        (
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in status.get("conditions") or ()
            if c.get("type") in OWNED_CONDITIONS
        ),
        key=lambda c: c["type"],
    )
    return out
