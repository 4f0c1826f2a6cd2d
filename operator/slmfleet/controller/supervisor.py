"""One supervisor for every long-running loop of the operator.

Each loop is a coroutine that runs for the life of the operator (the fleet render, the
status refreshes, the retries; budget status and the autoscaler register theirs the
same way). The supervisor restarts a loop that raises or returns, with exponential
backoff, and reports each loop's health to the liveness probe. A loop is *dead*, and
liveness red (so Kubernetes restarts the operator, and the restarts show up as
CrashLoopBackOff instead of hiding in a log), when it failed ``max_failures`` times in a
row without a healthy run in between, or when it has not beaten its heart for longer
than its ``stall_after`` (a loop stuck on a call that never returns).

Adding a loop is one line in ``controller/loops.py``::

    Loop("budget-status", budget_status_loop, stall_after=120)   # run(rt, beat) forever
    Loop.every("autoscale", 15.0, autoscale_step)                # step(rt) every 15 s

A ``run`` coroutine takes the runtime and a ``beat`` callable it calls whenever it
makes progress; ``Loop.every`` wraps a one-shot ``step(rt)`` into such a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("slmfleet.supervisor")

Beat = Callable[[], None]
RunFn = Callable[[Any, Beat], Awaitable[None]]
StepFn = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True)
class Backoff:
    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 60.0

    def delay(self, failures: int) -> float:
        """Seconds to wait before restart number ``failures`` (1 = the first)."""
        if failures <= 0:
            return 0.0
        return min(self.maximum, self.initial * self.factor ** (failures - 1))


@dataclass(frozen=True)
class Loop:
    name: str
    run: RunFn
    stall_after: float | None = None
    """Seconds without a heartbeat after which the loop counts as dead (None: never)."""

    @classmethod
    def every(
        cls, name: str, seconds: float, step: StepFn, *, stall_after: float | None = None
    ) -> Loop:
        """A loop calling ``step(rt)`` every ``seconds``; a step that raises restarts it
        with backoff. Stalled when a step takes more than ``stall_after`` (default: ten
        periods, at least a minute)."""

        async def run(rt: Any, beat: Beat) -> None:
            while True:
                await step(rt)
                beat()
                await asyncio.sleep(seconds)

        return cls(name, run, stall_after if stall_after is not None else max(60.0, 10 * seconds))


@dataclass
class LoopState:
    """What the supervisor knows of one loop: the record the probe reports."""

    name: str
    started: float = 0.0
    last_beat: float = 0.0
    failures: int = 0
    """Failures in a row (reset by a healthy run)."""
    restarts: int = 0
    last_error: str | None = None
    running: bool = False

    def report(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "failures": self.failures,
            "restarts": self.restarts,
            "lastError": self.last_error,
        }


def verdict(
    state: LoopState, loop: Loop, now: float, *, max_failures: int
) -> tuple[bool, str | None]:
    """(alive, why not): pure, so the rules are table-tested."""
    if state.failures >= max_failures:
        return False, f"{state.name}: failed {state.failures} times in a row: {state.last_error}"
    if loop.stall_after is not None and state.running:
        quiet = now - max(state.last_beat, state.started)
        if quiet > loop.stall_after:
            return False, f"{state.name}: no progress for {quiet:.0f}s"
    return True, None


@dataclass
class Supervisor:
    loops: list[Loop]
    backoff: Backoff = field(default_factory=Backoff)
    max_failures: int = 5
    healthy_after: float = 60.0
    """A run this long (or one that beat its heart) resets the failure count."""
    clock: Callable[[], float] = time.monotonic
    states: dict[str, LoopState] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, rt: Any) -> None:
        names = [loop.name for loop in self.loops]
        if len(set(names)) != len(names):
            raise ValueError(f"loop names must be unique: {names}")
        for loop in self.loops:
            self.states[loop.name] = LoopState(loop.name)
            task = asyncio.create_task(self._supervise(loop, rt), name=f"slmfleet-{loop.name}")
            self._tasks.append(task)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _supervise(self, loop: Loop, rt: Any) -> None:
        state = self.states[loop.name]

        def beat() -> None:
            state.last_beat = self.clock()
            state.failures = 0

        while True:
            state.started = state.last_beat = self.clock()
            state.running = True
            try:
                await loop.run(rt, beat)
                error = "returned (a loop must run forever)"
            except asyncio.CancelledError:
                state.running = False
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.exception("loop %s failed", loop.name)
            state.running = False
            if self.clock() - state.started >= self.healthy_after:
                state.failures = 0
            state.failures += 1
            state.restarts += 1
            state.last_error = error
            delay = self.backoff.delay(state.failures)
            log.warning("loop %s: %s; restarting in %.1fs", loop.name, error, delay)
            await asyncio.sleep(delay)

    def health(self) -> tuple[bool, list[str], dict[str, Any]]:
        """(alive, problems, per-loop report) for the liveness probe."""
        now = self.clock()
        problems = []
        for loop in self.loops:
            state = self.states.get(loop.name)
            if state is None:
                problems.append(f"{loop.name}: not started")
                continue
            alive, why = verdict(state, loop, now, max_failures=self.max_failures)
            if not alive:
                problems.append(why or loop.name)
        report = {name: s.report() for name, s in self.states.items()}
        return not problems, problems, report
