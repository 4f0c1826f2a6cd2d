"""Which codec speaks to each specialist: selected by ``SpecialistConfig.backend``.

``codec_kind`` is the pure selection (table-tested). ``Codecs`` keeps one codec per
specialist configuration across requests and reloads: text codecs are stateless and
shared; an ONNX classifier's codec holds its tokenizer (loaded from the artifact off
the event loop, once) and the tensors it learned from the model's metadata. A
specialist whose tokenizer or labels cannot be read fails its tier with reason
``codec`` and a message saying why (the cascade moves on as for any upstream error).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..api.routerconfig import SpecialistConfig
from .artifacts import ArtifactReader, ArtifactUnavailable
from .errors import UpstreamError
from .triton.codecs import AdapterCodec, Codec, TensorRTLLMCodec, TextCodec
from .triton.onnx_codec import OnnxClassifierCodec

#: backend -> codec family.
CODEC_KINDS = {
    "vllm": "text",
    "python": "text",
    "tensorrtllm": "tensorrtllm",
    "onnxruntime": "onnx-classifier",
}
TEXT = TextCodec("vllm")
TEXT_LOGPROBS = TextCodec("vllm", logprobs=True)


def codec_kind(backend: str) -> str:
    try:
        return CODEC_KINDS[backend]
    except KeyError:
        raise ValueError(f"no codec for backend {backend!r}") from None


class Codecs:
    def __init__(self, artifacts: ArtifactReader | None = None) -> None:
        self.artifacts = artifacts or ArtifactReader()
        self._by_key: dict[tuple[Any, ...], Codec] = {}
        self._loading: dict[tuple[Any, ...], asyncio.Future[Codec]] = {}

    @staticmethod
    def _key(spec: SpecialistConfig) -> tuple[Any, ...]:
        return (spec.id, spec.backend, spec.artifact, tuple(spec.domain.labels))

    async def for_specialist(self, spec: SpecialistConfig, *, logprobs: bool = False) -> Codec:
        """The specialist's codec; ``logprobs`` asks a vLLM or TensorRT-LLM model for its
        cumulative log-prob (others have none: the flag is ignored)."""
        kind = codec_kind(spec.backend)
        if kind == "text":
            codec = TEXT_LOGPROBS if logprobs and spec.backend == "vllm" else TEXT
            return AdapterCodec(codec, spec.lora_name) if spec.lora_name else codec
        if kind == "tensorrtllm":
            return TensorRTLLMCodec(context_length=spec.context_length, logprobs=logprobs)
        key = self._key(spec)
        codec = self._by_key.get(key)
        if codec is not None:
            return codec
        pending = self._loading.get(key)
        if pending is None:
            pending = self._loading[key] = asyncio.ensure_future(self._load(spec, key))
        try:
            return await asyncio.shield(pending)
        finally:
            if pending.done():
                self._loading.pop(key, None)

    async def _load(self, spec: SpecialistConfig, key: tuple[Any, ...]) -> Codec:
        try:
            parts = await asyncio.to_thread(
                self.artifacts.classifier,
                spec.artifact,
                spec.id.split("/", 1)[0],
                tuple(spec.domain.labels),
            )
        except ArtifactUnavailable as exc:
            raise UpstreamError(
                f"specialist {spec.id}: {exc}",
                reason="codec",
                public="the classifier's tokenizer or labels are unavailable",
            ) from exc
        codec = OnnxClassifierCodec(parts.tokenizer, parts.labels)
        # One codec per configuration: a reload that changed it starts afresh.
        self._by_key = {k: v for k, v in self._by_key.items() if k[0] != spec.id}
        self._by_key[key] = codec
        return codec
