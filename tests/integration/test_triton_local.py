"""The stand-in fleet on the real tritonserver, spoken to the way the router speaks (gRPC)."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from slmfleet.local import TritonServer, TritonStartError
from slmfleet.local.models import StandIn, write_model_repository
from slmfleet.local.models.standin import count_tokens

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@dataclass
class Reply:
    deltas: list[str] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.deltas)


def _inputs(prompt: str, stream: bool, sampling: dict[str, Any] | None) -> list[Any]:
    text = grpcclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
    flag = grpcclient.InferInput("stream", [1], "BOOL")
    flag.set_data_from_numpy(np.array([stream], dtype=bool))
    inputs = [text, flag]
    if sampling is not None:
        params = grpcclient.InferInput("sampling_parameters", [1], "BYTES")
        params.set_data_from_numpy(np.array([json.dumps(sampling).encode()], dtype=np.object_))
        inputs.append(params)
    return inputs


async def generate(
    server: TritonServer,
    model: str,
    prompt: str,
    *,
    stream: bool = True,
    sampling: dict[str, Any] | None = None,
) -> Reply:
    """One request over the bidirectional stream, drained until the server closes it."""

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": model, "inputs": _inputs(prompt, stream, sampling)}

    reply = Reply()
    async with grpcclient.InferenceServerClient(server.grpc_url) as client:
        async for result, error in client.stream_infer(requests(), stream_timeout=60):
            if error is not None:
                reply.errors.append(str(error))
                continue
            text = result.as_numpy("text_output")
            if text is not None:
                reply.deltas.extend(t.decode() for t in text.reshape(-1))
                reply.confidences.append(float(result.as_numpy("confidence")[0]))
    return reply


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


def test_server_is_live_and_ready_with_every_stand_in(triton: TritonServer) -> None:
    assert triton.is_ready()
    assert _get(f"{triton.http_url}/v2/health/live")[0] == 200
    for name in (
        "domain-billing",
        "domain-shipping",
        "reasoner",
        "extractor",
        "generalist",
        "failing",
    ):
        assert _get(f"{triton.http_url}/v2/models/{name}/ready")[0] == 200
    assert triton.log_path.is_file()


async def test_reasoner_stream_reconstructs_thinking_and_answer(triton: TritonServer) -> None:
    reply = await generate(triton, "reasoner", "What is 17 + 25?", sampling={"think_tokens": 12})
    assert len(reply.deltas) == 1 + 12 + 1 + 4  # one word per response
    assert all(d.endswith(" ") for d in reply.deltas[:-1])
    assert re.fullmatch(r"<think> (\w+ ){12}</think> The answer is 42\.", reply.text)


async def test_reasoner_default_budget_and_max_tokens(triton: TritonServer) -> None:
    full = await generate(triton, "reasoner", "What is 2 * 21?", stream=False)
    assert len(full.deltas) == 1
    assert count_tokens(full.text) == 200 + 2 + 4
    capped = await generate(triton, "reasoner", "What is 2 * 21?", sampling={"max_tokens": 30})
    assert len(capped.deltas) == 30
    assert "</think>" not in capped.text


async def test_reasoner_after_cut_thinking_answers_only(triton: TritonServer) -> None:
    prompt = "What is 17 + 25? <think> consider the question carefully </think>"
    reply = await generate(triton, "reasoner", prompt, sampling={"think_tokens": 500})
    assert reply.text == "The answer is 42."
    capped = await generate(triton, "reasoner", prompt, sampling={"max_tokens": 2})
    assert capped.text == "The answer "


@pytest.mark.parametrize(
    ("model", "text", "label"),
    [
        ("domain-billing", "I was charged twice and want my money refunded", "refund"),
        ("domain-shipping", "my package arrived broken", "damaged"),
    ],
)
async def test_domain_in_domain_is_confident(
    triton: TritonServer, model: str, text: str, label: str
) -> None:
    reply = await generate(triton, model, text, stream=False)
    assert reply.text.startswith(f"{label}: ")
    assert reply.confidences[0] > 0.8


async def test_domain_out_of_domain_is_not(triton: TritonServer) -> None:
    for model in ("domain-billing", "domain-shipping"):
        reply = await generate(triton, model, "write a poem about the sea")
        assert not reply.errors
        assert max(reply.confidences) < 0.2
    # Each specialist is unsure about the other's territory too.
    other = await generate(triton, "domain-billing", "my package arrived broken", stream=False)
    assert other.confidences[0] < 0.2


async def test_extractor_json_parses_or_fails_honestly(triton: TritonServer) -> None:
    found = await generate(
        triton, "extractor", "Refund order ABC-12345 please, mail jane@example.com", stream=False
    )
    assert json.loads(found.text) == {"order_id": "ABC-12345", "email": "jane@example.com"}
    assert found.confidences[0] > 0.8
    missing = await generate(triton, "extractor", "hello, how are you?", stream=False)
    with pytest.raises(ValueError):
        json.loads(missing.text)
    assert missing.confidences[0] < 0.5


async def test_generalist_answers_anything(triton: TritonServer) -> None:
    reply = await generate(triton, "generalist", "What is 6 x 7?")
    assert "The answer is 42." in reply.text
    assert reply.confidences == pytest.approx([0.99] * len(reply.deltas))


async def test_failing_returns_a_triton_error(triton: TritonServer) -> None:
    reply = await generate(triton, "failing", "anything")
    assert reply.deltas == []
    assert len(reply.errors) == 1
    assert "by design" in reply.errors[0]


async def test_bad_sampling_parameters_are_an_error_not_a_crash(triton: TritonServer) -> None:
    reply = await generate(triton, "generalist", "hi", sampling={"max_tokens": "lots"})
    assert reply.errors and "max_tokens" in reply.errors[0]
    assert (await generate(triton, "generalist", "still alive?")).text


async def test_unary_grpc_is_refused_but_http_generate_works(triton: TritonServer) -> None:
    """Decoupled models need stream_infer over gRPC; HTTP /generate takes one response."""
    async with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        with pytest.raises(InferenceServerException, match="decoupled"):
            await client.infer("extractor", _inputs("order XYZ-987", False, None))
    body = json.dumps({"text_input": "order XYZ-987", "stream": False}).encode()
    request = urllib.request.Request(
        f"{triton.http_url}/v2/models/extractor/generate",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer = json.loads(resp.read())
    assert json.loads(answer["text_output"]) == {"order_id": "XYZ-987"}


async def test_metrics_count_successes(triton: TritonServer) -> None:
    await generate(triton, "generalist", "count me")
    status, body = _get(triton.metrics_url)
    assert status == 200
    match = re.search(r'nv_inference_request_success\{model="generalist",version="1"\} (\d+)', body)
    assert match and int(match.group(1)) >= 1
    assert re.search(r'nv_inference_request_failure\{[^}]*model="failing"', body)


def test_private_server_stops_cleanly(start_triton) -> None:
    server = start_triton({"generalist": StandIn("generalist")})
    assert server.startup_seconds is not None and server.is_ready()
    assert server.stop() == 0
    assert not server.is_alive()
    assert not list(Path("/dev/shm").glob(f"*{server.shm_prefix}*"))


def test_broken_model_fails_start_with_log_tail(tmp_path) -> None:
    repo = write_model_repository(tmp_path / "models", {"broken": StandIn("domain")})
    server = TritonServer(repo, log_path=tmp_path / "log", startup_timeout=120)
    with pytest.raises(TritonStartError, match="examples"):
        server.start()
    assert not server.is_alive()
