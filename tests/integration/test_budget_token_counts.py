"""The CPU stand-ins on the real tritonserver report token counts exactly as the vLLM
backend does: ``num_output_tokens`` per response, ``num_input_tokens`` on request."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from tritonclient.grpc import service_pb2_grpc

from slmfleet.local.models.standin import count_tokens
from slmfleet.router.triton.codec import build_request, parse_response
from slmfleet.router.triton.counts import read_token_counts, request_token_counts, total_counts

pytestmark = pytest.mark.integration


async def stream(url: str, req) -> tuple[str, list]:
    async with grpc.aio.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        text, counts = [], []
        async for msg in stub.ModelStreamInfer(iter((req,)), timeout=60):
            assert not msg.error_message, msg.error_message
            piece, final = parse_response(msg.infer_response)
            if piece is not None:
                text.append(piece.text)
                counts.append(read_token_counts(msg.infer_response))
            if final:
                break
        return "".join(text), counts


@pytest.mark.parametrize(
    ("model", "prompt", "sampling"),
    [
        ("generalist", "Where is my parcel? It has been a week.", {}),
        ("reasoner", "Q: what is 12 * 7?\n", {"max_tokens": 40}),
        ("domain-billing", "I was charged twice, refund please", {}),
    ],
)
def test_standins_report_token_counts(triton, model, prompt, sampling):
    req = request_token_counts(build_request(model, prompt, sampling, f"t-{model}"))
    text, counts = asyncio.run(stream(triton.grpc_url, req))
    assert text and len(counts) == count_tokens(text)  # streamed: one response per token
    assert all(c.output_tokens == 1 for c in counts)
    total = total_counts(counts)
    assert total.output_tokens == count_tokens(text)
    assert total.input_tokens == count_tokens(prompt)
    if "max_tokens" in sampling:
        assert total.output_tokens <= sampling["max_tokens"]


def test_counts_only_when_asked(triton):
    req = build_request("generalist", "hello there", {}, "t-plain")
    text, counts = asyncio.run(stream(triton.grpc_url, req))
    assert text and all(c.input_tokens is None and c.output_tokens is None for c in counts)
    only_out = request_token_counts(
        build_request("generalist", "hi", {}, "t-o"), input_tokens=False
    )
    text, counts = asyncio.run(stream(triton.grpc_url, only_out))
    assert total_counts(counts).input_tokens is None
    assert total_counts(counts).output_tokens == count_tokens(text)
