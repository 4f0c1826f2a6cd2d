"""Binomial confidence bounds: what a proportion on a finite sample guarantees.

Clopper-Pearson (exact: inverts the binomial test, never below the stated coverage)
for the guarantees the recommender gives; Wilson (close to nominal, narrower) for the
intervals a benchmark reports. Both from the Beta / normal quantiles in scipy.
"""

from __future__ import annotations

import math

from scipy.stats import beta, norm


def _check(k: int, n: int, level: float) -> None:
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")


def cp_upper(k: int, n: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on p from k successes in n trials: the
    true p is below it with probability >= ``level``. 1.0 when n == 0."""
    _check(k, n, level)
    if n == 0 or k == n:
        return 1.0
    return float(beta.ppf(level, k + 1, n - k))


def cp_lower(k: int, n: int, level: float = 0.95) -> float:
    """One-sided Clopper-Pearson lower bound (p above it with probability >= level)."""
    _check(k, n, level)
    if n == 0 or k == 0:
        return 0.0
    return float(beta.ppf(1.0 - level, k, n - k + 1))


def cp_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval with coverage >= ``level``."""
    tail = (1.0 + level) / 2.0
    return cp_lower(k, n, tail), cp_upper(k, n, tail)


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson score interval; (0, 1) when n == 0."""
    _check(k, n, level)
    if n == 0:
        return 0.0, 1.0
    z = float(norm.ppf((1.0 + level) / 2.0))
    p = k / n
    den = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def samples_for_upper(rate: float, target: float, level: float, *, cap: int = 10_000_000) -> int:
    """Smallest n at which an observed error ``rate`` (k = round(rate * n) errors) gives a
    Clopper-Pearson upper bound <= ``target``; ``cap`` + 1 when none does (rate >= target).

    Used to tell a user how much more data a refused recommendation needs, assuming the
    rate seen so far holds."""
    if rate >= target:
        return cap + 1
    lo, hi = 1, 1
    while cp_upper(round(rate * hi), hi, level) > target:
        hi *= 2
        if hi > cap:
            return cap + 1
    while lo < hi:  # the bound is (essentially) decreasing in n at a fixed rate
        mid = (lo + hi) // 2
        if cp_upper(round(rate * mid), mid, level) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def samples_for_lower(rate: float, target: float, level: float, *, cap: int = 10_000_000) -> int:
    """Smallest n at which an observed success ``rate`` gives a Clopper-Pearson lower bound
    >= ``target``; ``cap`` + 1 when none does (rate <= target)."""
    return (
        samples_for_upper(1.0 - rate, 1.0 - target, level, cap=cap) if rate > target else (cap + 1)
    )
