"""TritonPool.shared_stream on the real Triton: many requests on one ModelStreamInfer
stream, matched by request id, with no cross-talk after errors, timeouts and id reuse."""

from __future__ import annotations

import asyncio

import pytest

from slmfleet.router.errors import UpstreamError
from slmfleet.router.triton import SHARED_STREAMS, TritonPool

pytestmark = pytest.mark.integration


async def _text(gen) -> str:
    return "".join([p.text async for p in gen])


async def test_concurrent_requests_get_their_own_answers(triton):
    pool = TritonPool()
    try:
        prompts = [f"question number {i}" for i in range(40)]
        answers = await asyncio.gather(
            *(
                _text(
                    pool.shared_stream(
                        triton.grpc_url, "generalist", p, {}, timeout_s=30, request_id=f"r{i}"
                    )
                )
                for i, p in enumerate(prompts)
            )
        )
        for p, a in zip(prompts, answers, strict=True):
            assert f"You asked: {p}" in a
        (replica,) = pool.replica_set(triton.grpc_url).replicas  # one endpoint, one server
        streams = replica.shared_streams()
        assert len(streams) == SHARED_STREAMS  # its few shared streams carried all 40
        assert not any(s.pending for s in streams)
    finally:
        await pool.close()


async def test_errors_timeouts_and_reused_ids_do_not_cross(triton):
    pool = TritonPool()
    url = triton.grpc_url
    try:
        with pytest.raises(UpstreamError, match="failure"):
            await _text(pool.shared_stream(url, "failing", "x", {}, timeout_s=30, request_id="a"))
        # the stream survives a model error
        assert "You asked: one" in await _text(
            pool.shared_stream(url, "generalist", "one", {}, timeout_s=30, request_id="a")
        )
        # a deadline abandons the request; its late responses must not reach a request
        # that reuses the id
        with pytest.raises(UpstreamError) as exc:
            await _text(
                pool.shared_stream(url, "generalist", "slow", {}, timeout_s=1e-4, request_id="b")
            )
        assert exc.value.timeout
        again = await _text(
            pool.shared_stream(url, "generalist", "two", {}, timeout_s=30, request_id="b")
        )
        assert "You asked: two" in again and "slow" not in again
        # the same id twice at once: the second gets a dedicated stream
        both = await asyncio.gather(
            _text(pool.shared_stream(url, "generalist", "three", {}, timeout_s=30, request_id="c")),
            _text(pool.shared_stream(url, "generalist", "four", {}, timeout_s=30, request_id="c")),
        )
        assert "You asked: three" in both[0] and "You asked: four" in both[1]
    finally:
        await pool.close()
