"""Circuit breaker per upstream endpoint, pure: a state and two transition functions.

closed --(threshold consecutive failures)--> open --(cooldown elapsed)--> half_open
half_open lets one probe through: success closes, failure re-opens. A call that proves
nothing (client gone, cancelled) frees the probe only if it was the probe (``released``):
an older request ending so while the probe runs would otherwise let a second one through.
While open, requests skip the endpoint at once and the cascade falls back, instead of
every request waiting for a dead server's deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    threshold: int = 3
    cooldown_s: float = 2.0


@dataclass(frozen=True, slots=True)
class Breaker:
    state: State = "closed"
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False
    probe: int = 0
    """The number of the latest probe admitted (kept across transitions, so a call can
    tell whether the probe in flight is its own)."""


def allow(b: Breaker, now: float, cfg: BreakerConfig) -> tuple[bool, Breaker]:
    """May a request go to this endpoint now?"""
    if b.state == "closed":
        return True, b
    if b.state == "open":
        if now - b.opened_at >= cfg.cooldown_s:
            return True, replace(b, state="half_open", probing=True, probe=b.probe + 1)
        return False, b
    if b.probing:
        return False, b
    return True, replace(b, probing=True, probe=b.probe + 1)


def record(b: Breaker, ok: bool, now: float, cfg: BreakerConfig) -> Breaker:
    """Account one finished call (only upstream faults count as failures)."""
    if ok:
        return Breaker(probe=b.probe)
    if b.state == "half_open":
        return Breaker("open", b.failures + 1, now, False, b.probe)
    failures = b.failures + 1
    if failures >= cfg.threshold:
        return Breaker("open", failures, now, False, b.probe)
    return replace(b, failures=failures)


def admitted_probe(before: Breaker, after: Breaker) -> int | None:
    """The probe number ``allow`` gave a call (``before`` -> ``after``), or None when the
    call was no probe."""
    return after.probe if after.probing and after.probe != before.probe else None


def released(b: Breaker, probe: int | None) -> Breaker:
    """A call that proved nothing either way ended: it frees the half-open probe only if
    it was that probe (``probe``: from ``admitted_probe``)."""
    if probe is not None and b.probing and b.probe == probe:
        return replace(b, probing=False)
    return b


def admits(b: Breaker, now: float, cfg: BreakerConfig) -> bool:
    """Whether ``allow`` would let a request through now, without changing the state
    (lets a balancer look at every replica and commit only to the one it picks)."""
    return allow(b, now, cfg)[0]
