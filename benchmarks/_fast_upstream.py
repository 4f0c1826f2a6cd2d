"""A benchmark instrument: an upstream that answers instantly, over Triton's gRPC protocol
and over HTTP, so a proxy in front of it (not the upstream) is the bottleneck.

Only for benchmarks/router_overhead.py; tests use the real tritonserver, never this.

- gRPC: ``inference.GRPCInferenceService/ModelStreamInfer`` with tritonclient's own
  protobufs (``tritonclient.grpc.service_pb2``). Every request gets what a decoupled
  Triton model that produces its answer in one piece sends: one response with the
  ``text_output`` (BYTES) and ``confidence`` (FP32) tensors, then the flag-only final
  response (``triton_final_response``), as Triton does for
  ``triton_enable_empty_final_response``.
- HTTP/1.1 keep-alive (httptools parser on uvloop): ``POST /v1/chat/completions`` and
  ``POST /v1/completions`` answer the same text in OpenAI's format (what LiteLLM's
  ``openai/`` provider calls), and ``POST /v2/models/<m>/generate`` answers it in
  Triton's generate-extension format (LiteLLM's ``triton/`` provider).

Run: ``python benchmarks/_fast_upstream.py --grpc-port P --http-port Q``; it prints
``ready`` once both listen and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct
import time

import grpc
import httptools
import orjson
import uvloop
from tritonclient.grpc import service_pb2, service_pb2_grpc

ANSWER = "Here is a complete answer from the fast upstream."
CONFIDENCE = 0.99
ANSWER_TOKENS = 9  # what the HTTP answers report as completion_tokens


def _answer_response(req: service_pb2.ModelInferRequest) -> service_pb2.ModelStreamInferResponse:
    out = service_pb2.ModelStreamInferResponse()
    r = out.infer_response
    r.model_name = req.model_name
    r.id = req.id
    t = r.outputs.add()
    t.name, t.datatype = "text_output", "BYTES"
    t.shape.append(1)
    c = r.outputs.add()
    c.name, c.datatype = "confidence", "FP32"
    c.shape.append(1)
    text = ANSWER.encode()
    r.raw_output_contents.extend(
        [struct.pack("<I", len(text)) + text, struct.pack("<f", CONFIDENCE)]
    )
    # Token counts when asked, as vLLM's backend reports them (and as the HTTP answers
    # below carry ``usage`` for LiteLLM): the proxy never has to count them itself.
    asked = {i.name for i in req.inputs}
    for name, count in (
        ("num_output_tokens", ANSWER_TOKENS),
        ("num_input_tokens", len(_prompt(req).split())),
    ):
        if "return_" + name in asked:
            t = r.outputs.add()
            t.name, t.datatype = name, "UINT32"
            t.shape.append(1)
            r.raw_output_contents.append(struct.pack("<I", count))
    return out


def _prompt(req: service_pb2.ModelInferRequest) -> str:
    for i, t in enumerate(req.inputs):
        if t.name == "text_input" and i < len(req.raw_input_contents):
            raw = req.raw_input_contents[i]
            return raw[4 : 4 + struct.unpack_from("<I", raw)[0]].decode(errors="replace")
    return ""


def _final_response(req: service_pb2.ModelInferRequest) -> service_pb2.ModelStreamInferResponse:
    out = service_pb2.ModelStreamInferResponse()
    r = out.infer_response
    r.model_name = req.model_name
    r.id = req.id
    r.parameters["triton_final_response"].bool_param = True
    return out


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    async def ModelStreamInfer(self, request_iterator, context):
        async for req in request_iterator:
            yield _answer_response(req)
            yield _final_response(req)

    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=True)

    async def ModelReady(self, request, context):
        return service_pb2.ModelReadyResponse(ready=True)


# ---- HTTP ------------------------------------------------------------------------------


def _chat_body(model: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-fast",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
        }
    )


def _completion_body(model: str) -> bytes:
    return orjson.dumps(
        {
            "id": "cmpl-fast",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "text": ANSWER, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
        }
    )


def _http_response(status: bytes, body: bytes) -> bytes:
    return (
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


class HTTPProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        path = self.url.split(b"?", 1)[0]
        try:
            req = orjson.loads(b"".join(self.body)) if self.body else {}
        except orjson.JSONDecodeError:
            req = {}
        model = str(req.get("model", "fast")) if isinstance(req, dict) else "fast"
        if path.endswith(b"/chat/completions"):
            out = _http_response(b"200 OK", _chat_body(model))
        elif path.endswith(b"/completions"):
            out = _http_response(b"200 OK", _completion_body(model))
        elif path.startswith(b"/v2/models/") and path.endswith(b"/generate"):
            name = path[len(b"/v2/models/") : -len(b"/generate")].decode()
            body = orjson.dumps({"model_name": name, "model_version": "1", "text_output": ANSWER})
            out = _http_response(b"200 OK", body)
        elif path in (b"/v2/health/ready", b"/v2/health/live", b"/health"):
            out = _http_response(b"200 OK", b"{}")
        else:
            out = _http_response(b"404 Not Found", b'{"error": "not found"}')
        self.transport.write(out)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(grpc_port: int, http_port: int) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    loop = asyncio.get_running_loop()
    http = await loop.create_server(HTTPProtocol, "127.0.0.1", http_port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    http.close()
    await server.stop(grace=0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--http-port", type=int, required=True)
    args = ap.parse_args()
    uvloop.run(serve(args.grpc_port, args.http_port))


if __name__ == "__main__":
    main()
