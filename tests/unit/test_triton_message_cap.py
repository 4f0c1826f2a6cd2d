"""A tenant's Triton server cannot make the router take messages of any size: a response
over ``MAX_RECEIVE_MESSAGE_BYTES`` fails that request with an UpstreamError, and the
same stream path still carries an answer under the cap.

The other side is a real gRPC server speaking Triton's ``GRPCInferenceService`` in this
process: what is tested is gRPC's receive limit on the router's channel and the
router's handling of it, which no Triton model is needed for (the stand-ins would have
to generate millions of tokens to reach the cap)."""

from __future__ import annotations

import asyncio
import struct

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from slmfleet.router.errors import UpstreamError
from slmfleet.router.triton.codec import build_request
from slmfleet.router.triton.replicas import MAX_RECEIVE_MESSAGE_BYTES, Replica


class Answers(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Answers each request with one final message of ``len(prompt)`` bytes of text."""

    async def ModelStreamInfer(self, request_iterator, context):
        async for req in request_iterator:
            (n,) = struct.unpack_from("<I", req.raw_input_contents[0], 0)
            text = b"x" * n  # as long as the prompt: the test picks the message size
            resp = service_pb2.ModelInferResponse(model_name=req.model_name, id=req.id)
            out = resp.outputs.add()
            out.name, out.datatype = "text_output", "BYTES"
            out.shape.append(1)
            resp.raw_output_contents.append(struct.pack("<I", len(text)) + text)
            resp.parameters["triton_final_response"].bool_param = True
            yield service_pb2.ModelStreamInferResponse(infer_response=resp)


@pytest.fixture
async def server():
    srv = grpc.aio.server(
        options=[("grpc.max_send_message_length", 4 * MAX_RECEIVE_MESSAGE_BYTES),
                 ("grpc.max_receive_message_length", 4 * MAX_RECEIVE_MESSAGE_BYTES)]
    )  # fmt: skip
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Answers(), srv)
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    yield f"127.0.0.1:{port}"
    await srv.stop(grace=None)


async def ask(replica: Replica, size: int, rid: str) -> str:
    req = build_request("m", "p" * size, {}, rid)
    stream = replica.shared_for(rid)
    assert stream is not None
    deadline = asyncio.get_running_loop().time() + 30
    return "".join([piece.text async for piece in stream.exchange(req, rid, "m", deadline)])


async def test_an_oversized_response_is_an_upstream_error_and_the_next_answer_flows(server):
    replica = Replica(server)
    try:
        assert len(await ask(replica, 1 << 20, "r1")) == 1 << 20  # 1 MiB: fine
        with pytest.raises(UpstreamError, match="RESOURCE_EXHAUSTED"):
            await ask(replica, MAX_RECEIVE_MESSAGE_BYTES + 1, "r2")
        assert len(await ask(replica, 1000, "r3")) == 1000  # a new stream, the same replica
    finally:
        await replica.close()
