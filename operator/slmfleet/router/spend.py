"""Spend, pure: request cost, rolling spend windows and the verdict of a budget's windows.

Windows are in-process: each router replica keeps its own and enforces the limits on
its own traffic only, and they start empty when the process restarts (aggregating
spend across replicas is future work; the slmfleet_router_spend_usd metric is per
replica). Time is passed in, never read, so every decision is reproducible in tests.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..api.budget import SpendWindow, window_seconds


def cost_usd(input_tokens: int, output_tokens: int, in_per_m: float, out_per_m: float) -> float:
    return (input_tokens * in_per_m + output_tokens * out_per_m) / 1e6


class RollingWindow:
    """Spend over the last ``window_s`` seconds, in up to 60 buckets (bounded memory)."""

    __slots__ = ("_buckets", "_total", "bucket_s", "window_s")

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.bucket_s = max(1.0, window_s / 60)
        self._buckets: deque[list[float]] = deque()  # [bucket start, amount]
        self._total = 0.0

    def _evict(self, now: float) -> None:
        while self._buckets and self._buckets[0][0] + self.bucket_s <= now - self.window_s:
            self._total -= self._buckets.popleft()[1]
        if not self._buckets:
            self._total = 0.0

    def add(self, now: float, amount: float) -> None:
        self._evict(now)
        start = math.floor(now / self.bucket_s) * self.bucket_s
        if self._buckets and self._buckets[-1][0] == start:
            self._buckets[-1][1] += amount
        else:
            self._buckets.append([start, amount])
        self._total += amount

    def total(self, now: float) -> float:
        self._evict(now)
        return self._total

    def retry_after(self, now: float, limit: float) -> float:
        """Seconds until enough spend ages out to be under ``limit`` again."""
        self._evict(now)
        total = self._total
        for start, amount in self._buckets:
            if total < limit:
                break
            total -= amount
            expires = start + self.bucket_s + self.window_s
            if total < limit:
                return max(1.0, expires - now)
        return 0.0 if self._total < limit else self.window_s


@dataclass(frozen=True, slots=True)
class SpendVerdict:
    reject: bool = False
    degrade: bool = False
    retry_after_s: int = 0
    exceeded: tuple[str, ...] = ()
    """``budget-id/window`` of every exceeded window, for alerts and logs."""


def verdict(
    windows: Iterable[tuple[str, SpendWindow, RollingWindow]],
    now: float,
    held: Mapping[str, float] | None = None,
) -> SpendVerdict:
    """Combine exceeded windows: any reject rejects (longest Retry-After wins), any
    degrade degrades, alert only reports. ``held`` (budget id -> USD) is worst-case
    spend reserved by calls still in flight; it counts against every window of its
    budget, so concurrent requests cannot all pass a nearly exhausted window."""
    reject = degrade = False
    retry = 0.0
    exceeded: list[str] = []
    for budget_id, spec, win in windows:
        if win.total(now) + (held.get(budget_id, 0.0) if held else 0.0) < spec.limit_usd:
            continue
        exceeded.append(f"{budget_id}/{spec.window}")
        if spec.action == "reject":
            reject = True
            retry = max(retry, win.retry_after(now, spec.limit_usd))
        elif spec.action == "degrade":
            degrade = True
    return SpendVerdict(reject, degrade, math.ceil(retry), tuple(exceeded))


class SpendLedger:
    """Windows by (budget id, window), surviving config reloads."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], RollingWindow] = {}

    def window(self, budget_id: str, spec: SpendWindow) -> RollingWindow:
        key = (budget_id, spec.window)
        win = self._windows.get(key)
        if win is None:
            win = self._windows[key] = RollingWindow(window_seconds(spec.window))
        return win

    def totals(self) -> dict[tuple[str, str], RollingWindow]:
        return dict(self._windows)
