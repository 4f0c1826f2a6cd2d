"""The shared ledger: spend windows in Redis (or Valkey), every operation one atomic
server-side Lua script, so concurrent router replicas can never jointly pass a cap.

Fail modes. When Redis is unreachable, times out or answers garbage (anything that is
not the scripts' reply shape), nothing crashes and nothing is lost:

- a Budget with ``failClosed`` refuses (reason ``ledger_unavailable``, Retry-After);
- with ``failOpen`` the replica admits against what it knows: the spend last seen in
  Redis plus what it counted itself since (``InProcessLedger`` with that baseline).
  Replicas cannot see each other then, so N replicas may jointly pass a cap by up to
  N times its headroom at the outage;
- every settle made while Redis is down is kept and replayed once Redis answers. The
  settle of a reservation Redis holds is replayed under that reservation's own id
  (up to ``MAX_ORPHANS`` of them): the settle script counts an id once, so a settle
  that Redis applied but whose reply was lost (it stopped mid-call) is not counted
  twice, and the hold is released at once. A reserve whose answer never came (a
  timeout, a garbage reply) is released the same way: Redis may have taken the hold.
  Settles of reservations made locally
  during the outage are aggregated per window and bucket (bounded memory), each batch
  under its own id so a retried replay counts once.

Down is a state (``outage.Availability``): the first failed shared call turns it on,
builds the fail-open baseline and logs one warning; operations then go straight to the
fallback, and every ``retry_interval_s`` one probe in the background (never a request)
tries Redis; the first shared call that answers ends the outage. Requests in flight
when Redis stops answering wait for their timeout; requests arriving during the outage
wait for nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .amounts import Amount
from .inprocess import InProcessLedger
from .ledger import (
    RETRY_SOON_S,
    Admission,
    BudgetLimits,
    LedgerRead,
    Reservation,
    Settlement,
    WindowCall,
    WindowKey,
    WindowState,
    fits,
    new_id,
    overrun,
    refusal,
    unique,
    window_calls,
)
from .outage import Availability, Orphan, Pending, outage_baseline
from .redis_wire import LedgerUnavailable, RedisSettings, ReplyReader, connect, load_script
from .windows import Window

log = logging.getLogger("slmfleet.budget")

#: How long a settled reservation id is remembered (a settle retried later counts once).
SETTLED_MEMORY_S = 86400
#: Most reservations settled during an outage that are remembered for release.
MAX_ORPHANS = 10_000


class RedisLedger:
    def __init__(
        self,
        settings: RedisSettings,
        *,
        client: aioredis.Redis | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.redis = client or connect(settings)
        self._reserve = self.redis.register_script(load_script("reserve.lua"))
        self._settle = self.redis.register_script(load_script("settle.lua"))
        self._read = self.redis.register_script(load_script("read.lua"))
        self._state = Availability(settings.retry_interval_s, monotonic)
        self._prober: asyncio.Task[None] | None = None
        self._local = InProcessLedger(clock=clock, monotonic=monotonic)
        self._known: dict[WindowKey, WindowState] = {}
        self._pending: dict[tuple[str, str, int], Pending] = {}
        self._sealed: list[Pending] = []
        self._orphans: dict[str, Orphan] = {}
        """Settles of reservations Redis holds, made during an outage: replayed by id."""
        self._flusher: asyncio.Task[None] | None = None

    # -- keys --------------------------------------------------------------------------

    def _keys(self, key: WindowKey) -> list[str]:
        base = f"{self.settings.key_prefix}:w:{key[0]}:{key[1]}"
        return [base, base + ":x", base + ":b"]

    # -- availability ------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False from the first failed shared call until one answers again."""
        return not self._state.down

    @property
    def last_error(self) -> str:
        return self._state.last_error

    def _failed(self, exc: BaseException) -> None:
        if not self._state.failed(str(exc) or type(exc).__name__):
            log.debug("ledger still unavailable (%s)", exc)
            return
        log.warning("ledger unavailable (%s): using the fail modes", exc)
        # What we last saw of the shared spend, plus what Redis has not seen yet,
        # becomes the local baseline, once per outage.
        self._local = InProcessLedger(clock=self.clock, monotonic=self.monotonic)
        batches = [*self._sealed, *self._pending.values()]
        for key, spent in outage_baseline(self._known, batches, self._orphans.values()).items():
            self._local.set_baseline(key, spent)

    def _answered(self) -> None:
        if self._state.succeeded():
            log.info("ledger available again")

    def _probe_soon(self) -> None:
        """Down and due: one probe in the background (the caller does not wait)."""
        if self._state.start_probe():
            self._prober = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        try:
            r = ReplyReader(await self._call(self._read, [], [0]))
            if r.int() != 0:
                raise LedgerUnavailable("garbage probe reply")
            r.done()
        except LedgerUnavailable as exc:
            self._failed(exc)
        else:
            self._answered()
            self._recovered()
        finally:
            self._state.end_probe()

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await asyncio.wait_for(
                script(keys=keys, args=args), timeout=self.settings.timeout_s * 2
            )
        except (RedisError, OSError, TimeoutError) as exc:
            raise LedgerUnavailable(str(exc) or type(exc).__name__) from exc

    def _recovered(self) -> None:
        idle = self._flusher is None or self._flusher.done()
        if (self._pending or self._sealed or self._orphans) and idle:
            self._flusher = asyncio.get_running_loop().create_task(self.flush())

    # -- reserve -----------------------------------------------------------------------

    async def reserve(
        self,
        budgets: Sequence[BudgetLimits],
        amount: Amount,
        *,
        ttl_s: float,
        request_id: str | None = None,
    ) -> Admission:
        now = self.clock()
        calls = window_calls(budgets, now)
        if not calls:
            return Admission(True, Reservation(new_id(request_id), (), amount, local=True))
        if self.available:
            rid = new_id(request_id)
            try:
                adm = await self._reserve_shared(calls, budgets, amount, ttl_s, rid, now)
                self._answered()
                self._recovered()
                return adm
            except LedgerUnavailable as exc:
                if maybe_applied(exc) and len(self._orphans) < MAX_ORPHANS:
                    # Redis may have taken the hold and lost the answer: released (by
                    # its id, once Redis answers) rather than held until its TTL.
                    self._orphans[rid] = Orphan(rid, Amount(), calls)
                self._failed(exc)
        else:
            self._probe_soon()
        return self._reserve_fallback(budgets, amount, ttl_s, request_id, now)

    async def _reserve_shared(
        self,
        calls: list[WindowCall],
        budgets: Sequence[BudgetLimits],
        amount: Amount,
        ttl_s: float,
        rid: str,
        now: float,
    ) -> Admission:
        keys: list[str] = []
        args: list[Any] = [rid, max(1, int(ttl_s * 1000)), len(calls)]
        for c in calls:
            keys += self._keys(c.key)
            args += [
                c.period.live_from,
                amount.nano_usd_ceil,
                amount.tokens,
                -1 if c.cap_nano is None else c.cap_nano,
                -1 if c.cap_tokens is None else c.cap_tokens,
                c.period.key_ttl_s,
            ]
        r = ReplyReader(await self._call(self._reserve, keys, args))
        admitted = r.int()
        if admitted not in (0, 1) or r.int() != len(calls):
            raise LedgerUnavailable("garbage reserve reply")
        states = {c.key: r.state(with_buckets=True) for c in calls}
        r.done()
        self._known.update({k: WindowState(s.spent, s.reserved) for k, s in states.items()})
        if admitted:
            return Admission(True, Reservation(rid, unique(budgets), amount), states=states)
        refused = [i for i, c in enumerate(calls) if _full(c, states[c.key], amount)]
        if not refused:
            raise LedgerUnavailable("reserve refused with no full window")
        return refusal(calls, refused, states, amount, now)

    def _reserve_fallback(
        self,
        budgets: Sequence[BudgetLimits],
        amount: Amount,
        ttl_s: float,
        request_id: str | None,
        now: float,
    ) -> Admission:
        closed = [b.id for b in budgets if b.fail_mode == "failClosed"]
        if closed:
            return Admission(
                False,
                reason="ledger_unavailable",
                retry_after_s=max(RETRY_SOON_S, int(self.settings.retry_interval_s)),
                refused_by=tuple(closed),
                ledger_available=False,
            )
        adm = self._local.reserve_now(
            budgets, amount, ttl_s=ttl_s, request_id=request_id, now=now, local=True
        )
        return Admission(
            adm.admitted,
            adm.reservation,
            adm.reason,
            adm.retry_after_s,
            adm.refused_by,
            adm.states,
            ledger_available=False,
        )

    # -- settle ------------------------------------------------------------------------

    async def settle(self, reservation: Reservation, actual: Amount) -> Settlement:
        now = self.clock()
        calls = window_calls(reservation.budgets, now)
        if not calls:
            return Settlement(True, True, overrun(reservation.amount, actual))
        if self.available:
            try:
                s = await self._settle_shared(reservation.id, calls, actual, now)
                self._answered()
                self._recovered()
                return Settlement(s[0], s[1], overrun(reservation.amount, actual))
            except LedgerUnavailable as exc:
                self._failed(exc)
        else:
            self._probe_soon()
        # Down: count it locally (the fail-open guard sees it) and keep it for replay.
        self._local.settle_now(reservation, actual, now=now)
        if not reservation.local and len(self._orphans) < MAX_ORPHANS:
            self._orphans[reservation.id] = Orphan(reservation.id, actual, calls)
        else:
            for c in calls:
                self._queue(c, actual)
        return Settlement(True, False, overrun(reservation.amount, actual), queued=True)

    async def release(self, reservation: Reservation) -> Settlement:
        return await self.settle(reservation, Amount())

    async def _settle_shared(
        self, sid: str, calls: list[WindowCall], actual: Amount, now: float
    ) -> tuple[bool, bool]:
        keys: list[str] = []
        args: list[Any] = [sid, len(calls), SETTLED_MEMORY_S]
        for c in calls:
            keys += self._keys(c.key)
            args += [
                c.period.bucket,
                c.period.live_from,
                actual.nano_usd,
                actual.tokens,
                c.period.key_ttl_s,
            ]
        keys.append(f"{self.settings.key_prefix}:s:{sid}")
        r = ReplyReader(await self._call(self._settle, keys, args))
        status, found, n = r.int(), r.int(), r.int()
        if status not in (1, 2) or found not in (0, 1) or n != len(calls):
            raise LedgerUnavailable("garbage settle reply")
        for c in calls:
            self._known[c.key] = r.state(with_buckets=False)
        r.done()
        return status == 1, bool(found)

    def _queue(self, c: WindowCall, actual: Amount) -> None:
        if actual.nano_usd == 0 and actual.tokens == 0:
            return
        key = (c.key[0], c.key[1], c.period.bucket)
        p = self._pending.get(key)
        if p is None:
            self._pending[key] = Pending(
                uuid.uuid4().hex, c.key[0], c.spec, c.period.bucket, actual
            )
        else:
            p.amount = p.amount + actual

    @property
    def pending(self) -> int:
        """Batches and settles of spend counted while Redis was down, not yet replayed."""
        return len(self._pending) + len(self._sealed) + len(self._orphans)

    async def flush(self) -> int:
        """Replay spend counted while Redis was down; returns the batches replayed."""
        batches = self._sealed + list(self._pending.values())
        self._sealed, self._pending = [], {}
        done = 0
        for i, p in enumerate(batches):
            p.sealed = True
            win = Window.of(p.spec)
            # The spend goes to the bucket it was counted in (gone if that aged out).
            period = replace(win.period(self.clock()), bucket=p.bucket)
            call = WindowCall((p.budget_id, p.spec.window), p.spec, win, period, None, None)
            try:
                await self._settle_shared(p.replay_id, [call], p.amount, self.clock())
                self._answered()
                done += 1
            except LedgerUnavailable as exc:
                self._sealed.extend(batches[i:])
                self._failed(exc)
                return done
        if done:
            log.info("ledger reconciled: %d batches of spend counted while it was down", done)
        return done + await self._replay_orphans()

    async def _replay_orphans(self) -> int:
        """Settle, by their own ids and in the buckets of their time, the reservations
        Redis holds that were settled while it was down (counted once, released)."""
        done = 0
        for rid, o in list(self._orphans.items()):
            try:
                await self._settle_shared(rid, o.calls, o.actual, self.clock())
                self._answered()
            except LedgerUnavailable as exc:
                self._failed(exc)
                break
            del self._orphans[rid]
            done += 1
        return done

    # -- read --------------------------------------------------------------------------

    async def read(self, budgets: Sequence[BudgetLimits]) -> LedgerRead:
        now = self.clock()
        calls = window_calls(budgets, now)
        if not calls:
            return LedgerRead({})
        keys: list[str] = []
        args: list[Any] = [len(calls)]
        for c in calls:
            keys += self._keys(c.key)
            args.append(c.period.live_from)
        try:
            r = ReplyReader(await self._call(self._read, keys, args))
            if r.int() != len(calls):
                raise LedgerUnavailable("garbage read reply")
            states = {c.key: r.state(with_buckets=True, refused=True) for c in calls}
            r.done()
        except LedgerUnavailable as exc:
            self._failed(exc)
            return LedgerRead({}, available=False, error=self.last_error)
        self._answered()
        self._known.update({k: WindowState(s.spent, s.reserved) for k, s in states.items()})
        self._recovered()
        return LedgerRead(states)

    def view(self, budgets: Sequence[BudgetLimits]) -> Mapping[WindowKey, WindowState]:
        """The windows as this replica last saw them (every reply carries the totals)."""
        if not self.available:
            return self._local.read_now(budgets).states
        keys = {(b.id, w.window) for b in budgets for w in b.windows}
        return {k: s for k, s in self._known.items() if k in keys}

    async def close(self) -> None:
        if self._prober is not None and not self._prober.done():
            self._prober.cancel()
        if self._flusher is not None and not self._flusher.done():
            try:
                await asyncio.wait_for(self._flusher, timeout=self.settings.timeout_s * 4)
            except (TimeoutError, asyncio.CancelledError):
                self._flusher.cancel()
        await self.redis.aclose()


def _full(c: WindowCall, st: WindowState, amount: Amount) -> bool:
    spent, res = st.spent, st.reserved
    return not fits(c, spent.nano_usd, spent.tokens, res.nano_usd, res.tokens, amount)


def maybe_applied(exc: LedgerUnavailable) -> bool:
    """Whether Redis may have run the script a failed call sent: anything but a
    connection that was never made (a timeout, a garbage reply, a broken reply)."""
    cause = exc.__cause__
    if isinstance(cause, (TimeoutError, RedisTimeoutError)):
        return True
    return not isinstance(cause, (OSError, RedisConnectionError))
