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


# ---- the lifecycle of a shared stream: open until closed, and closed means closed ----


class QueueCall:
    """A ModelStreamInfer call whose responses the test feeds."""

    def __init__(self):
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.written: list = []
        self.cancelled = False

    async def read(self):
        item = await self.inbox.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def write(self, req):
        self.written.append(req)

    def cancel(self):
        self.cancelled = True


class QueueStub:
    def __init__(self):
        self.calls: list[QueueCall] = []

    def ModelStreamInfer(self):
        self.calls.append(QueueCall())
        return self.calls[-1]


def _answer(rid, text=None, final=False):
    from tritonclient.grpc import service_pb2

    msg = service_pb2.ModelStreamInferResponse()
    r = msg.infer_response
    r.id = rid
    if text is not None:
        out = r.outputs.add()
        out.name, out.datatype = "text_output", "BYTES"
        out.contents.bytes_contents.append(text.encode())
    if final:
        r.parameters["triton_final_response"].bool_param = True
    return msg


async def _collect(gen, into):
    async for p in gen:
        into.append(p.text)


async def test_requests_are_matched_by_id_and_close_fails_the_pending_at_once():
    from slmfleet.router.triton.codec import build_request
    from slmfleet.router.triton.mux import SharedStream

    stub = QueueStub()
    s = SharedStream(stub, "h:1")
    call = stub.calls[0]
    loop = asyncio.get_running_loop()
    got_a, got_b = [], []
    a = asyncio.create_task(
        _collect(s.exchange(build_request("m", "x", {}, "a"), "a", "m", loop.time() + 5), got_a)
    )
    b = asyncio.create_task(
        _collect(s.exchange(build_request("m", "y", {}, "b"), "b", "m", loop.time() + 5), got_b)
    )
    await asyncio.sleep(0.01)
    assert len(call.written) == 2 and set(s.pending) == {"a", "b"}
    call.inbox.put_nowait(_answer("b", "for b"))
    call.inbox.put_nowait(_answer("a", "for a"))
    call.inbox.put_nowait(_answer("a", final=True))
    await asyncio.wait_for(a, 1)
    await asyncio.sleep(0.01)
    assert got_a == ["for a"] and got_b == ["for b"] and set(s.pending) == {"b"}
    assert not s.usable("b") and s.usable("c")  # an id in flight is not reused here

    t0 = loop.time()
    s.close("replica closed")
    with pytest.raises(UpstreamError, match="stream closed"):
        await asyncio.wait_for(b, 1)
    assert loop.time() - t0 < 0.5
    assert got_b == ["for b"]
    # Closed means closed: call cancelled, reader ended, nothing usable, idempotent.
    assert s.dead and call.cancelled and s.closed_reason == "replica closed"
    await asyncio.sleep(0)
    assert s._reader.done() and not s.usable("z")
    s.close("again")
    assert s.closed_reason == "replica closed"


async def test_a_stream_the_server_ends_or_breaks_is_closed_and_its_requests_fail():
    import grpc

    from slmfleet.router.triton.codec import build_request
    from slmfleet.router.triton.mux import SharedStream

    for ending, retryable in ((grpc.aio.EOF, True), (ConnectionResetError("reset"), True)):
        stub = QueueStub()
        s = SharedStream(stub, "h:1")
        loop = asyncio.get_running_loop()
        gen = s.exchange(build_request("m", "x", {}, "a"), "a", "m", loop.time() + 5)
        task = asyncio.create_task(_collect(gen, []))
        await asyncio.sleep(0.01)
        stub.calls[0].inbox.put_nowait(ending)
        with pytest.raises(UpstreamError) as e:
            await asyncio.wait_for(task, 1)
        # Nothing was generated: safe to retry elsewhere.
        assert e.value.retryable is retryable
        assert s.dead and stub.calls[0].cancelled


async def test_an_abandoned_request_is_dropped_and_its_late_answers_too():
    from slmfleet.router.triton.codec import build_request
    from slmfleet.router.triton.mux import SharedStream

    stub = QueueStub()
    s = SharedStream(stub, "h:1")
    loop = asyncio.get_running_loop()
    with pytest.raises(UpstreamError) as e:
        await _collect(
            s.exchange(build_request("m", "x", {}, "a"), "a", "m", loop.time() + 0.05), []
        )
    assert e.value.timeout
    assert "a" in s.abandoned and not s.usable("a") and not s.dead
    stub.calls[0].inbox.put_nowait(_answer("a", "late"))
    stub.calls[0].inbox.put_nowait(_answer("a", final=True))
    await asyncio.sleep(0.02)
    assert "a" not in s.abandoned and s.usable("a")  # Triton finished it: id free again
    s.close("test over")


async def test_an_idle_stream_closes_itself(monkeypatch):
    from slmfleet.router.triton import mux

    monkeypatch.setattr(mux, "SHARED_IDLE_S", 0.05)
    stub = QueueStub()
    s = mux.SharedStream(stub, "h:1")
    await asyncio.sleep(0.2)
    assert s.dead and s.closed_reason == "idle" and stub.calls[0].cancelled
