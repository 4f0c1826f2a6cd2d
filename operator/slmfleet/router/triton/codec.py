"""Triton's gRPC streaming contract, pure: one request in, pieces of text out.

The router speaks the vLLM backend's tensor contract (``text_input`` BYTES, ``stream``
BOOL, ``sampling_parameters`` BYTES holding JSON; ``text_output`` BYTES and an optional
``confidence`` FP32 back; on request the token counts of ``counts``), which the
Python-backend stand-ins share. Requests are built
straight from tritonclient's protobufs (no numpy on the hot path) and responses are read
from their raw output buffers. Nothing here does I/O, so every shape is table-tested.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
from tritonclient.grpc import service_pb2

from ..errors import UpstreamError
from .counts import read_token_counts, request_token_counts
from .logprobs import read_cumulative_logprob

#: Shortest Triton-side timeout sent with a request: Triton reads 0 as "no timeout".
MIN_TIMEOUT_US = 1000


@dataclass(frozen=True, slots=True)
class Piece:
    """One streamed delta of a model's answer."""

    text: str
    confidence: float | None
    output_tokens: int | None = None
    """Tokens of this piece as the backend counted them (``num_output_tokens``)."""
    input_tokens: int | None = None
    """The prompt's tokens as the backend counted them (``num_input_tokens``)."""
    cumulative_logprob: float | None = None
    """Summed log-prob of the tokens generated so far, when asked for (``logprobs``)."""


def bytes_tensor(value: bytes) -> bytes:
    """A one-element BYTES tensor in Triton's raw encoding (little-endian length prefix)."""
    return struct.pack("<I", len(value)) + value


def build_request(
    model: str,
    prompt: str,
    sampling: Mapping[str, Any],
    request_id: str,
    *,
    timeout_s: float | None = None,
    counts: bool = False,
) -> Any:
    """One streaming ``ModelInferRequest`` in the vLLM-backend tensor contract.

    ``timeout_s`` (the time the request has left) becomes Triton's ``timeout`` request
    parameter (microseconds, the schedule-policy extension), so the server may drop a
    request whose caller has given up before it even starts. ``counts`` asks for the
    backend's token counts on every response (``counts.request_token_counts``).
    """
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
            bytes_tensor(prompt.encode()),
            b"\x01",
            bytes_tensor(orjson.dumps(dict(sampling))),
        ]
    )
    if counts:
        request_token_counts(req)
    return finish_request(req, timeout_s)


def finish_request(req: Any, timeout_s: float | None) -> Any:
    """The request parameters every codec sends: a flag-only final response (so the
    end of a request is known without waiting for the stream) and Triton's ``timeout``
    (microseconds) from the time the request has left."""
    req.parameters["triton_enable_empty_final_response"].bool_param = True
    if timeout_s is not None:
        req.parameters["timeout"].int64_param = max(MIN_TIMEOUT_US, int(timeout_s * 1e6))
    return req


def is_final(msg: Any) -> bool:
    """Whether a ``ModelStreamInferResponse`` ends its request (an error always does)."""
    if msg.error_message:
        return True
    p = msg.infer_response.parameters.get("triton_final_response")
    return p is not None and p.bool_param


def read_message(
    msg: Any, endpoint: str, model: str, parse: Callable[[Any], Any] | None = None
) -> tuple[Piece | None, bool]:
    """One ModelStreamInfer message: its piece and final flag, or the model's error.
    ``parse`` reads the response in a backend's contract (see ``codecs``); the vLLM
    contract's by default."""
    if msg.error_message:
        raise UpstreamError(f"triton {endpoint}/{model}: {msg.error_message}")
    return (parse or parse_response)(msg.infer_response)


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
    try:
        n = read_token_counts(resp)
    except ValueError:
        n = None  # counts we cannot read are no counts: the tokenizer counts instead
    try:
        lp = read_cumulative_logprob(resp)
    except ValueError:
        lp = None  # a malformed log-prob is none: the model's own confidence stands
    return Piece(
        "".join(text_parts),
        None if conf is None else round(conf, 6),
        n.output_tokens if n else None,
        n.input_tokens if n else None,
        lp,
    ), final


def rpc_error(
    code: grpc.StatusCode, details: str, endpoint: str, *, started: bool
) -> UpstreamError:
    """A gRPC status as the router's UpstreamError: DEADLINE_EXCEEDED is a timeout;
    UNAVAILABLE before the first response is safe to retry (nothing was generated)."""
    return UpstreamError(
        f"triton {endpoint}: {code.name}: {details}",
        timeout=code == grpc.StatusCode.DEADLINE_EXCEEDED,
        retryable=code == grpc.StatusCode.UNAVAILABLE and not started,
    )


def from_rpc_error(exc: grpc.aio.AioRpcError, endpoint: str, *, started: bool) -> UpstreamError:
    return rpc_error(exc.code(), exc.details() or "", endpoint, started=started)
