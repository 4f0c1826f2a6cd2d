"""The replicas (Pods) behind one upstream endpoint, each with its own channel, shared
streams and idle exclusive streams, and the choice of one per request.

A ``ReplicaSet`` is fed addresses (from the static config, from EndpointSlices, or the
endpoint itself when nothing better is known) and keeps one ``Replica`` per address.
Lifecycle of a replica: ``active`` (chosen for new requests) -> ``draining`` (its
address went away: no new requests; its in-flight requests finish) -> ``closed`` (its
shared and exclusive streams closed, its channel closed). A draining replica closes when its last
request ends, or after ``DRAIN_TIMEOUT_S`` whatever is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from tritonclient.grpc import service_pb2_grpc

from .. import metrics as m
from ..breaker import Breaker, BreakerConfig, admits, admitted_probe, allow, record, released
from ..errors import UpstreamError
from .balance import Load, pick
from .exclusive import ExclusiveStream, ExclusiveStreams
from .mux import SharedStream

log = logging.getLogger("slmfleet.router")

#: Largest message the router sends: a request carries the prompt (the API body is
#: capped at ``--max-body-bytes``, 2 MiB by default).
MAX_SEND_MESSAGE_BYTES = 64 * 1024 * 1024
#: Largest message the router accepts from a Triton server, which a tenant controls
#: (its model, its image). Each message is one streamed delta, a classifier's label
#: row or a model's metadata; a backend that answers in one message sends the whole
#: answer (a 128K-token answer is ~0.5 MB) or echoes the prompt (at most 2 MiB by
#: default). 64 MiB let one tenant's server make the router buffer and parse 64 MiB per
#: message; a larger one now fails that request with an UpstreamError
#: (``RESOURCE_EXHAUSTED``) and the cascade moves on.
MAX_RECEIVE_MESSAGE_BYTES = 8 * 1024 * 1024

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_SEND_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
    # Reconnect quickly once a restarted Triton is back (defaults back off to minutes).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 30000),
]
#: For an endpoint the router cannot enumerate (a DNS name): every new stream goes to
#: the next address DNS names, so a headless Service's Pods share the load.
ROUND_ROBIN = [
    *CHANNEL_OPTIONS,
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
]
#: Shared streams per replica, used in turn: Triton writes one stream's responses one
#: at a time, so a few streams keep a busy Pod's answers flowing in parallel.
SHARED_STREAMS = 4
#: A removed replica's requests get this long to finish before its channel is closed.
DRAIN_TIMEOUT_S = 60.0
#: Requests that may wait for a replica of one endpoint at once (then: fail at once).
MAX_WAITING = 10_000


class Replica:
    """One Triton server (Pod): a channel, a few shared streams, its load and health."""

    def __init__(self, address: str, *, round_robin: bool = False) -> None:
        self.address = address
        self.round_robin = round_robin
        self.state = "active"
        self.outstanding = 0
        self.served = 0
        self.breaker = Breaker()
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._shared: list[SharedStream | None] = [None] * SHARED_STREAMS
        self._turn = 0
        self.exclusive = ExclusiveStreams(address)
        self._drain_timer: asyncio.TimerHandle | None = None

    @property
    def stub(self) -> Any:
        if self._stub is None:
            opts = ROUND_ROBIN if self.round_robin else CHANNEL_OPTIONS
            self._channel = grpc.aio.insecure_channel(self.address, options=opts)
            self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        return self._stub

    def shared_streams(self) -> list[SharedStream]:
        return [s for s in self._shared if s is not None and not s.dead]

    def shared_for(self, request_id: str) -> SharedStream | None:
        """The next shared stream in turn (opened if needed), or None when the id is in
        flight there (the caller then opens a stream of its own)."""
        self._turn = turn = (self._turn + 1) % SHARED_STREAMS
        s = self._shared[turn]
        if s is None or s.dead:
            s = self._shared[turn] = SharedStream(self.stub, self.address)
        return s if s.usable(request_id) else None

    def take_exclusive(self) -> ExclusiveStream:
        """A stream for one request alone: an idle one, else a new one."""
        return self.exclusive.take(self.stub)

    def give_back(self, s: ExclusiveStream) -> None:
        """The request on ``s`` is over: keep the stream for the next one if it ended
        cleanly and this replica still takes requests."""
        self.exclusive.give_back(s, keep=self.state == "active")

    def drain(self, on_closed: Callable[[Replica], None]) -> None:
        """Stop taking requests; close once the in-flight ones are done (or time out)."""
        if self.state != "active":
            return
        self.state = "draining"
        self.exclusive.close_idle()
        if self.outstanding == 0:
            self._close_later(on_closed)
            return
        loop = asyncio.get_running_loop()
        self._drain_timer = loop.call_later(DRAIN_TIMEOUT_S, lambda: self._close_later(on_closed))

    def _close_later(self, on_closed: Callable[[Replica], None]) -> None:
        if self.state == "closed":
            return
        asyncio.get_running_loop().create_task(self.close())
        on_closed(self)

    async def close(self, grace: float | None = None) -> None:
        """Close the shared streams (they never end on their own), then the channel."""
        self.state = "closed"
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        for s in self._shared:
            if s is not None:
                s.close("replica closed")
        self._shared = [None] * SHARED_STREAMS
        self.exclusive.close_idle()
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close(grace=grace)


class ReplicaSet:
    """The replicas of one endpoint and the per-request choice among them."""

    def __init__(
        self,
        endpoint: str,
        *,
        breaker_config: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.breaker_config = breaker_config or BreakerConfig()
        self.clock = clock
        self.replicas: list[Replica] = []
        self.source = "dns"
        self._cursor = 0
        self._waiting = 0
        self._changed: asyncio.Event | None = None

    # -- membership ---------------------------------------------------------------------
    def active(self) -> list[Replica]:
        return [r for r in self.replicas if r.state == "active"]

    def update(self, addresses: Iterable[str], *, source: str, round_robin: bool = False) -> None:
        """Make the active replicas exactly ``addresses``: new ones start taking requests
        at once (least outstanding picks them first), missing ones drain."""
        want = list(dict.fromkeys(addresses))
        self.source = source
        have = {r.address: r for r in self.replicas if r.state == "active"}
        added = [a for a in want if a not in have]
        for addr, r in have.items():
            if addr not in want:
                log.info("replica %s of %s removed: draining", addr, self.endpoint)
                r.drain(self._forget)
        for addr in added:
            self.replicas.append(Replica(addr, round_robin=round_robin))
        if added:
            log.info("replicas of %s: +%s", self.endpoint, ",".join(added))
            if self._changed is not None:
                self._changed.set()
                self._changed = None
        self._export()

    def _forget(self, replica: Replica) -> None:
        with contextlib.suppress(ValueError):
            self.replicas.remove(replica)
        self._export()

    def _export(self) -> None:
        states = [r.state for r in self.replicas]
        m.bound(m.REPLICAS, self.endpoint, "active").set(states.count("active"))
        m.bound(m.REPLICAS, self.endpoint, "draining").set(states.count("draining"))

    async def close(self) -> None:
        replicas, self.replicas = self.replicas, []
        for r in replicas:
            await r.close()
        m.bound(m.REPLICAS, self.endpoint, "active").set(0)
        m.bound(m.REPLICAS, self.endpoint, "draining").set(0)

    # -- one request --------------------------------------------------------------------
    async def acquire(
        self, deadline: float, *, exclude: Iterable[Replica] = (), specialist: str = "-"
    ) -> Replica:
        """``acquire_probe`` without the probe number (a caller that never ends a call
        'neither ok nor a fault')."""
        return (await self.acquire_probe(deadline, exclude=exclude, specialist=specialist))[0]

    async def acquire_probe(
        self, deadline: float, *, exclude: Iterable[Replica] = (), specialist: str = "-"
    ) -> tuple[Replica, int | None]:
        """A replica for one request (its outstanding count taken), waiting while there
        is none at all (scale from zero, or discovery has not answered yet) until
        ``deadline`` (loop clock), and the half-open probe number this request holds on
        it (None: no probe; give it back to ``release``). Every replica's circuit open:
        fail at once."""
        loop = asyncio.get_running_loop()
        skip = set(map(id, exclude))
        while True:
            now = self.clock()
            live = self.active()
            loads = [
                Load(
                    r.outstanding, admits(r.breaker, now, self.breaker_config) and id(r) not in skip
                )
                for r in live
            ]
            i = pick(loads, self._cursor)
            if i is not None:
                r = live[i]
                self._cursor = (i + 1) % len(live)
                before = r.breaker
                _, r.breaker = allow(before, now, self.breaker_config)
                r.outstanding += 1
                return r, admitted_probe(before, r.breaker)
            if live and not skip.issuperset(map(id, live)):
                raise UpstreamError(
                    f"circuit open for every replica of {self.endpoint}", reason="circuit_open"
                )
            if live:
                raise UpstreamError(f"no other replica of {self.endpoint} to retry on")
            await self._wait(loop, deadline, specialist)

    async def _wait(
        self, loop: asyncio.AbstractEventLoop, deadline: float, specialist: str
    ) -> None:
        if self._waiting >= MAX_WAITING:
            raise UpstreamError(f"too many requests waiting for a replica of {self.endpoint}")
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        self._waiting += 1
        gauge = m.bound(m.WAITING, specialist)
        gauge.inc()
        try:
            async with asyncio.timeout_at(deadline):
                await changed.wait()
        except TimeoutError:
            raise UpstreamError(
                f"no replica of {self.endpoint} became available in time", reason="no_replica"
            ) from None
        finally:
            self._waiting -= 1
            gauge.dec()

    def release(self, r: Replica, *, ok: bool, fault: bool, probe: int | None = None) -> None:
        """One request done: ``ok`` proves the replica healthy, ``fault`` is a transport
        failure (counts toward its circuit); neither (cancelled, deadline) only frees the
        half-open probe, and only if this request was that probe (``probe``, from
        ``acquire_probe``): an older request ending then must not let a second probe in."""
        r.outstanding -= 1
        r.served += 1
        if ok or fault:
            r.breaker = record(r.breaker, not fault, self.clock(), self.breaker_config)
        else:
            r.breaker = released(r.breaker, probe)
        if r.state == "draining" and r.outstanding == 0:
            r._close_later(self._forget)
