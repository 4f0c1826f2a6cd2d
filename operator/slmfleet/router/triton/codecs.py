"""Per-backend request/response codecs, pure; ``SpecialistConfig.backend`` selects one.

A codec turns (prompt, sampling) into one ``ModelInferRequest`` in its backend's tensor
contract and reads that backend's responses back as ``Piece`` s (text, confidence):

``vllm`` and ``python``
    Triton's vLLM backend: ``text_input`` BYTES, ``stream`` BOOL, ``sampling_parameters``
    (JSON in BYTES) in, ``text_output`` back; Python-backend models (the CPU stand-ins)
    share it and may add a ``confidence`` FP32 output (``codec.build_request``).
``tensorrtllm``
    TensorRT-LLM's ``tensorrt_llm_bls`` (and ``ensemble``) contract: ``text_input``
    BYTES, ``max_tokens`` INT32 (required), ``stream`` and ``exclude_input_in_output``
    BOOL, sampling as typed tensors (``temperature``/``top_p`` FP32, ``top_k`` INT32,
    ``seed`` UINT64, ...), ``stop_words``/``bad_words`` as BYTES lists; ``text_output``
    back. The model batches (``max_batch_size`` > 0), so every tensor carries a leading
    batch dimension of 1. Names, types and shapes are those of the backend's documented
    ``config.pbtxt``, which ``render.triton`` renders for the operator.
``onnxruntime``
    A text classifier: see ``onnx_codec`` (tokenized tensors in, label probabilities out).

The router always asks for a stream (decoupled models send deltas); the classifier
answers once. A codec made with ``logprobs=True`` (``backends.Codecs`` makes one for a
vLLM or TensorRT-LLM specialist whose tier has answer-confidence thresholds) also asks
for the cumulative log-probability (``logprobs``: vLLM's ``return_cumulative_logprob``,
TensorRT-LLM's ``return_log_probs``); every codec reads it into ``Piece`` when a
response carries it. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tritonclient.grpc import service_pb2

from ..errors import bad_request
from .codec import Piece, build_request, finish_request, parse_response
from .logprobs import request_logprobs
from .tensors import add_input

__all__ = ["Codec", "TensorRTLLMCodec", "TextCodec", "finish_request"]


class Codec(Protocol):
    backend: str

    def needs_metadata(self, model: str) -> bool:
        """Whether ``learn`` must see the model's metadata before ``request``."""
        ...

    def learn(self, model: str, metadata: Any) -> None:
        """Take what the request depends on from Triton's ``ModelMetadataResponse``."""
        ...

    def request(
        self,
        model: str,
        prompt: str,
        sampling: Mapping[str, Any],
        request_id: str,
        *,
        timeout_s: float | None = None,
        counts: bool = False,
    ) -> Any:
        """One request; ``counts`` asks for the backend's token counts where its contract
        has them (vLLM's ``return_num_*_tokens``; others ignore it and the router counts
        with a tokenizer)."""
        ...

    def parse(self, resp: Any) -> tuple[Piece | None, bool]:
        """One ``ModelInferResponse``: (its piece, or None when flag-only; final?)."""
        ...


class NoMetadata:
    """For codecs whose requests depend on nothing in the model's metadata."""

    def needs_metadata(self, model: str) -> bool:
        return False

    def learn(self, model: str, metadata: Any) -> None:
        pass


class TextCodec(NoMetadata):
    """The vLLM contract (also what Python-backend models speak)."""

    def __init__(self, backend: str = "vllm", *, logprobs: bool = False) -> None:
        self.backend = backend
        self.logprobs = logprobs and backend == "vllm"
        """Ask for ``cumulative_logprob`` on every response (vLLM's contract only)."""

    def request(
        self,
        model: str,
        prompt: str,
        sampling: Mapping[str, Any],
        request_id: str,
        *,
        timeout_s: float | None = None,
        counts: bool = False,
    ) -> Any:
        req = build_request(model, prompt, sampling, request_id, timeout_s=timeout_s, counts=counts)
        return request_logprobs(req, "vllm") if self.logprobs else req

    def parse(self, resp: Any) -> tuple[Piece | None, bool]:
        return parse_response(resp)


class AdapterCodec(NoMetadata):
    """The vLLM contract for a LoRA adapter on a base model: the base's model name, with
    the adapter's ``lora_name`` in ``sampling_parameters`` (Triton's vLLM backend pops it
    from there and serves the request with that adapter; ``render/lora.py``)."""

    def __init__(self, inner: TextCodec, lora_name: str) -> None:
        self.inner = inner
        self.lora_name = lora_name
        self.backend = inner.backend

    def request(
        self,
        model: str,
        prompt: str,
        sampling: Mapping[str, Any],
        request_id: str,
        *,
        timeout_s: float | None = None,
        counts: bool = False,
    ) -> Any:
        with_lora = {**sampling, "lora_name": self.lora_name}
        return self.inner.request(
            model, prompt, with_lora, request_id, timeout_s=timeout_s, counts=counts
        )

    def parse(self, resp: Any) -> tuple[Piece | None, bool]:
        return self.inner.parse(resp)


#: OpenAI / vLLM sampling names -> (tensorrt_llm_bls input, Triton datatype).
TRTLLM_SCALARS: dict[str, tuple[str, str]] = {
    "temperature": ("temperature", "FP32"),
    "top_p": ("top_p", "FP32"),
    "top_k": ("top_k", "INT32"),
    "seed": ("seed", "UINT64"),
    "presence_penalty": ("presence_penalty", "FP32"),
    "frequency_penalty": ("frequency_penalty", "FP32"),
    "repetition_penalty": ("repetition_penalty", "FP32"),
    "length_penalty": ("length_penalty", "FP32"),
    "min_tokens": ("min_tokens", "INT32"),
    "end_id": ("end_id", "INT32"),
    "pad_id": ("pad_id", "INT32"),
}
#: Word lists: ``stop`` (OpenAI's name) and ``stop_words`` -> stop_words; ``bad_words``.
TRTLLM_WORD_LISTS: dict[str, str] = {
    "stop": "stop_words",
    "stop_words": "stop_words",
    "bad_words": "bad_words",
}
_LIMITS = {"INT32": (-(2**31), 2**31 - 1), "UINT64": (0, 2**64 - 1)}


def _number(key: str, value: Any, datatype: str) -> float | int:
    """A sampling value as the tensor's type, or a 400 naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"'{key}' must be a number", param=key)
    if datatype == "FP32":
        return float(value)
    if not float(value).is_integer():
        raise bad_request(f"'{key}' must be an integer", param=key)
    lo, hi = _LIMITS[datatype]
    if not lo <= int(value) <= hi:
        raise bad_request(f"'{key}' is out of range", param=key)
    return int(value)


def _words(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(w, str) for w in value):
        return list(value)
    raise bad_request(f"'{key}' must be a string or a list of strings", param=key)


@dataclass
class TensorRTLLMCodec(NoMetadata):
    """The ``tensorrt_llm_bls`` / ensemble contract (see the module docstring).

    ``context_length`` bounds ``max_tokens`` when the request names none (the backend
    requires one): what the context leaves after the prompt. Sampling keys the contract
    has no tensor for (vLLM-only ones such as ``best_of``) are not sent.
    """

    context_length: int = 4096
    backend: str = "tensorrtllm"
    logprobs: bool = False
    """Ask for ``cum_log_probs`` on every response (``return_log_probs``)."""

    def request(
        self,
        model: str,
        prompt: str,
        sampling: Mapping[str, Any],
        request_id: str,
        *,
        timeout_s: float | None = None,
        counts: bool = False,
    ) -> Any:
        req = service_pb2.ModelInferRequest(model_name=model, id=request_id)
        add_input(req, "text_input", "BYTES", [1, 1], [prompt])
        max_tokens = sampling.get("max_tokens")
        if max_tokens is None:
            # The specialist tier always sets max_tokens (its reservation's output cap,
            # within what the context leaves: tiers/plan.context_room); a bare call gets
            # what a prompt of ~4 characters a token leaves.
            max_tokens = max(1, self.context_length - (len(prompt) + 3) // 4)
        add_input(req, "max_tokens", "INT32", [1, 1], [_number("max_tokens", max_tokens, "INT32")])
        add_input(req, "stream", "BOOL", [1, 1], [True])
        # Non-streamed BLS answers start with the prompt unless told otherwise.
        add_input(req, "exclude_input_in_output", "BOOL", [1, 1], [True])
        for key, (name, datatype) in TRTLLM_SCALARS.items():
            value = sampling.get(key)
            if value is not None:
                add_input(req, name, datatype, [1, 1], [_number(key, value, datatype)])
        lists: dict[str, list[str]] = {}
        for key, name in TRTLLM_WORD_LISTS.items():
            value = sampling.get(key)
            if value is not None:
                lists.setdefault(name, []).extend(_words(key, value))
        for name, words in lists.items():
            if words:
                add_input(req, name, "BYTES", [1, len(words)], words)
        if self.logprobs:
            request_logprobs(req, "tensorrtllm")
        return finish_request(req, timeout_s)

    def parse(self, resp: Any) -> tuple[Piece | None, bool]:
        return parse_response(resp)
