"""Triton model repository configuration per backend (config.pbtxt, model.json).

Every text-generating backend we route to speaks the same tensors as Triton's vLLM
backend: ``text_input`` (BYTES), ``sampling_parameters`` (JSON in BYTES), ``stream``
(BOOL) in, ``text_output`` (BYTES) out, decoupled so tokens stream. Python-backend
models add an optional ``confidence`` (FP32) output the router reads for cascades.
"""

from __future__ import annotations

import json
from typing import Any

from ..api.specialist import ModelSpec
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
        params = (
            {
                "gpt_model_type": "inflight_fused_batching",
                "gpt_model_path": WEIGHTS_DIR.format(name=name),
                "max_tokens_in_paged_kv_cache": str(model.context_length),
                "batch_scheduler_policy": "guaranteed_no_evict",
            }
            | ({"kv_cache_free_gpu_mem_fraction": "0.9"} if gpu else {})
            | model.parameters
        )
        config |= {
            "max_batch_size": model.max_batch_size or 64,
            "model_transaction_policy": {"decoupled": True},
            "input": [
                {"name": "input_ids", "data_type": Enum("TYPE_INT32"), "dims": [-1]},
                {"name": "input_lengths", "data_type": Enum("TYPE_INT32"), "dims": [1]},
                {"name": "request_output_len", "data_type": Enum("TYPE_INT32"), "dims": [1]},
                {
                    "name": "streaming",
                    "data_type": Enum("TYPE_BOOL"),
                    "dims": [1],
                    "optional": True,
                },
            ],
            "output": [
                {"name": "output_ids", "data_type": Enum("TYPE_INT32"), "dims": [-1, -1]},
                {"name": "sequence_length", "data_type": Enum("TYPE_INT32"), "dims": [-1]},
            ],
            "instance_group": [{"count": 1, "kind": Enum("KIND_CPU")}],
            "parameters": _parameters(params),
        }
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


def vllm_model_json(name: str, model: ModelSpec) -> str:
    """model.json for Triton's vLLM backend (engine arguments)."""
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
    for key, value in model.parameters.items():
        engine[key] = _coerce(value)
    return json.dumps(engine, indent=2, sort_keys=True) + "\n"


def _coerce(value: str) -> Any:
    """Backend parameters are strings in the CRD; vLLM wants typed engine args."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def model_repository_files(name: str, model: ModelSpec, *, gpu: int = 0) -> dict[str, str]:
    """Files of one model in the repository, keyed by ConfigMap-safe names."""
    files = {"config.pbtxt": config_pbtxt(name, model, gpu=gpu)}
    if model.backend == "vllm":
        files["model.json"] = vllm_model_json(name, model)
    return files
