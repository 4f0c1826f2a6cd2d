"""The CPU stand-ins on the real tritonserver report ``cumulative_logprob`` as the vLLM
backend does, and the router's rule turns it into the answer confidence they claim."""

from __future__ import annotations

import asyncio
import itertools
import math

import grpc
import pytest
from tritonclient.grpc import service_pb2_grpc

from slmfleet.local.models import BILLING_EXAMPLES
from slmfleet.router.logprobs import Step, answer_confidence, read_cumulative_logprob
from slmfleet.router.logprobs import request_logprobs as ask
from slmfleet.router.triton.codec import build_request, parse_response
from slmfleet.router.triton.counts import read_token_counts, request_token_counts

pytestmark = pytest.mark.integration


async def stream(url: str, req) -> list[tuple[str, float | None, float | None, int | None]]:
    """(text, cumulative log-prob, confidence tensor, num_output_tokens) per response."""
    out = []
    async with grpc.aio.insecure_channel(url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        async for msg in stub.ModelStreamInfer(iter((req,)), timeout=60):
            assert not msg.error_message, msg.error_message
            piece, final = parse_response(msg.infer_response)
            if piece is not None:
                counts = read_token_counts(msg.infer_response)
                cum = read_cumulative_logprob(msg.infer_response)
                out.append((piece.text, cum, piece.confidence, counts.output_tokens))
            if final:
                break
    return out


def run(triton, model, prompt, sampling=None, *, logprob=True):
    req = build_request(model, prompt, sampling or {}, f"lp-{model}")
    req = request_token_counts(req, input_tokens=False)
    if logprob:
        req = ask(req, "vllm")
    return asyncio.run(stream(triton.grpc_url, req))


def test_classifier_standin_label_probability_is_its_confidence(triton):
    got = run(triton, "domain-billing", "you charged me twice, I need a refund")
    cums = [c for _, c, _, _ in got]
    assert all(c is not None and c <= 0 for c in cums)
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(cums))  # prefix sums
    claimed = got[0][2]  # the stand-in's own confidence tensor
    steps = [Step(t, c, n) for t, c, _, n in got]
    conf = answer_confidence(steps, labels=list(BILLING_EXAMPLES))
    assert "".join(t for t, *_ in got).startswith("refund:")
    assert conf == pytest.approx(claimed, abs=1e-4)
    # the sequence rule on the same stream is the label probability spread over tokens
    assert answer_confidence(steps, rule="sequence") == pytest.approx(
        claimed ** (1 / len(got)), abs=1e-4
    )


def test_generative_standin_sequence_score_and_max_tokens(triton):
    full = run(triton, "generalist", "Where is my parcel? It has been a week.")
    assert answer_confidence([Step(t, c, n) for t, c, _, n in full]) == pytest.approx(
        0.99, abs=1e-4
    )
    assert full[-1][1] == pytest.approx(len(full) * math.log(0.99), abs=1e-3)
    cut = run(triton, "generalist", "Where is my parcel? It has been a week.", {"max_tokens": 3})
    assert len(cut) == 3
    assert cut[-1][1] == pytest.approx(3 * math.log(0.99), abs=1e-4)  # emitted tokens only


def test_logprob_only_when_asked(triton):
    got = run(triton, "domain-shipping", "my parcel arrived damaged", logprob=False)
    assert got and all(c is None for _, c, _, _ in got)
    assert answer_confidence([Step(t, c) for t, c, _, _ in got]) is None
