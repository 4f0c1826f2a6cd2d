"""The in-process ledger: the windows of one replica in memory (``slmfleet up``, a single
router). Exact and atomic (no await inside an operation), forgotten on restart; the
same rules as ``redis_ledger.RedisLedger``, to the unit (see ``ledger``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .amounts import Amount
from .ledger import (
    Admission,
    BudgetLimits,
    LedgerRead,
    Reservation,
    Settlement,
    WindowKey,
    WindowState,
    binds,
    fits,
    new_id,
    overrun,
    refusal,
    unique,
    window_calls,
)


@dataclass
class _Win:
    buckets: dict[int, list[int]] = field(default_factory=dict)  # id -> [nano, tokens]
    reservations: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    baseline: tuple[int, int] = (0, 0)
    """Spend known from elsewhere (the shared ledger, before it became unreachable)."""
    refused_at: float | None = None

    def normalize(self, live_from: int, now_mono: float) -> None:
        for rid in [r for r, v in self.reservations.items() if v[2] <= now_mono]:
            del self.reservations[rid]
        for b in [b for b in self.buckets if b < live_from]:
            del self.buckets[b]

    def totals(self) -> tuple[int, int, int, int]:
        sn = self.baseline[0] + sum(v[0] for v in self.buckets.values())
        st = self.baseline[1] + sum(v[1] for v in self.buckets.values())
        rn = sum(v[0] for v in self.reservations.values())
        rt = sum(v[1] for v in self.reservations.values())
        return sn, st, rn, rt

    def state(self, with_buckets: bool) -> WindowState:
        sn, st, rn, rt = self.totals()
        buckets = None
        if with_buckets:
            buckets = {b: Amount.from_nano(v[0], v[1]) for b, v in sorted(self.buckets.items())}
        refused = self.refused_at if with_buckets else None
        return WindowState(Amount.from_nano(sn, st), Amount.from_nano(rn, rt), buckets, refused)


class InProcessLedger:
    """The ledger of a single replica: exact, atomic (no await inside an operation),
    forgotten on restart. ``clock`` gives epoch seconds (windows), ``monotonic`` the
    reservations' expiry."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        settled_memory: int = 100_000,
    ) -> None:
        self.clock = clock
        self.monotonic = monotonic
        self._wins: dict[WindowKey, _Win] = {}
        self._settled: dict[str, None] = {}
        self._settled_memory = settled_memory

    def _win(self, key: WindowKey) -> _Win:
        win = self._wins.get(key)
        if win is None:
            win = self._wins[key] = _Win()
        return win

    def set_baseline(self, key: WindowKey, spent: Amount) -> None:
        self._win(key).baseline = (spent.nano_usd, spent.tokens)

    def reserve_now(
        self,
        budgets: Sequence[BudgetLimits],
        amount: Amount,
        *,
        ttl_s: float,
        request_id: str | None = None,
        now: float | None = None,
        local: bool = False,
    ) -> Admission:
        now = self.clock() if now is None else now
        mono = self.monotonic()
        calls = window_calls(budgets, now)
        rid = new_id(request_id)
        refused = []
        for i, c in enumerate(calls):
            win = self._win(c.key)
            win.normalize(c.period.live_from, mono)
            if not fits(c, *win.totals(), amount):
                refused.append(i)
        if refused:
            for i in refused:
                if binds(calls[i], amount):
                    self._win(calls[i].key).refused_at = now
            states = {c.key: self._win(c.key).state(True) for c in calls}
            return refusal(calls, refused, states, amount, now)
        for c in calls:
            self._win(c.key).reservations[rid] = (amount.nano_usd_ceil, amount.tokens, mono + ttl_s)
        states = {c.key: self._win(c.key).state(False) for c in calls}
        res = Reservation(rid, unique(budgets), amount, local=local)
        return Admission(True, res, states=states)

    def settle_now(
        self, reservation: Reservation, actual: Amount, *, now: float | None = None
    ) -> Settlement:
        now = self.clock() if now is None else now
        if reservation.id in self._settled:
            return Settlement(counted=False, reservation_found=False)
        mono = self.monotonic()
        found = False
        for c in window_calls(reservation.budgets, now):
            win = self._win(c.key)
            win.normalize(c.period.live_from, mono)
            found = win.reservations.pop(reservation.id, None) is not None or found
            cell = win.buckets.setdefault(c.period.bucket, [0, 0])
            cell[0] += actual.nano_usd
            cell[1] += actual.tokens
        self._settled[reservation.id] = None
        if len(self._settled) > self._settled_memory:
            self._settled.pop(next(iter(self._settled)))
        return Settlement(True, found, overrun(reservation.amount, actual))

    def read_now(self, budgets: Sequence[BudgetLimits], *, now: float | None = None) -> LedgerRead:
        now = self.clock() if now is None else now
        mono = self.monotonic()
        states = {}
        for c in window_calls(budgets, now):
            win = self._win(c.key)
            win.normalize(c.period.live_from, mono)
            states[c.key] = win.state(True)
        return LedgerRead(states)

    # -- the Ledger interface ------------------------------------------------------------

    async def reserve(
        self,
        budgets: Sequence[BudgetLimits],
        amount: Amount,
        *,
        ttl_s: float,
        request_id: str | None = None,
    ) -> Admission:
        return self.reserve_now(budgets, amount, ttl_s=ttl_s, request_id=request_id)

    async def settle(self, reservation: Reservation, actual: Amount) -> Settlement:
        return self.settle_now(reservation, actual)

    async def release(self, reservation: Reservation) -> Settlement:
        return self.settle_now(reservation, Amount())

    async def read(self, budgets: Sequence[BudgetLimits]) -> LedgerRead:
        return self.read_now(budgets)

    def view(self, budgets: Sequence[BudgetLimits]) -> Mapping[WindowKey, WindowState]:
        """The windows now, without I/O (for the ladder, before a reservation)."""
        return {k: s for k, s in self.read_now(budgets).states.items()}

    async def close(self) -> None:
        return None
