"""Window arithmetic, pure: which bucket spend goes to, which buckets still count, when a
window resets or frees. Time is passed in (epoch seconds), never read.

A window is a set of integer-keyed buckets (epoch seconds of the bucket's start):

- rolling (``15m``, ``1h``, ``7d``): 60 buckets of 1/60 of the window each (at least
  one second), so memory is bounded and a bucket stops counting once it lies wholly
  outside the window. Spend is counted for the last W to W + W/60 (the coarseness of
  one bucket, always on the safe side: never forgotten early).
- calendar (``hour``, ``day``, ``week``, ``month`` in a time zone): one bucket per
  period, keyed by the period's start. Periods follow the local clock: a Berlin day
  starts at local midnight and lasts 23 or 25 hours on DST days; a month starts on
  the 1st; a week on Monday. Local times that do not exist (a DST gap at midnight)
  start at the first instant after the gap; repeated ones at their first occurrence.

The same arithmetic serves the in-process ledger, the Redis ledger (whose Lua scripts
receive bucket ids from here) and Budget.status.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from ..api.budget import CALENDAR_UNITS, MAX_ROLLING_SECONDS, window_seconds
from .specs import WindowSpec

#: Window keys outlive their last write by this much (then Redis drops them).
KEY_GRACE_S = 86400
_NOMINAL = {"hour": 3600, "day": 86400, "week": 7 * 86400}


@dataclass(frozen=True, slots=True)
class Period:
    """A window as seen at one instant."""

    bucket: int
    """Bucket that spend settled now goes to."""
    live_from: int
    """Buckets with a smaller id no longer count."""
    leave_offset: int
    """Bucket ``b`` stops counting at ``b + leave_offset``."""
    resets_at: float | None
    """Calendar windows: the start of the next period. Rolling: None."""
    key_ttl_s: int
    """How long the window's shared state must be kept after a write."""


@dataclass(frozen=True, slots=True)
class Window:
    """One spend window's arithmetic (``window`` as in the Budget, plus its zone)."""

    window: str
    time_zone: str = "UTC"

    @classmethod
    def of(cls, spec: WindowSpec) -> Window:
        return cls(spec.window, spec.time_zone or "UTC")

    @property
    def calendar(self) -> bool:
        return self.window in CALENDAR_UNITS

    @property
    def bucket_s(self) -> int:
        """Rolling: bucket width. Calendar: 0 (one bucket per period)."""
        if self.calendar:
            return 0
        return max(1, window_seconds(self.window) // 60)

    def period(self, now: float) -> Period:
        if self.calendar:
            start, end = calendar_period(self.window, self.time_zone, now)
            return Period(start, start, end - start, float(end), end - start + KEY_GRACE_S)
        w = window_seconds(self.window)
        if w > MAX_ROLLING_SECONDS:
            raise ValueError(f"rolling window {self.window} is longer than a year")
        bs = self.bucket_s
        bucket = math.floor(now / bs) * bs
        live_from = math.floor((now - w) / bs) * bs
        return Period(bucket, live_from, w + bs, None, w + bs + KEY_GRACE_S)

    def retry_after(
        self,
        buckets: Mapping[int, float],
        *,
        cap: float,
        reserved: float,
        amount: float,
        now: float,
    ) -> float | None:
        """Seconds until ``amount`` fits under ``cap`` by spend ageing out alone (the
        reservations held constant); None when it never will (``reserved + amount``
        alone exceeds the cap)."""
        if reserved + amount > cap:
            return None
        p = self.period(now)
        live = sorted((b, v) for b, v in buckets.items() if b >= p.live_from)
        total = sum(v for _, v in live)
        if total + reserved + amount <= cap:
            return 0.0
        if self.calendar:
            assert p.resets_at is not None
            return max(0.0, p.resets_at - now)
        for b, v in live:
            total -= v
            if total + reserved + amount <= cap:
                return max(0.0, b + p.leave_offset - now)
        return max(0.0, live[-1][0] + p.leave_offset - now) if live else 0.0


# -- calendar periods ---------------------------------------------------------------------


def _instant(local: datetime, tz: ZoneInfo) -> int:
    """Epoch seconds of a naive local time in ``tz``: the first occurrence of a repeated
    time (``local.fold`` chooses otherwise), the end of the gap for a skipped one."""
    aware = local.replace(tzinfo=tz)
    ts = aware.timestamp()
    back = datetime.fromtimestamp(ts, tz).replace(tzinfo=None)
    if back == local.replace(fold=0):
        return int(ts)
    # A skipped local time (DST gap): find the transition, the first instant whose
    # local time is at or after ``local``. The two readings of the gap bracket it.
    a = int(local.replace(tzinfo=tz, fold=1).timestamp())
    b = int(local.replace(tzinfo=tz, fold=0).timestamp())
    lo, hi = min(a, b), max(a, b)
    target = local.replace(fold=0)
    while lo < hi:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _truncate(unit: str, ts: float, tz: ZoneInfo) -> int:
    local = datetime.fromtimestamp(ts, tz)
    if unit == "hour":
        # Keep the fold: the second 01:00-02:00 of a fall-back night is its own hour.
        naive = local.replace(minute=0, second=0, microsecond=0, tzinfo=None)
        start = int(naive.replace(tzinfo=tz, fold=local.fold).timestamp())
        if datetime.fromtimestamp(start, tz).replace(tzinfo=None) != naive:
            start = _instant(naive, tz)  # the hour began inside a gap
        return start
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None, fold=0)
    if unit == "week":
        day -= timedelta(days=day.weekday())
    elif unit == "month":
        day = day.replace(day=1)
    return _instant(day, tz)


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def calendar_period(unit: str, time_zone: str, now: float) -> tuple[int, int]:
    """(start, end) epoch seconds of the calendar ``unit`` containing ``now`` in ``time_zone``."""
    tz = _zone(time_zone)
    start = _truncate(unit, now, tz)
    if unit == "month":
        local = datetime.fromtimestamp(start, tz).replace(tzinfo=None, fold=0)
        nxt = (local.replace(day=28) + timedelta(days=4)).replace(day=1)
        return start, _instant(nxt, tz)
    nominal = _NOMINAL[unit]
    # The next period starts at the first boundary after ``start``: one nominal length
    # on lands in it, except after a longer-than-nominal period (a 25-hour day).
    for factor in (1.0, 1.5, 2.0):
        end = _truncate(unit, start + nominal * factor, tz)
        if end > start:
            return start, end
    raise AssertionError(f"no period after {start} for {unit} in {time_zone}")


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(math.ceil(ts), UTC).isoformat().replace("+00:00", "Z")
