"""Accounting: may a request spend, and what did it spend. The engine and the tiers talk
to it through a narrow interface; behind it is a ``budget.Ledger``, in this process
(one replica, ``slmfleet up``) or shared by every replica in Redis:

* ``verdict(budgets)`` - the degrade-ladder steps in force (halve reasoning, degrade,
  alert), from the ledger's last known windows, without I/O;
* ``reserve(budgets, worst, ...)`` before a tier call - hold its worst case, atomically
  against every window of every Budget; refused (``SpendRefused``) when a window with a
  hard cap cannot take it, or when the shared ledger is down and a Budget says
  ``failClosed``;
* ``settle(hold, actual)`` after it, whatever happened (answer, error, deadline, client
  gone) - charge what was really generated and release the rest. A settle runs to the
  end even when the request is cancelled meanwhile; so does a reserve with a shared
  ledger, whose hold is then released at once. With a shared ledger it runs in the
  background: the answer does not wait for the second round trip (the hold keeps
  counting its worst case until the settle lands, so no limit is passed meanwhile), and
  the same request's next reservation (an escalation) waits for it, so it never meets
  its own stale hold.

``record_usage`` records tokens and cost on the Decision and in the token/cost metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

from ..api.routerconfig import BudgetConfig
from ..budget.amounts import Amount
from ..budget.inprocess import InProcessLedger
from ..budget.ladder import fraction, percent_of
from ..budget.ledger import (
    Admission,
    BudgetLimits,
    Ledger,
    Reservation,
    WindowKey,
    WindowState,
    new_id,
)
from . import metrics as m
from .decision import Decision
from .spend import NO_STEP, SpendVerdict, verdict

#: A reservation outlives its call's own deadline by this much before the ledger drops
#: it (its replica died): long enough for a slow settle, short enough to free the room.
RESERVATION_GRACE_S = 10.0


class SpendRefused(Exception):
    """A tier call's reservation was refused: the request gets a 429 (or, for a Budget
    of that tier's specialist only, the next tier)."""

    def __init__(
        self, admission: Admission, budgets: Sequence[BudgetConfig], amount: Amount
    ) -> None:
        super().__init__(f"spend refused ({admission.reason}): {', '.join(admission.refused_by)}")
        self.admission = admission
        self.budgets = tuple(budgets)
        self.amount = amount
        """The worst case the refused reservation asked for."""

    def detail(self) -> dict[str, Any]:
        """The refusal as the log line records it (see Decision.budget_refusal)."""
        adm = self.admission
        return {
            "reason": adm.reason,
            "refused_by": list(adm.refused_by),
            "request_usd": self.amount.usd,
            "request_tokens": self.amount.tokens,
            "windows": {
                f"{b}/{w}": {
                    "spent_usd": st.spent.usd,
                    "reserved_usd": st.reserved.usd,
                    "spent_tokens": st.spent.tokens,
                    "reserved_tokens": st.reserved.tokens,
                }
                for (b, w), st in adm.states.items()
            },
        }


class Accounting(Protocol):
    def verdict(self, budgets: Sequence[BudgetConfig]) -> SpendVerdict: ...

    async def reserve(
        self, budgets: Sequence[BudgetConfig], worst: Amount, *, ttl_s: float, request_id: str
    ) -> Reservation: ...

    async def settle(self, hold: Reservation, actual: Amount) -> None: ...

    async def close(self) -> None: ...


_SETTLING: set[asyncio.Task[Any]] = set()


def _track(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """``coro`` as a task ``drain`` waits for (held until it ends)."""
    task = asyncio.ensure_future(coro)
    _SETTLING.add(task)
    task.add_done_callback(_SETTLING.discard)
    return task


async def run_to_end(coro: Coroutine[Any, Any, Any]) -> Any:
    """Await ``coro`` in a task of its own: cancelling the caller (a client that left)
    does not cancel it, so a settle started is a settle finished."""
    return await asyncio.shield(_track(coro))


class LedgerAccounting:
    """The router's accounting over one ledger (see the module docstring)."""

    def __init__(
        self, ledger: Ledger | None = None, *, settle_in_background: bool | None = None
    ) -> None:
        self.ledger: Ledger = ledger if ledger is not None else InProcessLedger()
        self.settle_in_background = (
            not isinstance(self.ledger, InProcessLedger)
            if settle_in_background is None
            else settle_in_background
        )
        """Default: for a ledger with I/O (the in-process one has no round trip to save)."""
        self._limits: dict[int, tuple[BudgetConfig, BudgetLimits]] = {}
        self._owners: dict[str, str] = {}
        """Reservation id -> its request's id, while the reservation is open."""
        self._settling: dict[str, set[asyncio.Task[Any]]] = {}
        """Request id -> its settles still under way."""
        m.LEDGER_AVAILABLE.set(1)

    def limits(self, budgets: Sequence[BudgetConfig]) -> list[BudgetLimits]:
        """The Budgets with spend windows, each once, as the ledger takes them (cached
        per configuration object: a reload brings new objects)."""
        out: dict[str, BudgetLimits] = {}
        for b in budgets:
            if not b.spend or b.id in out:
                continue
            hit = self._limits.get(id(b))
            if hit is None or hit[0] is not b:
                if len(self._limits) > 4096:
                    self._limits.clear()
                hit = self._limits[id(b)] = (b, BudgetLimits.from_config(b))
            out[b.id] = hit[1]
        return list(out.values())

    def verdict(self, budgets: Sequence[BudgetConfig]) -> SpendVerdict:
        limits = self.limits(budgets)
        if not limits:
            return NO_STEP
        return verdict(budgets, self.ledger.view(limits))

    async def reserve(
        self, budgets: Sequence[BudgetConfig], worst: Amount, *, ttl_s: float, request_id: str
    ) -> Reservation:
        limits = self.limits(budgets)
        if not limits:
            return Reservation(new_id(request_id), (), worst)
        earlier = self._settling.get(request_id)
        if earlier:  # the previous tier's settle first: this request's own hold is not room
            await asyncio.gather(*earlier, return_exceptions=True)
        t0 = time.perf_counter()
        reserving = self.ledger.reserve(
            limits, worst, ttl_s=ttl_s + RESERVATION_GRACE_S, request_id=request_id
        )
        if isinstance(self.ledger, InProcessLedger):
            adm = await reserving  # no I/O: nothing to be cancelled half-way
        else:
            adm = await self._reserve_to_end(reserving)
        m.bound(m.LEDGER_SECONDS, "reserve").observe(time.perf_counter() - t0)
        self._observe(budgets, adm.states, adm.ledger_available)
        if not adm.admitted or adm.reservation is None:
            raise SpendRefused(adm, budgets, worst)
        if self.settle_in_background:
            self._owners[adm.reservation.id] = request_id
        return adm.reservation

    async def _reserve_to_end(self, reserving: Coroutine[Any, Any, Admission]) -> Admission:
        """The ledger's reserve in a task of its own: a caller cancelled meanwhile (the
        client gone, a deadline) may land after the ledger took the hold, which nobody
        would settle and which would block its worst case until its TTL (false 429s
        under disconnect churn). The reserve runs to its end and any hold it took is
        released."""
        task = asyncio.ensure_future(reserving)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            _track(self._release_when_reserved(task))
            raise

    async def _release_when_reserved(self, task: asyncio.Future[Admission]) -> None:
        try:
            adm = await task
        except Exception:  # the ledger's own failure: it held nothing to release
            return
        if adm.admitted and adm.reservation is not None and adm.reservation.budgets:
            await self._settle(adm.reservation, Amount())

    async def settle(self, hold: Reservation, actual: Amount) -> None:
        if not hold.budgets:
            return
        if not self.settle_in_background:
            await run_to_end(self._settle(hold, actual))
            return
        task = _track(self._settle(hold, actual))
        rid = self._owners.pop(hold.id, hold.id)
        group = self._settling.setdefault(rid, set())
        group.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            group.discard(t)
            if not group and self._settling.get(rid) is group:
                del self._settling[rid]

        task.add_done_callback(done)

    async def _settle(self, hold: Reservation, actual: Amount) -> None:
        t0 = time.perf_counter()
        s = await self.ledger.settle(hold, actual)
        m.bound(m.LEDGER_SECONDS, "settle").observe(time.perf_counter() - t0)
        if s.overrun.usd > 0:
            for b in hold.budgets:
                m.bound(m.SPEND_OVERRUN, b.id).inc(s.overrun.usd)
        self._observe_view(hold.budgets, not s.queued)

    async def drain(self) -> None:
        """Wait for every settle under way (shutdown, tests)."""
        while _SETTLING:
            await asyncio.gather(*list(_SETTLING), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self.ledger.close()

    # -- metrics ----------------------------------------------------------------------
    def _observe_view(self, limits: Sequence[BudgetLimits], available: bool) -> None:
        states = self.ledger.view(limits)
        for b in limits:
            self._window_metrics(b.id, b.windows, states)
        self._availability(available)

    def _observe(
        self,
        budgets: Sequence[BudgetConfig],
        states: Any,
        available: bool,
    ) -> None:
        for b in budgets:
            if b.spend:
                self._window_metrics(b.id, b.spend, states)
        self._availability(available)

    def _availability(self, available: bool) -> None:
        m.LEDGER_AVAILABLE.set(1 if available else 0)
        m.LEDGER_PENDING.set(getattr(self.ledger, "pending", 0))

    @staticmethod
    def _window_metrics(
        budget_id: str, windows: Sequence[Any], states: dict[WindowKey, WindowState] | Any
    ) -> None:
        fullest, reserved = 0.0, 0.0
        for w in windows:
            st = states.get((budget_id, w.window))
            if st is None:
                continue
            f = fraction(w, st.spent)
            if f >= fullest:
                fullest, reserved = f, st.reserved.usd
            m.bound(m.SPEND, budget_id, w.window).set(st.spent.usd)
            m.bound(m.SPEND_TOKENS, budget_id, w.window).set(st.spent.tokens)
            m.bound(m.BUDGET_EXCEEDED, budget_id, w.window, w.action).set(1 if f >= 1 else 0)
        m.bound(m.BUDGET_PERCENT, budget_id).set(percent_of(fullest))
        m.bound(m.SPEND_RESERVED, budget_id).set(reserved)


def record_usage(
    d: Decision, policy: str, target: str, pt: int, ct: int, rt: int, cost: float
) -> None:
    """Tokens and cost of one tier call: on the Decision and in the metrics."""
    d.prompt_tokens += pt
    d.completion_tokens += ct
    d.reasoning_tokens += rt
    d.cost_usd += cost
    m.bound(m.TOKENS, policy, target, "input").inc(pt)
    m.bound(m.TOKENS, policy, target, "output").inc(ct)
    if rt:
        m.bound(m.TOKENS, policy, target, "reasoning").inc(rt)
    if cost:
        m.bound(m.COST, policy, target).inc(cost)
