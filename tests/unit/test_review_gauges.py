"""The review queue gauges keep the newest sweep's view: sweeps can overlap (the
service's own loop and an explicit sweep), and a slower, older one must not overwrite a
newer one's numbers."""

from __future__ import annotations

import asyncio

from slmfleet.router.metrics import REGISTRY
from slmfleet.telemetry.review.service import ReviewService
from slmfleet.telemetry.settings import QueueConfig, ReviewSettings
from slmfleet.telemetry.store.base import QueueStat

CREATED = 1000.0


class Store:
    """Just what a sweep reads: breaches (none) and one queue's stats."""

    async def aio(self, fn, *args):
        return fn(*args)

    def mark_breaches(self, now: float) -> dict[str, int]:
        return {}

    def queue_stats(self, now: float) -> list[QueueStat]:
        return [QueueStat("gauge-q", 2, 0, CREATED, 0)]


def oldest() -> float | None:
    return REGISTRY.get_sample_value(
        "slmfleet_router_review_oldest_open_age_seconds", {"queue": "gauge-q"}
    )


def test_a_stale_sweep_does_not_overwrite_a_newer_one():
    t = [CREATED + 5000]
    settings = ReviewSettings(queues={"gauge-q": QueueConfig()})
    svc = ReviewService(Store(), settings, clock=lambda: t[0])
    asyncio.run(svc.sweep())
    assert oldest() == 5000
    t[0] = CREATED + 10  # a sweep that read the clock earlier, finishing later
    asyncio.run(svc.sweep())
    assert oldest() == 5000
    t[0] = CREATED + 6000
    asyncio.run(svc.sweep())
    assert oldest() == 6000
