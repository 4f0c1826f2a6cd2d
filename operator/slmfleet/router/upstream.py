"""Upstream I/O: Triton over gRPC (streaming, decoupled) and external OpenAI endpoints.

Thin by design. One pooled gRPC channel per Triton endpoint, requests built straight
from tritonclient's protobufs (no numpy on the hot path), deadlines from the caller,
retries only where nothing was generated yet (a refused or dropped connection before
the first token is safe to retry; anything later is not).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import struct
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import orjson
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_fixed
from tritonclient.grpc import service_pb2, service_pb2_grpc

from ..api.routerconfig import ExternalConfig as ExternalEndpoint
from . import egress, secrets
from .errors import UpstreamError

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # Reconnect quickly once a restarted Triton is back (defaults back off to minutes).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 30000),
    # A specialist's Service is headless: DNS names every ready Pod, and each new
    # stream goes to the next one (the default, pick_first, would use only one Pod).
    ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
]
RETRY_ATTEMPTS = 2
RETRY_WAIT_S = 0.05


@dataclass(frozen=True, slots=True)
class Piece:
    text: str
    confidence: float | None


def _bytes_tensor(value: bytes) -> bytes:
    return struct.pack("<I", len(value)) + value


def build_request(model: str, prompt: str, sampling: Mapping[str, Any], request_id: str):
    """One streaming ModelInferRequest in the vLLM-backend tensor contract."""
    req = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    for name, dtype in (
        ("text_input", "BYTES"),
        ("stream", "BOOL"),
        ("sampling_parameters", "BYTES"),
    ):
        t = req.inputs.add()
        t.name, t.datatype = name, dtype
        t.shape.append(1)
    req.raw_input_contents.extend(
        [
            _bytes_tensor(prompt.encode()),
            b"\x01",
            _bytes_tensor(orjson.dumps(dict(sampling))),
        ]
    )
    # A flag-only final response tells us the request is complete without waiting for
    # the stream to close.
    req.parameters["triton_enable_empty_final_response"].bool_param = True
    return req


def read_message(msg: Any, endpoint: str, model: str) -> tuple[Piece | None, bool]:
    """One ModelStreamInfer message: its piece and final flag, or the model's error."""
    if msg.error_message:
        raise UpstreamError(f"triton {endpoint}/{model}: {msg.error_message}")
    return parse_response(msg.infer_response)


def parse_response(resp: Any) -> tuple[Piece | None, bool]:
    """(piece or None for a flag-only response, final?)."""
    final = False
    p = resp.parameters.get("triton_final_response")
    if p is not None:
        final = p.bool_param
    text_parts: list[str] = []
    conf: float | None = None
    raw = resp.raw_output_contents
    for i, out in enumerate(resp.outputs):
        if out.name == "text_output":
            if i < len(raw):
                buf, off = raw[i], 0
                while off + 4 <= len(buf):
                    (n,) = struct.unpack_from("<I", buf, off)
                    text_parts.append(buf[off + 4 : off + 4 + n].decode("utf-8", "replace"))
                    off += 4 + n
            else:
                text_parts.extend(b.decode("utf-8", "replace") for b in out.contents.bytes_contents)
        elif out.name == "confidence":
            if i < len(raw) and len(raw[i]) >= 4:
                (conf,) = struct.unpack_from("<f", raw[i], 0)
            elif out.contents.fp32_contents:
                conf = out.contents.fp32_contents[0]
    if not resp.outputs:
        return None, final
    return Piece("".join(text_parts), None if conf is None else round(conf, 6)), final


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, UpstreamError) and exc.retryable


def _rpc_error(exc: grpc.aio.AioRpcError, endpoint: str, *, started: bool) -> UpstreamError:
    code = exc.code()
    timeout = code == grpc.StatusCode.DEADLINE_EXCEEDED
    retryable = code == grpc.StatusCode.UNAVAILABLE and not started
    return UpstreamError(
        f"triton {endpoint}: {code.name}: {exc.details()}", timeout=timeout, retryable=retryable
    )


_TIMEOUT = object()
#: A shared stream unused this long is closed (see _SharedStream._close_if_idle).
SHARED_IDLE_S = 10.0
#: Shared streams per endpoint, used in turn; round_robin places each on the next Pod,
#: so replicas share the load even though a stream stays on the Pod it started on.
SHARED_STREAMS = 4
_ABANDONED_MAX = 4096


class _Inbox:
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


class _SharedStream:
    """One long-lived ``ModelStreamInfer`` stream carrying many requests, as tritonclient's
    own ``start_stream``/``async_stream_infer`` do; responses are matched by request id.

    A gRPC stream costs far more to open than a message costs to send, so requests that
    never need cancelling in Triton use this. Triton cancels per stream, so abandoning
    one of these requests (deadline) only stops waiting for it; its late responses are
    dropped. Ids still in flight, or abandoned before their final response, are not
    reused here (the caller gets a dedicated stream instead).
    """

    def __init__(self, stub: Any, endpoint: str) -> None:
        self.endpoint = endpoint
        self.call = stub.ModelStreamInfer()
        self.pending: dict[str, _Inbox] = {}
        self.abandoned: dict[str, None] = {}
        self.lock = asyncio.Lock()
        self.dead = False
        loop = asyncio.get_running_loop()
        self.last_used = loop.time()
        self.reader = loop.create_task(self._read())
        self._idle_timer = loop.call_later(SHARED_IDLE_S, self._close_if_idle)

    def _close_if_idle(self) -> None:
        """An idle open stream would draw keepalive pings "without data", which Triton's
        gRPC server answers with GOAWAY (too_many_pings), so idle streams are closed and
        the next request opens a new one."""
        if self.dead:
            return
        loop = asyncio.get_running_loop()
        idle = loop.time() - self.last_used
        if not self.pending and idle >= SHARED_IDLE_S:
            self.close()
        else:
            self._idle_timer = loop.call_later(max(0.1, SHARED_IDLE_S - idle), self._close_if_idle)

    def usable(self, request_id: str) -> bool:
        return not self.dead and request_id not in self.pending and request_id not in self.abandoned

    async def _read(self) -> None:
        error: BaseException | None = None
        try:
            while True:
                msg = await self.call.read()
                if msg is grpc.aio.EOF:
                    break
                rid = msg.infer_response.id
                box = self.pending.get(rid)
                if box is not None:
                    box.put(msg)
                elif rid in self.abandoned:
                    p = msg.infer_response.parameters.get("triton_final_response")
                    if msg.error_message or (p is not None and p.bool_param):
                        del self.abandoned[rid]
        except asyncio.CancelledError:
            error = grpc.aio.AioRpcError(
                grpc.StatusCode.CANCELLED,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                "stream closed by the router",
            )
        except BaseException as exc:  # the stream (connection) failed: fail its requests
            error = exc
        finally:
            self.dead = True
            for box in self.pending.values():
                box.put(error if error is not None else grpc.aio.EOF)

    async def send(self, req: Any, timeout_s: float | None = None) -> None:
        """Write one request; a write (or the wait for the lock) stuck past ``timeout_s``
        marks the stream dead (new requests open another one) and raises TimeoutError."""
        try:
            await asyncio.wait_for(self._send(req), timeout_s)
        except TimeoutError:
            self.dead = True
            raise

    async def _send(self, req: Any) -> None:
        async with self.lock:
            await self.call.write(req)

    def abandon(self, rid: str) -> None:
        self.abandoned[rid] = None
        if len(self.abandoned) > _ABANDONED_MAX:
            del self.abandoned[next(iter(self.abandoned))]

    def close(self) -> None:
        self.dead = True
        self._idle_timer.cancel()
        self.reader.cancel()
        self.call.cancel()


class TritonPool:
    """One gRPC channel per endpoint, created lazily on the running loop.

    ``stream`` opens a dedicated gRPC stream per request (closing it cancels the request
    in Triton: used when the router may cut a generation short or the client may go
    away); ``shared_stream`` sends the request on the endpoint's long-lived shared
    stream (see _SharedStream) and is the fast path for everything else.
    """

    def __init__(self) -> None:
        self._stubs: dict[str, tuple[grpc.aio.Channel, Any]] = {}
        self._shared: dict[str, list[_SharedStream | None]] = {}
        self._turn = 0

    def stub(self, endpoint: str) -> Any:
        entry = self._stubs.get(endpoint)
        if entry is None:
            channel = grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
            entry = self._stubs[endpoint] = (
                channel,
                service_pb2_grpc.GRPCInferenceServiceStub(channel),
            )
        return entry[1]

    async def _drop(self, endpoint: str, grace: float | None) -> None:
        # Shared streams never end on their own: close them first, so the channel's
        # grace period waits only for dedicated streams still in flight.
        for s in self._shared.pop(endpoint, []):
            if s is not None:
                s.close()
        channel, _ = self._stubs.pop(endpoint)
        await channel.close(grace=grace)

    async def close(self) -> None:
        for endpoint in list(self._stubs):
            await self._drop(endpoint, None)

    async def forget(self, keep: set[str]) -> None:
        """Close channels of endpoints no longer in the config."""
        for endpoint in [e for e in self._stubs if e not in keep]:
            await self._drop(endpoint, 5.0)

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
        """Like stream(), on the endpoint's shared stream; closing the iterator early
        stops waiting but does not cancel the request in Triton."""
        if not request_id:
            return self.stream(
                endpoint, model, prompt, sampling, timeout_s=timeout_s, request_id=request_id
            )
        return self._on_shared(endpoint, model, prompt, sampling, timeout_s, request_id)

    def _live_shared(self, endpoint: str) -> _SharedStream:
        slots = self._shared.setdefault(endpoint, [None] * SHARED_STREAMS)
        self._turn = turn = (self._turn + 1) % SHARED_STREAMS
        shared = slots[turn]
        if shared is None or shared.dead:
            shared = slots[turn] = _SharedStream(self.stub(endpoint), endpoint)
        return shared

    async def _on_shared(
        self,
        endpoint: str,
        model: str,
        prompt: str,
        sampling: Mapping[str, Any],
        timeout_s: float,
        request_id: str,
    ) -> AsyncIterator[Piece]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        shared = self._live_shared(endpoint)
        if not shared.usable(request_id):  # its id is in flight there: a stream of its own
            gen = self.stream(
                endpoint, model, prompt, sampling, timeout_s=timeout_s, request_id=request_id
            )
            try:
                async for piece in gen:
                    yield piece
            finally:
                await gen.aclose()
            return
        req = build_request(model, prompt, sampling, request_id)
        attempt = 0
        while True:
            attempt += 1
            box = _Inbox()
            shared.pending[request_id] = box
            timer = loop.call_at(deadline, box.put, _TIMEOUT)
            started = finished = False
            try:
                try:
                    await shared.send(req, max(0.0, deadline - loop.time()))
                except TimeoutError as exc:
                    raise UpstreamError(
                        f"triton {endpoint}: DEADLINE_EXCEEDED: stuck writing the request",
                        timeout=True,
                    ) from exc
                except grpc.aio.AioRpcError as exc:
                    raise _rpc_error(exc, endpoint, started=False) from exc
                except Exception as exc:  # the shared stream is gone: nothing was sent
                    shared.dead = True
                    raise UpstreamError(f"triton {endpoint}: {exc!r}", retryable=True) from exc
                while True:
                    item = await box.get()
                    if item is _TIMEOUT:
                        raise UpstreamError(
                            f"triton {endpoint}: DEADLINE_EXCEEDED: Deadline Exceeded",
                            timeout=True,
                        )
                    if item is grpc.aio.EOF:
                        finished = True
                        if not started:
                            raise UpstreamError(
                                f"triton {endpoint}: stream closed before any response"
                            )
                        return
                    if isinstance(item, grpc.aio.AioRpcError):
                        finished = True
                        raise _rpc_error(item, endpoint, started=started) from item
                    if isinstance(item, BaseException):
                        finished = True
                        raise UpstreamError(
                            f"triton {endpoint}: {item!r}", retryable=not started
                        ) from item
                    finished = bool(item.error_message)
                    piece, final = read_message(item, endpoint, model)
                    started = True
                    finished = final
                    if piece is not None:
                        yield piece
                    if final:
                        return
            except UpstreamError as exc:
                if (
                    exc.retryable
                    and not started
                    and attempt < RETRY_ATTEMPTS
                    and loop.time() + RETRY_WAIT_S < deadline
                ):
                    await asyncio.sleep(RETRY_WAIT_S)
                    shared = self._live_shared(endpoint)
                    if shared.usable(request_id):
                        continue
                raise
            finally:
                timer.cancel()
                shared.last_used = loop.time()
                if shared.pending.get(request_id) is box:
                    del shared.pending[request_id]
                if not finished and not shared.dead:
                    shared.abandon(request_id)

    async def stream(
        self,
        endpoint: str,
        model: str,
        prompt: str,
        sampling: Mapping[str, Any],
        *,
        timeout_s: float,
        request_id: str = "",
    ) -> AsyncIterator[Piece]:
        """Stream text deltas; closing the generator early cancels the Triton request."""
        stub = self.stub(endpoint)
        req = build_request(model, prompt, sampling, request_id)
        deadline = time.monotonic() + timeout_s
        call = None
        first: tuple[Piece | None, bool] | None = None

        async def open_call():
            nonlocal call
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UpstreamError(f"triton {endpoint}: deadline exceeded", timeout=True)
            call = stub.ModelStreamInfer(iter((req,)), timeout=remaining)
            try:
                msg = await call.read()
            except grpc.aio.AioRpcError as exc:
                raise _rpc_error(exc, endpoint, started=False) from exc
            if msg is grpc.aio.EOF:
                raise UpstreamError(f"triton {endpoint}: stream closed before any response")
            return read_message(msg, endpoint, model)

        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(RETRY_ATTEMPTS),
            wait=wait_fixed(RETRY_WAIT_S),
            retry=retry_if_exception(_is_retryable),
            reraise=True,
        ):
            with attempt:
                first = await open_call()
        assert call is not None and first is not None
        try:
            piece, final = first
            if piece is not None:
                yield piece
            while not final:
                try:
                    msg = await call.read()
                except grpc.aio.AioRpcError as exc:
                    raise _rpc_error(exc, endpoint, started=True) from exc
                if msg is grpc.aio.EOF:
                    break
                piece, final = read_message(msg, endpoint, model)
                if piece is not None:
                    yield piece
        finally:
            if not call.done():
                call.cancel()


# ---- external OpenAI-compatible endpoints -------------------------------------------


@dataclass(frozen=True, slots=True)
class ExternalAnswer:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str


log = logging.getLogger("slmfleet.router")


class ExternalClients:
    """One pooled httpx client for every external endpoint.

    Every call passes the egress policy (``egress``: allow-listed hosts, https, checked
    addresses at connect time) and takes its API key from the Secret resolver
    (``secrets``: the policy's own namespace only). A key that cannot be read fails the
    tier; the call is never made without it. Errors name the tier's fault, never the
    URL, the upstream's body or the key: they reach callers and logs.
    """

    def __init__(
        self,
        *,
        egress_policy: egress.EgressPolicy | None = None,
        secret_resolver: secrets.SecretResolver | None = None,
    ) -> None:
        self.egress = egress_policy or egress.EgressPolicy()
        self.secrets = secret_resolver or secrets.NoSecrets()
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = egress.client(self.egress)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        await self.secrets.close()

    async def chat(
        self,
        ext: ExternalEndpoint,
        messages: list[dict[str, str]],
        *,
        max_tokens: int | None,
        sampling: Mapping[str, Any],
        timeout_s: float,
        request_id: str,
    ) -> ExternalAnswer:
        body: dict[str, Any] = {"model": ext.model, "messages": messages}
        body.update(
            {
                k: v
                for k, v in sampling.items()
                if k
                in ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")
            }
        )
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        headers = {"content-type": "application/json", "x-request-id": request_id}
        url = ext.base_url.rstrip("/") + "/chat/completions"
        try:
            self.egress.check_url(url)
        except egress.EgressDenied as exc:
            raise UpstreamError(f"external tier: {exc}", public=f"external tier: {exc}") from None
        if ext.api_key is not None:
            try:
                key = await self.secrets.get(secrets.of(ext.api_key))
            except secrets.SecretUnavailable as exc:
                log.warning("external tier API key unavailable: %s", exc.reason)
                msg = f"external tier: API key unavailable ({exc.reason})"
                raise UpstreamError(msg, public=msg) from None
            headers["authorization"] = f"Bearer {key}"

        async def once() -> httpx.Response:
            try:
                return await self.client().post(
                    url, content=orjson.dumps(body), headers=headers, timeout=timeout_s
                )
            except httpx.ConnectError as exc:
                denied = "not allowed" in str(exc)
                reason = str(exc) if denied else "connection failed"
                msg = f"external tier: {reason}"
                raise UpstreamError(msg, retryable=not denied, public=msg) from None
            except httpx.TimeoutException:
                raise UpstreamError("external tier: timeout", timeout=True) from None
            except httpx.HTTPError as exc:
                raise UpstreamError(f"external tier: {type(exc).__name__}") from None

        resp = None
        # httpx's timeout is per phase (connect, read, ...) and a retry starts afresh:
        # the whole call, retry included, must fit in the time the tier has.
        try:
            async with asyncio.timeout(timeout_s):
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(RETRY_ATTEMPTS),
                    wait=wait_fixed(RETRY_WAIT_S),
                    retry=retry_if_exception(_is_retryable),
                    reraise=True,
                ):
                    with attempt:
                        resp = await once()
        except TimeoutError:
            raise UpstreamError("external tier: timeout", timeout=True) from None
        assert resp is not None
        if resp.status_code >= 400:
            # The upstream's body may echo the request or the key: never passed on.
            msg = f"external tier: HTTP {resp.status_code}"
            raise UpstreamError(msg, timeout=resp.status_code == 504, public=msg)
        try:
            data = orjson.loads(resp.content)
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            raise UpstreamError("external tier: malformed response") from None
        use = data.get("usage") or {}
        return ExternalAnswer(
            text,
            use.get("prompt_tokens"),
            use.get("completion_tokens"),
            choice.get("finish_reason") or "stop",
        )
