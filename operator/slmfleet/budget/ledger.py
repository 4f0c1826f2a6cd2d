"""The spend ledger: reserve a call's worst case before it, settle its actual cost after.

``Ledger`` is the interface the router's accounting calls; ``inprocess.InProcessLedger``
keeps the windows in this process (one replica, ``slmfleet up``); ``redis_ledger.RedisLedger``
shares them between replicas with atomic server-side scripts. Both implement the same
rules, in integer nano-dollars and tokens, so they agree to the unit (a test replays
one sequence of operations on both):

- ``reserve`` is all-or-nothing over every window of every covering Budget: it admits
  only if, for each window with a hard cap, spent + reserved + amount <= cap. A refusal
  says which windows refused and when to retry.
- ``settle`` adds the actual amount to the window's current bucket and drops the
  reservation. Settling twice counts once; settling after the reservation expired
  still counts the spend, once.
- a reservation not settled within its TTL is released (its process died): it stops
  counting against the caps, and is never charged.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from ..api.budget import BudgetSpec, FailMode
from ..api.routerconfig import BudgetConfig
from .amounts import Amount
from .ladder import hard_cap
from .specs import StepSpec, WindowSpec
from .windows import Period, Window

WindowKey = tuple[str, str]
"""(budget id, window)."""

RefusalReason = Literal["", "limit", "too_large", "ledger_unavailable"]
#: Retry-After when reservations in flight, not settled spend, fill a window: they
#: settle within a request's time.
RETRY_SOON_S = 1


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """What the ledger needs of one Budget (from its spec or the router config)."""

    id: str
    windows: tuple[WindowSpec, ...]
    ladder: tuple[StepSpec, ...] = ()
    fail_mode: FailMode = "failOpen"

    @classmethod
    def from_spec(cls, budget_id: str, spec: BudgetSpec) -> BudgetLimits:
        return cls(budget_id, tuple(spec.spend), tuple(spec.ladder), spec.fail_mode)

    @classmethod
    def from_config(cls, cfg: BudgetConfig) -> BudgetLimits:
        """The router's view: the Budget as the operator rendered it."""
        return cls(cfg.id, tuple(cfg.spend), tuple(cfg.ladder), cfg.fail_mode)


@dataclass(frozen=True, slots=True)
class WindowState:
    spent: Amount = field(default_factory=Amount)
    reserved: Amount = field(default_factory=Amount)
    buckets: Mapping[int, Amount] | None = None
    """Live buckets (bucket id -> settled amount), when the operation returned them."""
    refused_at: float | None = field(default=None, compare=False)
    """When this window last refused a reservation that would fit an empty window (it
    binds: clients see 429s), epoch seconds; read operations return it. Each ledger
    stamps it with its own clock (Redis: the server's), so it is not compared."""


@dataclass(frozen=True, slots=True)
class Reservation:
    id: str
    budgets: tuple[BudgetLimits, ...]
    amount: Amount
    local: bool = False
    """Made by the fail-open fallback while the shared ledger was unreachable."""


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    reservation: Reservation | None = None
    reason: RefusalReason = ""
    """limit: a window is full for now; too_large: the amount alone passes a cap;
    ledger_unavailable: the shared ledger is down and a Budget says failClosed."""
    retry_after_s: int = 0
    refused_by: tuple[str, ...] = ()
    """``budget-id/window`` of every window that refused."""
    states: Mapping[WindowKey, WindowState] = field(default_factory=dict)
    """Every window as the operation saw it (after the reservation, if admitted)."""
    ledger_available: bool = True


@dataclass(frozen=True, slots=True)
class Settlement:
    counted: bool = True
    """False when this reservation was already settled (a retry): nothing added."""
    reservation_found: bool = True
    """False when the reservation had expired (or was local): the spend still counts."""
    overrun: Amount = field(default_factory=Amount)
    """Actual beyond the reservation (0 when reservations are true worst cases)."""
    queued: bool = False
    """The shared ledger was unreachable: counted locally, reconciled later."""


@dataclass(frozen=True, slots=True)
class LedgerRead:
    states: Mapping[WindowKey, WindowState]
    available: bool = True
    error: str = ""
    configured: bool = True
    """False: no shared ledger at all (each router replica keeps its own windows)."""


class Ledger(Protocol):
    async def reserve(
        self,
        budgets: Sequence[BudgetLimits],
        amount: Amount,
        *,
        ttl_s: float,
        request_id: str | None = None,
    ) -> Admission: ...

    async def settle(self, reservation: Reservation, actual: Amount) -> Settlement: ...

    async def release(self, reservation: Reservation) -> Settlement: ...

    async def read(self, budgets: Sequence[BudgetLimits]) -> LedgerRead: ...

    def view(self, budgets: Sequence[BudgetLimits]) -> Mapping[WindowKey, WindowState]: ...

    async def close(self) -> None: ...


# -- shared pieces of both implementations ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowCall:
    """One window's part of an operation: what the scripts (or the in-process core) get."""

    key: WindowKey
    spec: WindowSpec
    window: Window
    period: Period
    cap_nano: int | None
    cap_tokens: int | None


def unique(budgets: Sequence[BudgetLimits]) -> tuple[BudgetLimits, ...]:
    """Each Budget once, however many ways it covers the request."""
    return tuple({b.id: b for b in budgets}.values())


def window_calls(budgets: Sequence[BudgetLimits], now: float) -> list[WindowCall]:
    calls = []
    for b in unique(budgets):
        for spec in b.windows:
            win = Window.of(spec)
            frac = hard_cap(spec, b.ladder)
            cap_n = cap_t = None
            if frac is not None:
                if spec.limit_usd is not None:
                    cap_n = math.floor(spec.limit_usd * frac * 1e9 + 1e-6)
                if spec.limit_tokens is not None:
                    cap_t = math.floor(spec.limit_tokens * frac + 1e-9)
            calls.append(WindowCall((b.id, spec.window), spec, win, win.period(now), cap_n, cap_t))
    return calls


def refusal(
    calls: Sequence[WindowCall],
    refused: Sequence[int],
    states: Mapping[WindowKey, WindowState],
    amount: Amount,
    now: float,
) -> Admission:
    """The Admission for refused windows: Retry-After from when their spend ages out."""
    too_large = False
    retry = 0.0
    for i in refused:
        c = calls[i]
        st = states[c.key]
        buckets = st.buckets or {}
        for cap, amt, unit in (
            (c.cap_nano, amount.nano_usd_ceil, "usd"),
            (c.cap_tokens, amount.tokens, "tokens"),
        ):
            if cap is None:
                continue
            if amt > cap:
                too_large = True
                continue
            series = {b: (a.nano_usd if unit == "usd" else a.tokens) for b, a in buckets.items()}
            # Reservations may settle for much less than their worst case, and soon:
            # the earliest the amount can fit is when settled spend alone leaves room.
            # Ageing out to under the cap (an exhausted window refuses even nothing).
            wait = c.window.retry_after(series, cap=cap, reserved=0, amount=max(amt, 1), now=now)
            retry = max(retry, wait or RETRY_SOON_S)
    if too_large:
        longest = max(calls[i].period.leave_offset for i in refused)
        return Admission(
            False,
            reason="too_large",
            retry_after_s=longest,
            refused_by=tuple(f"{calls[i].key[0]}/{calls[i].key[1]}" for i in refused),
            states=states,
        )
    return Admission(
        False,
        reason="limit",
        retry_after_s=max(1, math.ceil(retry)),
        refused_by=tuple(f"{calls[i].key[0]}/{calls[i].key[1]}" for i in refused),
        states=states,
    )


def fits(c: WindowCall, spent_n: int, spent_t: int, res_n: int, res_t: int, amount: Amount) -> bool:
    """Whether ``amount`` fits under the window's hard caps. A window whose settled spend
    reached its cap is exhausted: it refuses even a call that costs nothing in its unit
    (a free model under a USD limit), as its ``reject`` step says."""
    if c.cap_nano is not None and (
        spent_n + res_n + amount.nano_usd_ceil > c.cap_nano or spent_n >= c.cap_nano
    ):
        return False
    return not (
        c.cap_tokens is not None
        and (spent_t + res_t + amount.tokens > c.cap_tokens or spent_t >= c.cap_tokens)
    )


def binds(c: WindowCall, amount: Amount) -> bool:
    """Whether a refusal by this window is the window binding (``amount`` would fit it
    empty), not a request too large for it: what Budget.status reports as Exceeded."""
    return not (
        (c.cap_nano is not None and amount.nano_usd_ceil > c.cap_nano)
        or (c.cap_tokens is not None and amount.tokens > c.cap_tokens)
    )


def overrun(reserved: Amount, actual: Amount) -> Amount:
    return Amount(max(0.0, actual.usd - reserved.usd), max(0, actual.tokens - reserved.tokens))


def spent_by_window(states: Mapping[WindowKey, WindowState], budget_id: str) -> dict[str, Amount]:
    """The settled spend of one Budget's windows, as ``ladder.decide`` takes it."""
    return {w: st.spent for (b, w), st in states.items() if b == budget_id}


def new_id(request_id: str | None = None) -> str:
    suffix = uuid.uuid4().hex[:16]
    return f"{request_id}:{suffix}" if request_id else suffix
