"""Triton model repository configuration per backend (config.pbtxt, model.json).

The tensors rendered here are the contracts the router's codecs speak
(``router.triton.codecs``; a unit test holds the two together):

* ``vllm`` and ``python``: Triton's vLLM backend contract, ``text_input`` (BYTES),
  ``sampling_parameters`` (JSON in BYTES), ``stream`` (BOOL) in, ``text_output``
  (BYTES) out, decoupled so tokens stream. Python-backend models add an optional
  ``confidence`` (FP32) output the router reads for cascades.
* ``tensorrtllm``: the model the router calls is TensorRT-LLM's ``tensorrt_llm_bls``
  (see ``tensorrtllm_bls_config``), whose inputs and outputs are those of the
  backend's documented config.pbtxt.
* ``onnxruntime``: Triton reads inputs and outputs from the .onnx file (auto-complete);
  the router learns them from the model's metadata.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..api.specialist import ModelSpec
from .lora import Adapter, lora_engine_args, multi_lora_json
from .pbtxt import Enum, dumps

TEXT_INPUTS = [
    {"name": "text_input", "data_type": Enum("TYPE_STRING"), "dims": [1]},
    {"name": "stream", "data_type": Enum("TYPE_BOOL"), "dims": [1], "optional": True},
    {
        "name": "sampling_parameters",
        "data_type": Enum("TYPE_STRING"),
        "dims": [1],
        "optional": True,
    },
]
TEXT_OUTPUTS = [
    {"name": "text_output", "data_type": Enum("TYPE_STRING"), "dims": [-1]},
]
CONFIDENCE_OUTPUT = {"name": "confidence", "data_type": Enum("TYPE_FP32"), "dims": [1]}

#: Where the fetched weights live inside the Triton container.
WEIGHTS_DIR = "/models/{name}/1/weights"


def _tensor(name: str, dtype: str, dims: list[int], **extra: Any) -> dict[str, Any]:
    return {"name": name, "data_type": Enum(f"TYPE_{dtype}"), "dims": dims, **extra}


def _opt(name: str, dtype: str, dims: list[int] | None = None, **extra: Any) -> dict[str, Any]:
    return _tensor(name, dtype, dims or [1], optional=True, **extra)


_SCALAR = {"reshape": {"shape": []}}
#: tensorrt_llm_bls inputs for text generation, as TensorRT-LLM's
#: triton_backend/all_models/inflight_batcher_llm/tensorrt_llm_bls/config.pbtxt declares
#: them (multimodal, LoRA, prompt-table and speculative-decoding inputs left out).
TRTLLM_BLS_INPUTS = [
    _tensor("text_input", "STRING", [1]),
    _opt("decoder_text_input", "STRING"),
    _tensor("max_tokens", "INT32", [1]),
    _opt("bad_words", "STRING", [-1]),
    _opt("stop_words", "STRING", [-1]),
    _opt("exclude_input_in_output", "BOOL"),
    _opt("end_id", "INT32"),
    _opt("pad_id", "INT32"),
    _opt("top_k", "INT32"),
    _opt("top_p", "FP32"),
    _opt("temperature", "FP32"),
    _opt("length_penalty", "FP32"),
    _opt("repetition_penalty", "FP32"),
    _opt("min_tokens", "INT32"),
    _opt("presence_penalty", "FP32"),
    _opt("frequency_penalty", "FP32"),
    _opt("seed", "UINT64"),
    _opt("return_log_probs", "BOOL", **_SCALAR),
    _opt("return_context_logits", "BOOL", **_SCALAR),
    _opt("return_generation_logits", "BOOL", **_SCALAR),
    _opt("num_return_sequences", "INT32", **_SCALAR),
    _opt("beam_width", "INT32"),
    _opt("stream", "BOOL"),
    _opt("return_perf_metrics", "BOOL", **_SCALAR),
    _opt("return_num_input_tokens", "BOOL", **_SCALAR),
    _opt("return_num_output_tokens", "BOOL", **_SCALAR),
]
#: Every output the BLS model may send (a Python model may not send undeclared ones).
TRTLLM_BLS_OUTPUTS = [
    _tensor("text_output", "STRING", [-1]),
    _tensor("cum_log_probs", "FP32", [-1]),
    _tensor("output_log_probs", "FP32", [-1, -1]),
    _tensor("context_logits", "FP32", [-1, -1]),
    _tensor("generation_logits", "FP32", [-1, -1, -1]),
    _tensor("batch_index", "INT32", [1]),
    _tensor("sequence_index", "INT32", [1]),
    _tensor("kv_cache_alloc_new_blocks", "INT32", [1]),
    _tensor("kv_cache_reused_blocks", "INT32", [1]),
    _tensor("kv_cache_alloc_total_blocks", "INT32", [1]),
    _tensor("arrival_time_ns", "INT64", [1]),
    _tensor("first_scheduled_time_ns", "INT64", [1]),
    _tensor("first_token_time_ns", "INT64", [1]),
    _tensor("last_token_time_ns", "INT64", [1]),
    _tensor("acceptance_rate", "FP32", [1]),
    _tensor("total_accepted_draft_tokens", "INT32", [1]),
    _tensor("total_draft_tokens", "INT32", [1]),
    _tensor("num_input_tokens", "INT32", [1]),
    _tensor("num_output_tokens", "INT32", [1]),
]
#: The BLS's defaults; ``model.parameters`` override them.
TRTLLM_BLS_PARAMETERS = {
    "tensorrt_llm_model_name": "tensorrt_llm",
    "tensorrt_llm_draft_model_name": "",
    "multimodal_encoders_name": "",
    "accumulate_tokens": "false",
}
#: BLS instances (the documented ``bls_instance_count``; TensorRT-LLM suggests ~5).
TRTLLM_BLS_INSTANCES = 4
TRTLLM_MAX_BATCH_SIZE = 64


def tensorrtllm_bls_config(model: ModelSpec) -> dict[str, Any]:
    """The ``tensorrt_llm_bls`` model (Python backend, decoupled, batching): text in,
    text out, in the backend's documented tensors. ``model.parameters`` may set
    ``bls_instance_count`` and the BLS parameters (``tensorrt_llm_model_name``,
    ``accumulate_tokens``, ...). The engine (``tensorrt_llm``) and the
    pre/postprocessing models it calls are further models of the same repository."""
    params = dict(model.parameters)
    count = int(params.pop("bls_instance_count", TRTLLM_BLS_INSTANCES))
    return {
        "backend": "python",
        "max_batch_size": model.max_batch_size or TRTLLM_MAX_BATCH_SIZE,
        "model_transaction_policy": {"decoupled": True},
        "input": TRTLLM_BLS_INPUTS,
        "output": TRTLLM_BLS_OUTPUTS,
        "parameters": _parameters(TRTLLM_BLS_PARAMETERS | params),
        "instance_group": [{"count": max(1, count), "kind": Enum("KIND_CPU")}],
    }


def _parameters(params: dict[str, str]) -> list[dict[str, Any]]:
    return [{"key": k, "value": {"string_value": v}} for k, v in sorted(params.items())]


def config_pbtxt(name: str, model: ModelSpec, *, gpu: int = 0) -> str:
    """config.pbtxt for one model in the repository."""
    kind = Enum("KIND_GPU" if gpu > 0 else "KIND_CPU")
    config: dict[str, Any] = {"name": name, "backend": model.backend}
    if model.backend == "vllm":
        config |= {
            "max_batch_size": 0,
            "model_transaction_policy": {"decoupled": True},
            "input": TEXT_INPUTS,
            "output": TEXT_OUTPUTS,
            # vLLM manages its own GPU placement: one model instance, KIND_MODEL.
            "instance_group": [{"count": 1, "kind": Enum("KIND_MODEL")}],
        }
    elif model.backend == "python":
        config |= {
            "max_batch_size": model.max_batch_size,
            "model_transaction_policy": {"decoupled": True},
            "input": TEXT_INPUTS,
            "output": [*TEXT_OUTPUTS, CONFIDENCE_OUTPUT],
            "instance_group": [{"count": 1, "kind": kind}],
            "parameters": _parameters(model.parameters) or None,
        }
    elif model.backend == "tensorrtllm":
        config |= tensorrtllm_bls_config(model)
    elif model.backend == "onnxruntime":
        # Inputs and outputs are read from the .onnx file by Triton's auto-complete.
        config |= {
            "platform": "onnxruntime_onnx",
            "max_batch_size": model.max_batch_size,
            "instance_group": [{"count": 1, "kind": kind}],
            "parameters": _parameters(model.parameters) or None,
        }
        if model.quantization == "int8":
            config["optimization"] = {"graph": {"level": 1}}
    return dumps(config) + "\n"


def vllm_model_json(name: str, model: ModelSpec, extra: dict[str, Any] | None = None) -> str:
    """model.json for Triton's vLLM backend (engine arguments); ``extra``: arguments the
    operator derives (multi-LoRA, ``render/lora.py``; a pool member's GPU share),
    which ``model.parameters`` still override."""
    engine: dict[str, Any] = {
        "model": WEIGHTS_DIR.format(name=name),
        "served_model_name": name,
        "disable_log_requests": True,
        "max_model_len": model.context_length,
        "gpu_memory_utilization": 0.9,
        "enforce_eager": False,
    }
    if model.quantization != "none":
        engine["quantization"] = model.quantization
    engine |= extra or {}
    for key, value in model.parameters.items():
        engine[key] = _coerce(value)
    return json.dumps(engine, indent=2, sort_keys=True) + "\n"


def _coerce(value: str) -> Any:
    """Backend parameters are strings in the CRD; vLLM wants typed engine args."""
    try:
        return json.loads(value)
    except ValueError:
        return value


#: Files that live in the model's version directory (``1/``), not beside config.pbtxt.
VERSION_FILES = ("model.json", "multi_lora.json")


def model_repository_files(
    name: str,
    model: ModelSpec,
    *,
    gpu: int = 0,
    adapters: Sequence[Adapter] = (),
    gpu_share: float | None = None,
) -> dict[str, str]:
    """Files of one model in the repository, keyed by ConfigMap-safe names (those in
    ``VERSION_FILES`` go into ``1/``). ``adapters``: LoRA adapters on this vLLM model;
    ``gpu_share``: the fraction of a GPU a pool member may take (vLLM's
    ``gpu_memory_utilization``: several engines share the GPU)."""
    files = {"config.pbtxt": config_pbtxt(name, model, gpu=gpu)}
    if model.backend == "vllm":
        extra = lora_engine_args(adapters)
        if gpu_share is not None:
            extra["gpu_memory_utilization"] = gpu_share
        files["model.json"] = vllm_model_json(name, model, extra)
        if adapters:
            files["multi_lora.json"] = multi_lora_json(name, adapters)
    return files
