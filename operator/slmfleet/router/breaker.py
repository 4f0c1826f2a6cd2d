"""Circuit breaker per upstream endpoint, pure: a state and two transition functions.

closed --(threshold consecutive failures)--> open --(cooldown elapsed)--> half_open
half_open lets one probe through: success closes, failure re-opens.
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


def allow(b: Breaker, now: float, cfg: BreakerConfig) -> tuple[bool, Breaker]:
    """May a request go to this endpoint now?"""
    if b.state == "closed":
        return True, b
    if b.state == "open":
        if now - b.opened_at >= cfg.cooldown_s:
            return True, replace(b, state="half_open", probing=True)
        return False, b
    if b.probing:
        return False, b
    return True, replace(b, probing=True)


def record(b: Breaker, ok: bool, now: float, cfg: BreakerConfig) -> Breaker:
    """Account one finished call (only upstream faults count as failures)."""
    if ok:
        return Breaker()
    if b.state == "half_open":
        return Breaker("open", b.failures + 1, now, False)
    failures = b.failures + 1
    if failures >= cfg.threshold:
        return Breaker("open", failures, now, False)
    return replace(b, failures=failures)


def admits(b: Breaker, now: float, cfg: BreakerConfig) -> bool:
    """Whether ``allow`` would let a request through now, without changing the state
    (lets a balancer look at every replica and commit only to the one it picks)."""
    return allow(b, now, cfg)[0]
