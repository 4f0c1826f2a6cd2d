"""The supervised controller core: restarts with backoff, liveness verdicts, delay queues."""

from __future__ import annotations

import asyncio

import pytest

from slmfleet.controller.supervisor import Backoff, Loop, LoopState, Supervisor, verdict
from slmfleet.controller.workqueue import DelayQueue, drain


@pytest.mark.parametrize(
    ("failures", "delay"), [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (30, 60.0)]
)
def test_backoff_doubles_up_to_a_cap(failures, delay):
    assert Backoff(initial=1.0, factor=2.0, maximum=60.0).delay(failures) == delay


async def _forever(rt, beat):
    await asyncio.sleep(3600)


@pytest.mark.parametrize(
    ("state", "stall_after", "now", "alive"),
    [
        (LoopState("l", started=0, last_beat=0, running=True), None, 10_000, True),
        (LoopState("l", started=0, last_beat=95, running=True), 10, 100, True),
        (LoopState("l", started=0, last_beat=80, running=True), 10, 100, False),  # stalled
        (LoopState("l", started=0, last_beat=80, running=False), 10, 100, True),  # restarting
        (LoopState("l", failures=4), None, 0, True),
        (LoopState("l", failures=5, last_error="boom"), None, 0, False),  # crash loop
    ],
)
def test_verdict(state, stall_after, now, alive):
    ok, why = verdict(state, Loop("l", _forever, stall_after), now, max_failures=5)
    assert ok is alive
    assert (why is None) is alive


async def test_a_failing_loop_is_restarted_with_backoff_and_then_reported_dead():
    runs = 0

    async def flaky(rt, beat):
        nonlocal runs
        runs += 1
        raise RuntimeError(f"bug {runs}")

    sup = Supervisor([Loop("flaky", flaky)], backoff=Backoff(0.01, 1.0, 0.01), max_failures=3)
    sup.start(rt=None)
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if runs >= 3:
                break
        await asyncio.sleep(0.02)
        alive, problems, report = sup.health()
        assert runs >= 3 and not alive
        assert "flaky: failed" in problems[0] and "RuntimeError: bug" in problems[0]
        assert report["flaky"]["restarts"] >= 3
    finally:
        await sup.stop()


async def test_progress_resets_the_failure_count():
    runs = 0

    async def recovers(rt, beat):
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("transient")
        while True:
            beat()
            await asyncio.sleep(0.01)

    sup = Supervisor([Loop("r", recovers, stall_after=1.0)], backoff=Backoff(0.01, 1.0, 0.01))
    sup.start(rt=None)
    try:
        await asyncio.sleep(0.2)
        alive, problems, report = sup.health()
        assert alive, problems
        assert report["r"] == {"running": True, "failures": 0, "restarts": 2,
                               "lastError": "RuntimeError: transient"}  # fmt: skip
    finally:
        await sup.stop()


async def test_a_loop_that_returns_is_restarted_and_a_stuck_one_is_reported():
    async def returns(rt, beat):
        return None

    async def stuck(rt, beat):
        await asyncio.Event().wait()

    sup = Supervisor(
        [Loop("returns", returns), Loop("stuck", stuck, stall_after=0.05)],
        backoff=Backoff(0.01, 1.0, 0.01),
        max_failures=100,
    )
    sup.start(rt=None)
    try:
        await asyncio.sleep(0.15)
        alive, problems, report = sup.health()
        assert report["returns"]["restarts"] >= 2
        assert "returned" in report["returns"]["lastError"]
        assert not alive and any("stuck: no progress" in p for p in problems)
    finally:
        await sup.stop()


async def test_every_runs_a_step_per_period_and_restarts_it_on_failure():
    calls = []

    async def step(rt):
        calls.append(rt)
        if len(calls) == 2:
            raise ValueError("once")

    loop = Loop.every("periodic", 0.01, step)
    assert loop.stall_after == 60.0
    sup = Supervisor([loop], backoff=Backoff(0.01, 1.0, 0.01))
    sup.start(rt="rt")
    try:
        await asyncio.sleep(0.15)
        assert len(calls) >= 4 and set(calls) == {"rt"}
        assert sup.health()[0]
    finally:
        await sup.stop()


def test_loop_names_are_unique():
    with pytest.raises(ValueError):
        Supervisor([Loop("a", _forever), Loop("a", _forever)]).start(None)


def test_the_operator_registers_its_loops_in_one_list():
    from slmfleet.controller.loops import LOOPS

    assert [loop.name for loop in LOOPS] == [
        "fleet",
        "specialist-status",
        "specialist-retry",
        "budget-status",
        "autoscaler",
        "learning",
        "pool-residency",
    ]
    assert all(loop.stall_after for loop in LOOPS)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_delay_queue_coalesces_and_keeps_the_earliest_due_time():
    clock = Clock()
    q: DelayQueue[str] = DelayQueue(clock)
    q.add("a", 5.0)
    q.add("a", 1.0)  # sooner: moves up
    q.add("a", 9.0)  # later: ignored, already due sooner
    q.add("b", 2.0)
    assert len(q) == 2 and q.pop_due() is None
    clock.now = 1.5
    assert q.pop_due() == "a" and q.pop_due() is None
    clock.now = 3.0
    assert q.pop_due() == "b" and len(q) == 0
    q.add("c", 1.0)
    q.discard("c")
    clock.now = 10.0
    assert q.pop_due() is None


async def test_drain_requeues_the_key_of_a_crash_so_no_work_is_lost():
    q: DelayQueue[str] = DelayQueue()
    seen = []

    async def handle(key):
        seen.append(key)
        if key == "boom":
            raise RuntimeError("bug")

    q.add("ok")
    q.add("boom")
    with pytest.raises(ExceptionGroup):
        await asyncio.wait_for(drain(q, handle, lambda: None, idle=0.05), timeout=2)
    assert set(seen) == {"ok", "boom"}
    assert "boom" in q  # due again in a few seconds, for the restarted drain
