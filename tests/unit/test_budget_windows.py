"""Window arithmetic: rolling buckets and calendar periods in time zones, DST included."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from slmfleet.budget.windows import Window, calendar_period, rfc3339


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def iso(t: float) -> str:
    return rfc3339(t)


@pytest.mark.parametrize(
    ("unit", "zone", "now", "start", "end", "hours"),
    [
        # An ordinary Berlin day: local midnight to midnight, 24 hours.
        ("day", "Europe/Berlin", "2026-01-15T12:00:00+00:00",
         "2026-01-14T23:00:00Z", "2026-01-15T23:00:00Z", 24),
        # Spring forward (29 March 2026): the day has 23 hours.
        ("day", "Europe/Berlin", "2026-03-29T10:00:00+00:00",
         "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z", 23),
        # Fall back (25 October 2026): 25 hours.
        ("day", "Europe/Berlin", "2026-10-25T10:00:00+00:00",
         "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", 25),
        # The repeated hour of a fall-back night is an hour of its own, twice.
        ("hour", "Europe/Berlin", "2026-10-25T00:30:00+00:00",
         "2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", 1),
        ("hour", "Europe/Berlin", "2026-10-25T01:30:00+00:00",
         "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z", 1),
        # Half-hour zone: hours start at :30 UTC.
        ("hour", "Asia/Kolkata", "2026-05-01T10:45:00+00:00",
         "2026-05-01T10:30:00Z", "2026-05-01T11:30:00Z", 1),
        # Months, in New York, across the DST change in March (31 days minus an hour).
        ("month", "America/New_York", "2026-03-15T00:00:00+00:00",
         "2026-03-01T05:00:00Z", "2026-04-01T04:00:00Z", 743),
        ("month", "UTC", "2024-02-29T23:59:59+00:00",
         "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z", 696),
        # Weeks start on Monday (5 January 2026 is a Monday).
        ("week", "UTC", "2026-01-11T23:59:59+00:00",
         "2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z", 168),
        # A midnight that does not exist (Santiago springs forward at 24:00 -> 01:00 on
        # 6 September 2026): the day starts at the first instant after the gap.
        ("day", "America/Santiago", "2026-09-06T12:00:00+00:00",
         "2026-09-06T04:00:00Z", "2026-09-07T03:00:00Z", 23),
    ],
)  # fmt: skip
def test_calendar_periods(unit, zone, now, start, end, hours):
    s, e = calendar_period(unit, zone, ts(now))
    assert (iso(s), iso(e)) == (start, end)
    assert (e - s) / 3600 == hours


def test_calendar_periods_tile_time():
    """Consecutive periods meet exactly: no gap, no overlap, through a whole DST year."""
    for zone in ("Europe/Berlin", "Australia/Lord_Howe", "America/Santiago"):
        for unit in ("hour", "day"):
            t = ts("2026-01-01T00:00:00+00:00")
            s, e = calendar_period(unit, zone, t)
            stop = t + 366 * 86400 if unit == "day" else t + 40 * 86400
            while e < stop:
                s2, e2 = calendar_period(unit, zone, e)
                assert s2 == e, (zone, unit, iso(e))
                assert calendar_period(unit, zone, e - 1) == (s, e)
                s, e = s2, e2


@pytest.mark.parametrize(
    ("window", "bucket_s", "leave"),
    [("1m", 1, 61), ("15m", 15, 915), ("1h", 60, 3660), ("7d", 10080, 614880)],
)
def test_rolling_buckets(window, bucket_s, leave):
    w = Window(window)
    assert w.bucket_s == bucket_s
    p = w.period(1_000_000.5)
    assert p.bucket % bucket_s == 0 and p.bucket <= 1_000_000.5 < p.bucket + bucket_s
    assert p.leave_offset == leave and p.resets_at is None
    # A bucket counts while any part of it lies in the window.
    assert p.live_from + bucket_s > 1_000_000.5 - (leave - bucket_s)
    assert p.live_from <= 1_000_000.5 - (leave - bucket_s)


def test_rolling_retry_after_ages_out_oldest_first():
    w = Window("1h")  # 60 s buckets
    now = 36_000.0
    buckets = {now - 3000: 5, now - 1200: 3, now - 60: 1}
    # 9 spent, cap 10: 1 fits now, 2 needs the oldest (5) gone at b + 3660.
    assert w.retry_after(buckets, cap=10, reserved=0, amount=1, now=now) == 0
    assert w.retry_after(buckets, cap=10, reserved=0, amount=2, now=now) == 660
    assert w.retry_after(buckets, cap=10, reserved=0, amount=7, now=now) == 3660 - 1200
    assert w.retry_after(buckets, cap=10, reserved=4, amount=7, now=now) is None
    # Buckets already out of the window do not count.
    assert w.retry_after({now - 4000: 100}, cap=10, reserved=0, amount=1, now=now) == 0


def test_calendar_retry_after_is_the_reset():
    w = Window("day", "Europe/Berlin")
    now = ts("2026-01-15T12:00:00+00:00")
    start, end = calendar_period("day", "Europe/Berlin", now)
    assert w.retry_after({start: 10}, cap=10, reserved=0, amount=1, now=now) == end - now
    assert w.retry_after({start - 86400: 10}, cap=10, reserved=0, amount=1, now=now) == 0


def test_calendar_window_bucket_is_the_period():
    w = Window("month", "UTC")
    p = w.period(ts("2026-07-20T08:00:00+00:00"))
    assert iso(p.bucket) == "2026-07-01T00:00:00Z" and p.live_from == p.bucket
    assert iso(p.resets_at) == "2026-08-01T00:00:00Z"
    assert p.leave_offset == 31 * 86400


def test_rfc3339_is_utc():
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert datetime.fromisoformat(rfc3339(1.2).replace("Z", "+00:00")) == datetime(
        1970, 1, 1, 0, 0, 2, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("window", "accepted"),
    [("366d", True), ("8784h", True), ("9999m", True), ("month", True),
     ("367d", False), ("8785h", False), ("9999d", False)],
)  # fmt: skip
def test_the_api_accepts_exactly_the_windows_the_runtime_computes(window, accepted):
    """Budget and router config refuse, naming the field, every window that would make
    each ledger operation fail at runtime (a 500 per request, no status at all)."""
    from pydantic import ValidationError

    from slmfleet.api.budget import SpendWindow
    from slmfleet.api.routerconfig import SpendWindowConfig

    for model in (SpendWindow, SpendWindowConfig):
        body = {"window": window, "limitUsd": 1}
        if accepted:
            spec = model.model_validate(body)
            assert Window.of(spec).period(1.78e9).key_ttl_s > 0
        else:
            with pytest.raises(ValidationError, match="at most a year") as exc:
                model.model_validate(body)
            assert exc.value.errors()[0]["loc"] == ("window",)
    if not accepted:
        with pytest.raises(ValueError, match="longer than a year"):
            Window(window, "UTC").period(1.78e9)
