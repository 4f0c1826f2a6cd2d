"""The ONNX text-classifier codec: tokenized tensors in, label probabilities out.

Triton's onnxruntime backend serves an ``.onnx`` file whose inputs and outputs it reads
from the graph (auto-complete), so the router learns them from the model's metadata
(``ModelMetadata``, once per model and snapshot) instead of guessing:

* inputs: ``input_ids`` (required), ``attention_mask`` and ``token_type_ids`` when the
  graph declares them, INT64 (or INT32) as declared, shape ``[1, n]`` when the declared
  shape has a batch dimension (rank 2), ``[n]`` otherwise; the ids come from the
  model's own tokenizer (``tokenizer.json`` of its artifact, see ``router.artifacts``);
* output: the FP32 tensor named ``probabilities``/``probs``/``scores`` (taken as they
  are, normalised) or ``logits`` (softmax), else the only FP32 output; its last
  dimension must equal the number of labels.

The answer is the most probable label; its probability is the answer confidence, so
``minAnswerConfidence`` and per-label thresholds work on classifiers as they do on the
stand-ins. The classifier is not decoupled: one response, which is final.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tritonclient.grpc import service_pb2

from ..errors import UpstreamError
from .codec import Piece
from .codecs import finish_request
from .tensors import add_input, decode

TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PROBABILITY_OUTPUTS = ("probabilities", "probs", "scores")
LOGIT_OUTPUTS = ("logits",)
INT_TYPES = ("INT64", "INT32")


class Tokenizer(Protocol):
    def encode(self, text: str) -> tuple[list[int], list[int], list[int]]:
        """(input_ids, attention_mask, token_type_ids) of ``text``, truncated."""
        ...


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ClassifierIO:
    """What the router sends and reads, from the model's metadata."""

    inputs: tuple[TensorSpec, ...]
    output: TensorSpec
    logits: bool
    """Softmax the output (it holds logits, not probabilities)."""


def _specs(items: Any) -> dict[str, TensorSpec]:
    return {t.name: TensorSpec(t.name, t.datatype, tuple(int(d) for d in t.shape)) for t in items}


def classifier_io(metadata: Any, n_labels: int, model: str = "") -> ClassifierIO:
    """The tensors of a classifier from its ``ModelMetadataResponse``, or an
    UpstreamError saying why the model is not a text classifier the router can call."""
    inputs, outputs = _specs(metadata.inputs), _specs(metadata.outputs)
    where = f"onnx classifier {model or metadata.name}"
    unknown = sorted(set(inputs) - set(TOKEN_INPUTS))
    if "input_ids" not in inputs or unknown:
        raise UpstreamError(
            f"{where}: inputs must be input_ids (+ attention_mask, token_type_ids); "
            f"the model declares {sorted(inputs)}",
            reason="codec",
        )
    for spec in inputs.values():
        if spec.datatype not in INT_TYPES or len(spec.shape) not in (1, 2):
            raise UpstreamError(
                f"{where}: input {spec.name} is {spec.datatype} {list(spec.shape)}; "
                "token inputs are INT64 or INT32 of rank 1 or 2",
                reason="codec",
            )
    fp32 = {n: s for n, s in outputs.items() if s.datatype == "FP32"}
    named = [n for n in (*PROBABILITY_OUTPUTS, *LOGIT_OUTPUTS) if n in fp32]
    if named:
        out = fp32[named[0]]
    elif len(fp32) == 1:
        out = next(iter(fp32.values()))
    else:
        raise UpstreamError(
            f"{where}: no label-probability output (an FP32 tensor named "
            f"{'/'.join(PROBABILITY_OUTPUTS + LOGIT_OUTPUTS)}, or the only FP32 output); "
            f"outputs are {sorted(outputs)}",
            reason="codec",
        )
    width = out.shape[-1] if out.shape else -1
    if width > 0 and width != n_labels:
        raise UpstreamError(
            f"{where}: output {out.name} has {width} classes but {n_labels} labels are "
            "known (domain.labels, or the artifact's config.json id2label)",
            reason="codec",
        )
    ordered = tuple(inputs[n] for n in TOKEN_INPUTS if n in inputs)
    return ClassifierIO(ordered, out, logits=out.name in LOGIT_OUTPUTS)


def probabilities(values: Sequence[float], *, logits: bool) -> list[float]:
    """Class probabilities from the output row: softmax of logits; anything that is not
    already a distribution (a negative value, or not summing to 1) is softmaxed too."""
    vals = [float(v) for v in values]
    total = sum(vals)
    if not logits and vals and min(vals) >= 0.0 and abs(total - 1.0) <= 1e-3:
        return [v / total for v in vals]
    top = max(vals, default=0.0)
    exps = [math.exp(v - top) for v in vals]
    z = sum(exps) or 1.0
    return [e / z for e in exps]


class OnnxClassifierCodec:
    """One classifier specialist: its tokenizer, its labels, its learned tensors."""

    backend = "onnxruntime"

    def __init__(self, tokenizer: Tokenizer, labels: Sequence[str]) -> None:
        if not labels:
            raise ValueError("a classifier needs its labels")
        self.tokenizer = tokenizer
        self.labels = tuple(labels)
        self.io: dict[str, ClassifierIO] = {}

    def needs_metadata(self, model: str) -> bool:
        return model not in self.io

    def learn(self, model: str, metadata: Any) -> None:
        self.io[model] = classifier_io(metadata, len(self.labels), model)

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
        io = self.io.get(model)
        if io is None:
            raise UpstreamError(f"onnx classifier {model}: metadata not known yet", reason="codec")
        ids, mask, types = self.tokenizer.encode(prompt)
        values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        req = service_pb2.ModelInferRequest(model_name=model, id=request_id)
        for spec in io.inputs:
            row = values[spec.name]
            shape = [1, len(row)] if len(spec.shape) == 2 else [len(row)]
            add_input(req, spec.name, spec.datatype, shape, row)
        req.outputs.add().name = io.output.name
        return finish_request(req, timeout_s)

    def parse(self, resp: Any) -> tuple[Piece | None, bool]:
        p = resp.parameters.get("triton_final_response")
        if not resp.outputs:
            return None, p is not None and p.bool_param
        io = self.io.get(resp.model_name) or next(iter(self.io.values()), None)
        if io is None:
            raise UpstreamError("onnx classifier: a response before its metadata", reason="codec")
        for i, out in enumerate(resp.outputs):
            if out.name != io.output.name:
                continue
            if i < len(resp.raw_output_contents):
                row = decode("FP32", resp.raw_output_contents[i])
            else:
                row = list(out.contents.fp32_contents)
            row = row[: len(self.labels)]
            if len(row) != len(self.labels):
                raise UpstreamError(
                    f"onnx classifier: {len(row)} scores for {len(self.labels)} labels",
                    reason="codec",
                )
            probs = probabilities(row, logits=io.logits)
            best = max(range(len(probs)), key=lambda k: (probs[k], -k))
            return Piece(self.labels[best], round(probs[best], 6)), True
        raise UpstreamError(
            f"onnx classifier: the response lacks output {io.output.name}", reason="codec"
        )
