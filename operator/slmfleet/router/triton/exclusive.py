"""A ``ModelStreamInfer`` stream that carries one request at a time and is kept for the next.

A request that may have to be cancelled in Triton (it streams to a client who may leave,
or the router may cut its generation short) needs a stream of its own: Triton cancels per
stream. Opening a gRPC stream per request costs the router ~0.2 ms of CPU more than
sending a message on an open one, so a replica keeps the streams of requests that ended
cleanly (their final response read) and hands them to the next such request, one request
at a time (``Replica.take_exclusive`` / ``give_back``).

The lifecycle is explicit. A request that does not end cleanly - deadline, client gone
(its iterator closed early), an error, a model error - closes its stream, which cancels
the call and with it the generation in Triton, exactly as closing a per-request stream
did. An idle stream is closed after ``IDLE_S`` (an open stream without data draws
keepalive pings Triton answers with GOAWAY), and every idle stream of a replica is
closed when one of them fails before its first response (they share the connection) or
the replica goes. The deadline is the router's: each write and read waits at most until
it (the request also carries it to Triton as its ``timeout`` parameter). Responses are
matched by request id, so a late flag-only response of the stream's previous request is
skipped, never read as this one's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from ..errors import UpstreamError
from .codec import Piece, from_rpc_error, read_message

#: An idle stream is closed after this long (see the module docstring).
IDLE_S = 10.0
#: At most this many idle streams a replica keeps (more concurrent requests open more).
MAX_IDLE = 64


class ExclusiveStream:
    """One ``ModelStreamInfer`` call, one request at a time; see the module docstring."""

    __slots__ = ("call", "dead", "endpoint", "last_used")

    def __init__(self, stub: Any, endpoint: str) -> None:
        self.endpoint = endpoint
        self.call = stub.ModelStreamInfer()
        self.dead = False
        self.last_used = 0.0

    def close(self) -> None:
        """Cancel the call (and whatever Triton still generates on it); for good."""
        if not self.dead:
            self.dead = True
            self.call.cancel()

    @property
    def usable(self) -> bool:
        return not self.dead and not self.call.done()

    async def exchange(
        self,
        req: Any,
        request_id: str,
        model: str,
        deadline: float,
        parse: Callable[[Any], Any] | None = None,
    ) -> AsyncIterator[Piece]:
        """Send ``req`` and yield its pieces until its final response (``deadline`` on
        the loop's clock). Anything but a clean end closes the stream; ``dead`` then
        tells the owner not to keep it."""
        endpoint = self.endpoint
        started = clean = False
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    await self.call.write(req)
            except TimeoutError as exc:
                raise _deadline(endpoint, "stuck writing the request") from exc
            except grpc.aio.AioRpcError as exc:
                raise from_rpc_error(exc, endpoint, started=False) from exc
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the call ended under us: nothing was sent
                raise UpstreamError(f"triton {endpoint}: {exc!r}", retryable=True) from exc
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        msg = await self.call.read()
                except TimeoutError as exc:
                    raise _deadline(endpoint, "Deadline Exceeded") from exc
                except grpc.aio.AioRpcError as exc:
                    raise from_rpc_error(exc, endpoint, started=started) from exc
                if msg is grpc.aio.EOF:
                    raise UpstreamError(
                        f"triton {endpoint}: stream closed"
                        + ("" if started else " before any response"),
                        retryable=not started,
                    )
                if msg.infer_response.id != request_id and not msg.error_message:
                    continue  # the previous request's late flag-only response
                piece, final = read_message(msg, endpoint, model, parse)
                started = True
                if piece is not None:
                    yield piece
                if final:
                    clean = True
                    return
        finally:
            if clean:
                self.last_used = asyncio.get_running_loop().time()
            else:
                self.close()


def _deadline(endpoint: str, what: str) -> UpstreamError:
    return UpstreamError(f"triton {endpoint}: DEADLINE_EXCEEDED: {what}", timeout=True)


class ExclusiveStreams:
    """A replica's idle exclusive streams (most recently used first out)."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.idle: list[ExclusiveStream] = []
        self.opened = 0
        """Streams opened so far (tests and the benchmark read it)."""
        self._sweep: asyncio.TimerHandle | None = None

    def take(self, stub: Any) -> ExclusiveStream:
        while self.idle:
            s = self.idle.pop()
            if s.usable:
                return s
        self.opened += 1
        return ExclusiveStream(stub, self.endpoint)

    def give_back(self, s: ExclusiveStream, *, keep: bool) -> None:
        """Keep ``s`` for the next request when it ended cleanly and ``keep`` (the
        replica still takes requests); else close it."""
        if not s.usable or not keep or len(self.idle) >= MAX_IDLE:
            s.close()
            return
        self.idle.append(s)
        if self._sweep is None:
            self._sweep = asyncio.get_running_loop().call_later(IDLE_S, self._close_stale)

    def _close_stale(self) -> None:
        self._sweep = None
        now = asyncio.get_running_loop().time()
        fresh: list[ExclusiveStream] = []
        for s in self.idle:
            if s.usable and now - s.last_used < IDLE_S:
                fresh.append(s)
            else:
                s.close()
        self.idle = fresh
        if fresh:
            wait = max(0.1, IDLE_S - (now - min(s.last_used for s in fresh)))
            self._sweep = asyncio.get_running_loop().call_later(wait, self._close_stale)

    def close_idle(self) -> None:
        """Close every idle stream (the replica goes, or one of them found the
        connection broken)."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        idle, self.idle = self.idle, []
        for s in idle:
            s.close()
