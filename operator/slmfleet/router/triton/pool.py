"""The Triton client of the router: one ``ReplicaSet`` per upstream endpoint, each
request on the least-loaded replica, with deadlines that reach Triton.

``stream(..., shared=False)`` gives the request a gRPC stream of its own for as long as
it runs (see ``exclusive``: kept for the next request when it ends cleanly): closing the
iterator early cancels the call, and Triton cancels the generation (used when the router
may cut a generation short or stream it to a client who may leave). ``shared=True``
sends it on one of the replica's shared streams (see ``mux``), the cheap path for the
rest. Either way the router ends the request at its deadline (closing its own stream) and
Triton gets the deadline as the ``timeout`` request parameter; a request without an id
gets a new stream with the gRPC deadline, closed after it.

``counts=True`` asks the backend for its token counts (``counts``); a model that has no
such inputs refuses the request before generating anything, and the pool then sends it
again without, and never asks that model again (its tokens are counted by the router).

Retries happen only where nothing was generated yet, on another replica when there is
one. Which replicas exist is decided by ``configure``: the specialist's static
``replicas``, else the Pods a discovery source (EndpointSlices) reports for the Service
its ``endpoint`` names, else the endpoint itself (a DNS name whose addresses a
round-robin channel spreads new streams over).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Protocol

import grpc
from tritonclient.grpc import service_pb2

from ...api.routerconfig import SpecialistConfig
from .. import metrics as m
from ..breaker import BreakerConfig
from ..errors import RETRY_ATTEMPTS, RETRY_WAIT_S, UpstreamError
from .codec import Piece, from_rpc_error, read_message
from .codecs import Codec, TextCodec
from .counts import unsupported
from .exclusive import ExclusiveStream
from .replicas import Replica, ReplicaSet

log = logging.getLogger("slmfleet.router")

#: The codec of callers that name none: the vLLM contract (see ``codecs``).
DEFAULT_CODEC: Codec = TextCodec()
#: Longest wait for a model's metadata (asked once per model, see ``codecs``).
METADATA_TIMEOUT_S = 5.0


class Discovery(Protocol):
    """Tells the pool which Pods serve an endpoint (see ``discovery``)."""

    def track(self, endpoint: str, on_change: Any) -> bool:
        """Start reporting ``endpoint``'s Pods to ``on_change(addresses)``; False when
        the endpoint names no Service this source can watch."""
        ...

    def untrack(self, endpoint: str) -> None: ...


class TritonPool:
    def __init__(
        self,
        *,
        discovery: Discovery | None = None,
        breaker_config: BreakerConfig | None = None,
    ) -> None:
        self.discovery = discovery
        self.breaker_config = breaker_config
        self._sets: dict[str, ReplicaSet] = {}
        self._tracked: set[str] = set()
        self._no_counts: set[tuple[str, str]] = set()
        """(endpoint, model) pairs whose backend refused the token-count inputs."""
        self._zero_models: dict[str, set[str]] = {}
        """Endpoint -> models scaled to zero on a server that serves others too (a local
        Triton under explicit model control): held per model, not by emptying the set."""
        self._models_changed = asyncio.Event()

    # -- which replicas -----------------------------------------------------------------
    def replica_set(self, endpoint: str) -> ReplicaSet:
        """The endpoint's replicas; an endpoint never configured is its own replica."""
        rs = self._sets.get(endpoint)
        if rs is None:
            rs = self._sets[endpoint] = ReplicaSet(endpoint, breaker_config=self.breaker_config)
            rs.update([endpoint], source="dns", round_robin=True)
        return rs

    async def configure(self, specialists: Iterable[SpecialistConfig]) -> None:
        """Follow a new configuration: new endpoints get replica sets, static replica
        lists are applied, endpoints no longer used drain and close."""
        static: dict[str, list[str]] = {}
        zero: dict[str, bool] = {}
        zero_models: dict[str, set[str]] = {}
        for s in specialists:
            static.setdefault(s.endpoint, []).extend(s.replicas)
            zero[s.endpoint] = zero.get(s.endpoint, True) and s.scaled_to_zero
            if s.scaled_to_zero:
                zero_models.setdefault(s.endpoint, set()).add(s.triton_model)
        shared = {e: models for e, models in zero_models.items() if not zero[e]}
        if any(models - shared.get(e, set()) for e, models in self._zero_models.items()):
            self._models_changed.set()  # a model is back: its waiting requests go on
            self._models_changed = asyncio.Event()
        self._zero_models = shared
        for endpoint, addresses in static.items():
            rs = self._sets.get(endpoint)
            if rs is None:
                rs = self._sets[endpoint] = ReplicaSet(endpoint, breaker_config=self.breaker_config)
            if addresses:
                self._untrack(endpoint)
                # Scaled to zero: no replica, whatever the list says (requests wait).
                rs.update([] if zero[endpoint] else addresses, source="static")
                continue
            if (
                endpoint not in self._tracked
                and self.discovery is not None
                and self.discovery.track(endpoint, self._updater(rs))
            ):
                self._tracked.add(endpoint)
            if rs.source != "endpointslices":
                # Until discovery answers (or without it): the endpoint's DNS name, unless
                # the specialist is scaled to zero (its name resolves to no Pod).
                if zero[endpoint]:
                    rs.update([], source="dns")
                else:
                    rs.update([endpoint], source="dns", round_robin=True)
        for endpoint in [e for e in self._sets if e not in static]:
            self._untrack(endpoint)
            rs = self._sets.pop(endpoint)
            rs.update([], source=rs.source)  # drain: in-flight requests finish

    @staticmethod
    def _updater(rs: ReplicaSet) -> Any:
        def on_change(addresses: list[str]) -> None:
            rs.update(addresses, source="endpointslices")

        return on_change

    def _untrack(self, endpoint: str) -> None:
        if endpoint in self._tracked and self.discovery is not None:
            self.discovery.untrack(endpoint)
        self._tracked.discard(endpoint)

    async def close(self) -> None:
        for endpoint in list(self._sets):
            self._untrack(endpoint)
            await self._sets.pop(endpoint).close()

    def load(self, endpoint: str, model: str = "") -> tuple[int, int]:
        """(active replicas, requests outstanding on them) of ``endpoint`` for ``model``,
        now (none while the model is scaled to zero on a shared server)."""
        if model in self._zero_models.get(endpoint, ()):
            return 0, 0
        active = self.replica_set(endpoint).active()
        return len(active), sum(r.outstanding for r in active)

    async def _model_back(self, endpoint: str, model: str, until: float, specialist: str) -> None:
        """Hold a request for a model scaled to zero on a shared server until the
        configuration brings it back (or ``until``, loop clock)."""
        while model in self._zero_models.get(endpoint, ()):
            changed = self._models_changed
            gauge = m.bound(m.WAITING, specialist)
            gauge.inc()
            try:
                async with asyncio.timeout_at(until):
                    await changed.wait()
            except TimeoutError:
                raise UpstreamError(
                    f"model {model} on {endpoint} was not loaded in time", reason="no_replica"
                ) from None
            finally:
                gauge.dec()

    # -- one request --------------------------------------------------------------------
    def shared_stream(
        self,
        endpoint: str,
        model: str,
        prompt: str,
        sampling: Mapping[str, Any],
        *,
        timeout_s: float,
        request_id: str = "",
    ) -> AsyncIterator[Piece]:
        """``stream`` on a shared stream (a request without an id gets its own)."""
        return self.stream(
            endpoint,
            model,
            prompt,
            sampling,
            timeout_s=timeout_s,
            request_id=request_id,
            shared=bool(request_id),
        )

    async def stream(
        self,
        endpoint: str,
        model: str,
        prompt: str,
        sampling: Mapping[str, Any],
        *,
        timeout_s: float,
        request_id: str = "",
        shared: bool = False,
        specialist: str = "-",
        codec: Codec | None = None,
        counts: bool = False,
        wait_s: float | None = None,
    ) -> AsyncIterator[Piece]:
        """Stream the model's text deltas from the least-loaded replica of ``endpoint``,
        in ``codec``'s backend contract (default: vLLM's); while it has none, wait for one
        at most ``wait_s`` (and the deadline)."""
        counts = counts and (endpoint, model) not in self._no_counts
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        wait_until = deadline if wait_s is None else min(deadline, loop.time() + wait_s)
        await self._model_back(endpoint, model, wait_until, specialist)
        rs = self.replica_set(endpoint)
        tried: list[Replica] = []
        attempt = 0
        while True:
            attempt += 1
            others = len(rs.active()) > len(tried)
            replica, probe = await rs.acquire_probe(
                wait_until, exclude=tried if others else (), specialist=specialist
            )
            if model in self._zero_models.get(endpoint, ()):
                # The server came back (every model on it had been at zero) but this model
                # did not: hold on for it rather than ask for a model that is not loaded.
                rs.release(replica, ok=True, fault=False, probe=probe)
                await self._model_back(endpoint, model, wait_until, specialist)
                attempt -= 1
                continue
            started = ok = fault = False
            try:
                gen = self._on(
                    replica, model, prompt, sampling, deadline, request_id, shared, codec, counts
                )
                try:
                    async for piece in gen:
                        started = True
                        yield piece
                finally:
                    await gen.aclose()
                ok = True
                return
            except UpstreamError as exc:
                if counts and not started and unsupported(str(exc)):
                    log.info(
                        "%s/%s reports no token counts: the router counts them", endpoint, model
                    )
                    self._no_counts.add((endpoint, model))
                    counts = False
                    ok = True  # the replica answered: nothing wrong with it
                    continue
                fault = exc.retryable or "UNAVAILABLE" in str(exc)
                if (
                    exc.retryable
                    and not started
                    and attempt < RETRY_ATTEMPTS
                    and loop.time() + RETRY_WAIT_S < deadline
                ):
                    tried.append(replica)
                    if not others:
                        await asyncio.sleep(RETRY_WAIT_S)
                    continue
                raise
            finally:
                rs.release(replica, ok=ok, fault=fault, probe=probe)

    async def _on(
        self,
        replica: Replica,
        model: str,
        prompt: str,
        sampling: Mapping[str, Any],
        deadline: float,
        request_id: str,
        shared: bool,
        codec: Codec | None = None,
        counts: bool = False,
    ) -> AsyncIterator[Piece]:
        loop = asyncio.get_running_loop()
        codec = codec or DEFAULT_CODEC
        if codec.needs_metadata(model):
            await _learn(replica, codec, model, deadline)
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise UpstreamError(f"triton {replica.address}: deadline exceeded", timeout=True)
        req = codec.request(model, prompt, sampling, request_id, timeout_s=remaining, counts=counts)
        s = replica.shared_for(request_id) if shared and request_id else None
        own: ExclusiveStream | None = None
        if s is not None:
            gen = s.exchange(req, request_id, model, deadline, codec.parse)
        elif request_id:
            own = replica.take_exclusive()
            gen = own.exchange(req, request_id, model, deadline, codec.parse)
        else:
            gen = _dedicated(replica, req, model, remaining, codec.parse)
        try:
            async for piece in gen:
                yield piece
        except UpstreamError as exc:
            if own is not None and exc.retryable:
                replica.exclusive.close_idle()  # they share the connection that failed
            raise
        finally:
            await gen.aclose()
            if own is not None:
                replica.give_back(own)


async def _learn(replica: Replica, codec: Codec, model: str, deadline: float) -> None:
    """Ask the replica for ``model``'s metadata (inputs, outputs) for ``codec``."""
    loop = asyncio.get_running_loop()
    timeout = min(METADATA_TIMEOUT_S, deadline - loop.time())
    if timeout <= 0:
        raise UpstreamError(f"triton {replica.address}: deadline exceeded", timeout=True)
    try:
        meta = await replica.stub.ModelMetadata(
            service_pb2.ModelMetadataRequest(name=model), timeout=timeout
        )
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc, replica.address, started=False) from exc
    codec.learn(model, meta)


async def _dedicated(
    replica: Replica, req: Any, model: str, timeout_s: float, parse: Any = None
) -> AsyncIterator[Piece]:
    """One request on a stream of its own; closing it cancels the call (and Triton's
    generation); its gRPC deadline is the request's."""
    address = replica.address
    # Written in place rather than from a request iterator: grpc.aio would start a task
    # per call to consume the iterator.
    call = replica.stub.ModelStreamInfer(timeout=timeout_s)
    started = False
    try:
        try:
            await call.write(req)
            await call.done_writing()
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, address, started=False) from exc
        while True:
            try:
                msg = await call.read()
            except grpc.aio.AioRpcError as exc:
                raise from_rpc_error(exc, address, started=started) from exc
            if msg is grpc.aio.EOF:
                if not started:
                    raise UpstreamError(f"triton {address}: stream closed before any response")
                return
            piece, final = read_message(msg, address, model, parse)
            started = True
            if piece is not None:
                yield piece
            if final:
                return
    finally:
        if not call.done():
            call.cancel()
