"""Triton's streaming contract, both ways: the request the router builds and the
responses it reads (raw buffers and typed contents), and gRPC statuses as errors."""

from __future__ import annotations

import struct

import grpc
import orjson
import pytest
from tritonclient.grpc import service_pb2

from slmfleet.router.errors import UpstreamError
from slmfleet.router.triton.codec import (
    MIN_TIMEOUT_US,
    Piece,
    build_request,
    is_final,
    parse_response,
    read_message,
    rpc_error,
)


def _bytes(b: bytes) -> bytes:
    return struct.pack("<I", len(b)) + b


def test_request_tensors_and_parameters():
    req = build_request("m", "héllo", {"max_tokens": 3}, "rid-1", timeout_s=2.5)
    assert (req.model_name, req.id) == ("m", "rid-1")
    assert [(t.name, t.datatype, list(t.shape)) for t in req.inputs] == [
        ("text_input", "BYTES", [1]),
        ("stream", "BOOL", [1]),
        ("sampling_parameters", "BYTES", [1]),
    ]
    text, stream, sampling = req.raw_input_contents
    assert text == _bytes("héllo".encode())
    assert stream == b"\x01"
    assert orjson.loads(sampling[4:]) == {"max_tokens": 3}
    assert req.parameters["triton_enable_empty_final_response"].bool_param is True
    # The deadline reaches Triton as its timeout request parameter, in microseconds.
    assert req.parameters["timeout"].int64_param == 2_500_000


@pytest.mark.parametrize(
    ("timeout_s", "expected"),
    [(None, None), (0.0, MIN_TIMEOUT_US), (1e-9, MIN_TIMEOUT_US), (0.25, 250_000)],
)
def test_timeout_parameter(timeout_s, expected):
    req = build_request("m", "p", {}, "r", timeout_s=timeout_s)
    got = req.parameters["timeout"].int64_param if "timeout" in req.parameters else None
    assert got == expected


def _response(*, text=None, conf=None, raw=True, final=None, rid="r"):
    resp = service_pb2.ModelInferResponse(id=rid)
    if text is not None:
        out = resp.outputs.add()
        out.name, out.datatype = "text_output", "BYTES"
        if raw:
            resp.raw_output_contents.append(b"".join(_bytes(t.encode()) for t in text))
        else:
            out.contents.bytes_contents.extend(t.encode() for t in text)
    if conf is not None:
        out = resp.outputs.add()
        out.name, out.datatype = "confidence", "FP32"
        if raw:
            resp.raw_output_contents.append(struct.pack("<f", conf))
        else:
            out.contents.fp32_contents.append(conf)
    if final is not None:
        resp.parameters["triton_final_response"].bool_param = final
    return resp


@pytest.mark.parametrize(
    ("resp", "piece", "final"),
    [
        (_response(text=["Hello "], conf=0.5), Piece("Hello ", 0.5), False),
        (_response(text=["a", "b"], raw=True), Piece("ab", None), False),
        (_response(text=["typed"], conf=0.25, raw=False), Piece("typed", 0.25), False),
        (_response(text=["last"], final=True), Piece("last", None), True),
        (_response(final=True), None, True),  # flag-only final response
        (_response(), None, False),
    ],
)
def test_parse_response(resp, piece, final):
    assert parse_response(resp) == (piece, final)


def test_read_message_raises_the_models_error_and_errors_are_final():
    msg = service_pb2.ModelStreamInferResponse(error_message="boom")
    assert is_final(msg)
    with pytest.raises(UpstreamError, match="boom"):
        read_message(msg, "h:1", "m")
    ok = service_pb2.ModelStreamInferResponse(infer_response=_response(text=["x"]))
    assert not is_final(ok) and read_message(ok, "h:1", "m") == (Piece("x", None), False)
    done = service_pb2.ModelStreamInferResponse(infer_response=_response(final=True))
    assert is_final(done)


@pytest.mark.parametrize(
    ("code", "started", "timeout", "retryable"),
    [
        (grpc.StatusCode.DEADLINE_EXCEEDED, False, True, False),
        (grpc.StatusCode.UNAVAILABLE, False, False, True),
        (grpc.StatusCode.UNAVAILABLE, True, False, False),  # something was generated
        (grpc.StatusCode.INTERNAL, False, False, False),
    ],
)
def test_rpc_errors(code, started, timeout, retryable):
    e = rpc_error(code, "details", "h:1", started=started)
    assert (e.timeout, e.retryable) == (timeout, retryable)
    assert code.name in str(e) and "h:1" in str(e)
