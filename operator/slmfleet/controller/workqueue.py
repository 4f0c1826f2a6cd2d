"""A keyed delay queue: work that is due later, coalesced per object.

Status refreshes and retries used to be one background task each; a crash in one was
lost with it, and nothing watched them. Now they are entries in a queue drained by a
supervised loop: adding a key that is already queued keeps the earlier due time (a
burst of Deployment events costs one status write), and the queue survives a restart
of the loop that drains it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
log = logging.getLogger("slmfleet.workqueue")


class DelayQueue(Generic[K]):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._due: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = 0
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def add(self, key: K, delay: float = 0.0) -> None:
        """Queue ``key`` to be due in ``delay`` seconds, or sooner if already queued."""
        due = self._clock() + max(0.0, delay)
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, key))
        self._changed.set()

    def discard(self, key: K) -> None:
        self._due.pop(key, None)  # its heap entry is skipped when it surfaces

    def pop_due(self) -> K | None:
        """The key due earliest, if it is due now."""
        while self._heap:
            due, _, key = self._heap[0]
            if self._due.get(key) != due:
                heapq.heappop(self._heap)  # superseded or discarded
                continue
            if due > self._clock():
                return None
            heapq.heappop(self._heap)
            del self._due[key]
            return key
        return None

    def next_due_in(self) -> float | None:
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return max(0.0, self._heap[0][0] - self._clock()) if self._heap else None

    async def get(self, timeout: float) -> K | None:
        """The next due key, waiting at most ``timeout`` seconds (None on timeout)."""
        deadline = self._clock() + timeout
        while True:
            key = self.pop_due()
            if key is not None:
                return key
            left = deadline - self._clock()
            if left <= 0:
                return None
            wait = self.next_due_in()
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait(), timeout=min(left, wait) if wait is not None else left
                )


async def drain(
    queue: DelayQueue[K],
    handle: Callable[[K], Awaitable[Any]],
    beat: Callable[[], None],
    *,
    concurrency: int = 32,
    idle: float = 30.0,
) -> None:
    """Run ``handle(key)`` for every key as it falls due, ``concurrency`` at a time,
    forever. ``handle`` deals with its expected errors (and re-queues); anything else
    it raises ends the drain (the supervisor restarts it) after the key is re-queued,
    so no work is lost with the crash."""
    slots = asyncio.Semaphore(concurrency)

    async def one(key: K) -> None:
        try:
            await handle(key)
        except Exception:
            queue.add(key, 5.0)
            raise
        finally:
            slots.release()

    async with asyncio.TaskGroup() as tasks:
        while True:
            key = await queue.get(idle)
            beat()
            if key is None:
                continue
            await slots.acquire()
            tasks.create_task(one(key))
