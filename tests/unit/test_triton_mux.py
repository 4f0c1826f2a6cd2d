"""Shared streams: a stream marked dead is closed, and its requests fail at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from slmfleet.router.errors import UpstreamError
from slmfleet.router.triton import TritonPool


class StuckCall:
    async def read(self):
        await asyncio.Event().wait()

    async def write(self, req):
        await asyncio.Event().wait()

    def cancel(self):
        pass


class StuckStub:
    def ModelStreamInfer(self):
        return StuckCall()


async def test_stuck_shared_write_times_out_and_kills_the_stream():
    pool = TritonPool()
    replica = pool.replica_set("h:1").replicas[0]
    replica._stub = StuckStub()
    t0 = time.monotonic()
    with pytest.raises(UpstreamError) as e:
        async with asyncio.timeout(5):
            async for _ in pool.shared_stream("h:1", "m", "p", {}, timeout_s=0.2, request_id="r"):
                pass
    assert e.value.timeout and time.monotonic() - t0 < 1.0
    assert any(s is not None and s.dead for s in replica._shared)
    await pool.close()
