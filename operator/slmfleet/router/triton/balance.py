"""Which replica gets the next request, pure: least outstanding requests, ties in turn.

Every request goes to a replica (Pod) with the fewest requests in flight from this
router, among those that are accepting work (active, circuit not open, not excluded for
this request). Ties - the usual case at low load, and always for a replica that just
appeared - are broken by rotation from a cursor the caller advances, so equal replicas
take equal shares and a new replica (0 in flight) is chosen at once. Least-outstanding
also steers around a slow replica: its requests pile up and it is skipped until they
drain. (A replica that fails *fast* would attract traffic under this rule; the pool
ejects it through its circuit breaker instead.)
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Load:
    """What balancing needs to know about one replica."""

    outstanding: int
    eligible: bool = True
    """Active and its circuit not open."""


def pick(loads: Sequence[Load], cursor: int, exclude: Collection[int] = ()) -> int | None:
    """Index of the replica for the next request, or None when none is eligible.

    Scans from ``cursor`` (mod len) so that among equally loaded replicas the first one
    at or after the cursor wins; the caller advances the cursor after each pick.
    """
    n = len(loads)
    best: int | None = None
    best_load = 0
    for k in range(n):
        i = (cursor + k) % n
        ld = loads[i]
        if not ld.eligible or i in exclude:
            continue
        if best is None or ld.outstanding < best_load:
            best, best_load = i, ld.outstanding
            if best_load == 0:
                break  # nothing beats an idle replica
    return best


def shares(counts: Sequence[int]) -> list[float]:
    """Each replica's fraction of ``counts`` (for benchmarks and tests)."""
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


def within_fair_share(counts: Sequence[int], tolerance: float) -> bool:
    """Every replica's share is within ``tolerance`` (relative) of 1/n."""
    if not counts:
        return False
    fair = 1.0 / len(counts)
    return all(abs(s - fair) <= tolerance * fair for s in shares(counts))
