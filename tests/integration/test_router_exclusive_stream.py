"""Exclusive streams on the real Triton: a request that Triton must be able to cancel has
a ModelStreamInfer stream to itself, and a stream whose request ended cleanly carries the
next one; one that did not (left early, model error, deadline) is closed, never reused."""

from __future__ import annotations

import asyncio

import pytest

from slmfleet.router.errors import UpstreamError
from slmfleet.router.triton import TritonPool, exclusive

pytestmark = pytest.mark.integration


async def _text(gen) -> str:
    return "".join([p.text async for p in gen])


def _own(
    pool: TritonPool, url: str, prompt: str, rid: str, timeout_s: float = 30, model="generalist"
):
    return pool.stream(url, model, prompt, {}, timeout_s=timeout_s, request_id=rid)


async def test_clean_requests_reuse_their_streams(triton):
    pool = TritonPool()
    url = triton.grpc_url
    try:
        for i in range(12):
            assert f"You asked: q{i}" in await _text(_own(pool, url, f"q{i}", f"seq{i}"))
        (replica,) = pool.replica_set(url).replicas
        assert replica.exclusive.opened == 1  # one stream carried all twelve, in turn
        for wave in range(2):
            got = await asyncio.gather(
                *(_text(_own(pool, url, f"w{wave}-{k}", f"w{wave}-{k}")) for k in range(6))
            )
            assert all(f"You asked: w{wave}-{k}" in a for k, a in enumerate(got))
        assert replica.exclusive.opened == 6  # six at once need six; the second wave reused them
        assert len(replica.exclusive.idle) == 6
        assert not replica.shared_streams()  # none of this went over a shared stream
    finally:
        await pool.close()


async def test_requests_that_end_badly_close_their_streams(triton):
    pool = TritonPool()
    url = triton.grpc_url
    try:
        assert "You asked: warm" in await _text(_own(pool, url, "warm", "warm"))
        (replica,) = pool.replica_set(url).replicas
        ex = replica.exclusive
        (first,) = ex.idle
        # Left after the first piece (a client gone, a cut): the stream is closed, which
        # cancels the generation in Triton; the next request gets a new stream and only
        # its own answer.
        gen = _own(pool, url, "a long answer please", "left")
        await gen.__anext__()
        await gen.aclose()
        assert first.dead and not ex.idle and ex.opened == 1
        assert "You asked: after" in (a := await _text(_own(pool, url, "after", "after")))
        assert "long answer" not in a
        assert ex.opened == 2
        # A model error and a deadline: closed as well.
        with pytest.raises(UpstreamError, match="failure"):
            await _text(_own(pool, url, "x", "err", model="failing"))
        with pytest.raises(UpstreamError) as exc:
            await _text(_own(pool, url, "slow", "late", timeout_s=1e-3))
        assert exc.value.timeout
        assert "You asked: fine" in (b := await _text(_own(pool, url, "fine", "fine")))
        assert "slow" not in b
        assert ex.opened == 4 and len(ex.idle) == 1 and all(not s.dead for s in ex.idle)
    finally:
        await pool.close()


async def test_idle_streams_are_closed(triton, monkeypatch):
    monkeypatch.setattr(exclusive, "IDLE_S", 0.3)
    pool = TritonPool()
    url = triton.grpc_url
    try:
        await asyncio.gather(*(_text(_own(pool, url, f"i{k}", f"i{k}")) for k in range(3)))
        (replica,) = pool.replica_set(url).replicas
        kept = list(replica.exclusive.idle)
        assert len(kept) == 3
        await asyncio.sleep(1.0)
        assert not replica.exclusive.idle and all(s.dead for s in kept)
        assert "You asked: back" in await _text(_own(pool, url, "back", "back"))
        assert replica.exclusive.opened == 4
    finally:
        await pool.close()
    assert all(s.dead for s in replica.exclusive.idle)
