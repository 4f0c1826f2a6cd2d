"""Many requests on one long-lived ``ModelStreamInfer`` stream, matched by request id.

A gRPC stream costs far more to open than a message costs to send, so requests that need
no cancellation in Triton share a few streams per Pod, as tritonclient's own
``start_stream``/``async_stream_infer`` do. The stream's lifecycle is explicit: it is
``open`` until ``close(reason)`` (called on idle, on a failed or stuck write, when the
reader ends, or by the replica that owns it) and then ``closed`` for good: its reader is
cancelled, its call cancelled, and every request still waiting on it fails at once.
Triton cancels per stream, so a request abandoned here (deadline, client gone) only
stops being waited for; its late responses are dropped, and its id is not reused on this
stream until Triton has finished it.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from ..errors import UpstreamError
from .codec import Piece, from_rpc_error, is_final, read_message

#: A shared stream unused this long is closed (see SharedStream._close_if_idle).
SHARED_IDLE_S = 10.0
_ABANDONED_MAX = 4096
_TIMEOUT = object()


class _Closed:
    """Put in every pending inbox when the stream closes under it."""

    __slots__ = ("error", "reason")

    def __init__(self, reason: str, error: BaseException | None) -> None:
        self.reason = reason
        self.error = error


class Inbox:
    """A one-consumer queue for one request's responses (cheaper than asyncio.Queue)."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: collections.deque[Any] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None

    def put(self, item: Any) -> None:
        self.items.append(item)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def get(self) -> Any:
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.items.popleft()


class SharedStream:
    """One ``ModelStreamInfer`` call carrying many requests; see the module docstring."""

    def __init__(self, stub: Any, endpoint: str) -> None:
        self.endpoint = endpoint
        self.call = stub.ModelStreamInfer()
        self.pending: dict[str, Inbox] = {}
        self.abandoned: dict[str, None] = {}
        self.state = "open"
        self.closed_reason: str | None = None
        self._lock = asyncio.Lock()
        loop = asyncio.get_running_loop()
        self.last_used = loop.time()
        self._reader = loop.create_task(self._read())
        self._idle_timer: asyncio.TimerHandle | None = loop.call_later(
            SHARED_IDLE_S, self._close_if_idle
        )

    @property
    def dead(self) -> bool:
        """Closed (kept for readability at call sites: a dead stream is a closed one)."""
        return self.state == "closed"

    def usable(self, request_id: str) -> bool:
        return (
            self.state == "open"
            and request_id not in self.pending
            and request_id not in self.abandoned
        )

    # -- lifecycle ----------------------------------------------------------------------
    def close(self, reason: str, error: BaseException | None = None) -> None:
        """End the stream: cancel the reader and the call, fail every pending request."""
        if self.state == "closed":
            return
        self.state = "closed"
        self.closed_reason = reason
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if not self._reader.done() and asyncio.current_task() is not self._reader:
            self._reader.cancel()
        self.call.cancel()
        item = _Closed(reason, error)
        for box in self.pending.values():
            box.put(item)

    def _close_if_idle(self) -> None:
        """An idle open stream would draw keepalive pings "without data", which Triton's
        gRPC server answers with GOAWAY (too_many_pings), so idle streams are closed and
        the next request opens a new one."""
        self._idle_timer = None
        if self.state == "closed":
            return
        loop = asyncio.get_running_loop()
        idle = loop.time() - self.last_used
        if not self.pending and idle >= SHARED_IDLE_S:
            self.close("idle")
        else:
            self._idle_timer = loop.call_later(max(0.1, SHARED_IDLE_S - idle), self._close_if_idle)

    async def _read(self) -> None:
        try:
            while True:
                msg = await self.call.read()
                if msg is grpc.aio.EOF:
                    self.close("ended by the server")
                    return
                rid = msg.infer_response.id
                box = self.pending.get(rid)
                if box is not None:
                    box.put(msg)
                elif rid in self.abandoned and is_final(msg):
                    del self.abandoned[rid]
        except asyncio.CancelledError:
            self.close("closed by the router")
            raise
        except BaseException as exc:  # the stream (connection) failed: fail its requests
            self.close("failed", exc)

    def _abandon(self, rid: str) -> None:
        self.abandoned[rid] = None
        if len(self.abandoned) > _ABANDONED_MAX:
            del self.abandoned[next(iter(self.abandoned))]

    # -- one request --------------------------------------------------------------------
    async def _send(self, req: Any, deadline: float) -> None:
        """Write one request; a write (or the wait for the lock) stuck past the deadline
        closes the stream (new requests open another one) and times the request out."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(deadline):
                async with self._lock:
                    await self.call.write(req)
        except TimeoutError as exc:
            self.close("write stuck past a deadline")
            raise UpstreamError(
                f"triton {self.endpoint}: DEADLINE_EXCEEDED: stuck writing the request",
                timeout=True,
            ) from exc
        except grpc.aio.AioRpcError as exc:
            self.close("write failed", exc)
            raise from_rpc_error(exc, self.endpoint, started=False) from exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the call is gone: nothing was sent
            self.close("write failed", exc)
            raise UpstreamError(f"triton {self.endpoint}: {exc!r}", retryable=True) from exc
        finally:
            self.last_used = loop.time()

    async def exchange(
        self,
        req: Any,
        request_id: str,
        model: str,
        deadline: float,
        parse: Callable[[Any], Any] | None = None,
    ) -> AsyncIterator[Piece]:
        """Send ``req`` and yield its pieces until its final response; ``deadline`` is on
        the loop's clock; ``parse`` reads responses in the request's backend contract.
        Closing the iterator early abandons the request here."""
        loop = asyncio.get_running_loop()
        box = Inbox()
        self.pending[request_id] = box
        timer = loop.call_at(deadline, box.put, _TIMEOUT)
        started = finished = False
        try:
            await self._send(req, deadline)
            while True:
                item = await box.get()
                if item is _TIMEOUT:
                    raise UpstreamError(
                        f"triton {self.endpoint}: DEADLINE_EXCEEDED: Deadline Exceeded",
                        timeout=True,
                    )
                if isinstance(item, _Closed):
                    finished = True
                    err = item.error
                    if isinstance(err, grpc.aio.AioRpcError):
                        raise from_rpc_error(err, self.endpoint, started=started) from err
                    detail = f"{err!r}" if err is not None else item.reason
                    raise UpstreamError(
                        f"triton {self.endpoint}: stream closed ({detail})"
                        + ("" if started else " before any response"),
                        retryable=not started and item.reason != "closed by the router",
                    ) from err
                finished = is_final(item)
                piece, final = read_message(item, self.endpoint, model, parse)
                finished = finished or final
                started = True
                if piece is not None:
                    yield piece
                if final:
                    return
        finally:
            timer.cancel()
            self.last_used = loop.time()
            if self.pending.get(request_id) is box:
                del self.pending[request_id]
            if not finished and self.state == "open":
                self._abandon(request_id)
