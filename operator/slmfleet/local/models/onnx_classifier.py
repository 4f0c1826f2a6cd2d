"""A tiny, honest ONNX text classifier and the Triton model that serves it on CPU.

``build_classifier`` fits multinomial naive Bayes over a tokenizer's ids (weights in
numpy: per-class log token probabilities with add-one smoothing, log priors as the
bias) and writes it as an ONNX graph shaped like a BERT-style export: INT64
``input_ids``, ``attention_mask`` and ``token_type_ids`` of shape ``[batch, seq]`` in,
FP32 ``logits`` ``[batch, labels]`` out. Inside: a bag of embeddings (``Gather`` of the
token and segment tables), masked by the attention mask, summed, plus the bias.

``write_onnx_classifier`` writes the model artifact (``model.onnx``, ``tokenizer.json``,
``config.json`` with ``id2label``: what a Hugging Face export ships and what the router
reads) and a Triton model for it. The nvidia-pytriton wheel's ``tritonserver`` has only
the Python backend (no ``onnxruntime`` backend), so the served model is a Python-backend
model (``onnx_model.py``) that runs onnxruntime on the same file and declares exactly the
tensors Triton's onnxruntime backend would auto-complete from it: the graph's inputs
and outputs, the batch dimension taken out of ``dims`` into ``max_batch_size``, not
decoupled. In a cluster the operator renders the onnxruntime backend's own config.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...render.pbtxt import Enum, dumps

MODEL_FILE = "model.onnx"
MAX_BATCH_SIZE = 8
_SOURCES = Path(__file__).parent
#: ONNX element type -> Triton config data type.
_TYPES = {1: "TYPE_FP32", 6: "TYPE_INT32", 7: "TYPE_INT64"}


def naive_bayes(
    examples: Mapping[str, Sequence[str]], encode: Any, vocab_size: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(labels, token log-probabilities [vocab, labels], log priors [labels])."""
    labels = sorted(examples)
    counts = np.zeros((vocab_size, len(labels)), dtype=np.float64)
    for j, label in enumerate(labels):
        for text in examples[label]:
            for tok in encode(text):
                counts[tok, j] += 1.0
    smoothed = counts + 1.0
    log_probs = np.log(smoothed / smoothed.sum(axis=0, keepdims=True))
    sizes = np.array([len(examples[label]) for label in labels], dtype=np.float64)
    priors = np.log(sizes / sizes.sum())
    return labels, log_probs.astype(np.float32), priors.astype(np.float32)


def build_classifier(token_table: np.ndarray, bias: np.ndarray) -> bytes:
    """The ONNX graph (see the module docstring) over a [vocab, labels] table."""
    from onnx import TensorProto, helper, numpy_helper

    n = token_table.shape[1]
    segment_table = np.zeros((2, n), dtype=np.float32)  # one-segment training data
    inits = [
        numpy_helper.from_array(token_table, "token_table"),
        numpy_helper.from_array(segment_table, "segment_table"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("Gather", ["token_table", "input_ids"], ["tok"], axis=0),
        helper.make_node("Gather", ["segment_table", "token_type_ids"], ["seg"], axis=0),
        helper.make_node("Add", ["tok", "seg"], ["emb"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("Add", ["summed", "bias"], ["logits"]),
    ]
    ids = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n])
    graph = helper.make_graph(nodes, "naive_bayes_text_classifier", ids, [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    from onnx import checker

    checker.check_model(model)
    return model.SerializeToString()


def _dims(value_info: Any) -> list[int]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else -1 for d in dims]


def onnxruntime_like_config(name: str, onnx_bytes: bytes) -> str:
    """The config.pbtxt Triton's onnxruntime backend would auto-complete for the file
    (batching when every tensor's first dimension is dynamic), for the Python backend."""
    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    inits = {i.name for i in graph.initializer}
    inputs = [v for v in graph.input if v.name not in inits]
    tensors = [*inputs, *graph.output]
    batched = all(_dims(v)[:1] == [-1] for v in tensors)

    def spec(v: Any) -> dict[str, Any]:
        dims = _dims(v)[1:] if batched else _dims(v)
        return {
            "name": v.name,
            "data_type": Enum(_TYPES[v.type.tensor_type.elem_type]),
            "dims": dims,
        }

    config = {
        "name": name,
        "backend": "python",
        "max_batch_size": MAX_BATCH_SIZE if batched else 0,
        "input": [spec(v) for v in inputs],
        "output": [spec(v) for v in graph.output],
        "instance_group": [{"count": 1, "kind": Enum("KIND_CPU")}],
    }
    return dumps(config) + "\n"


def write_onnx_classifier(
    artifact: Path,
    repository: Path,
    name: str,
    examples: Mapping[str, Sequence[str]],
    tokenizer_json: Path,
) -> list[str]:
    """Fit on ``examples`` (label -> texts), write the artifact folder and the Triton
    model ``repository/name``; returns the labels in class order."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    labels, table, bias = naive_bayes(
        examples, lambda t: tok.encode(t).ids, tok.get_vocab_size(with_added_tokens=True)
    )
    onnx_bytes = build_classifier(table, bias)
    artifact.mkdir(parents=True, exist_ok=True)
    (artifact / MODEL_FILE).write_bytes(onnx_bytes)
    shutil.copyfile(tokenizer_json, artifact / "tokenizer.json")
    (artifact / "config.json").write_text(
        json.dumps({"id2label": {str(i): label for i, label in enumerate(labels)}}, indent=1)
    )
    model_dir = repository / name
    if model_dir.exists():
        shutil.rmtree(model_dir)
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(onnxruntime_like_config(name, onnx_bytes))
    shutil.copyfile(_SOURCES / "onnx_model.py", model_dir / "1" / "model.py")
    (model_dir / "1" / MODEL_FILE).write_bytes(onnx_bytes)
    return labels
