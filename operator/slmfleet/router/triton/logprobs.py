"""The backends' cumulative log-probability tensors, pure: asking for them and reading them.

The Triton vLLM backend returns ``cumulative_logprob`` (FP32, one value per sequence:
the summed log-probability of every token generated so far) on every response when a
request sets the BOOL input ``return_cumulative_logprob`` (its docs/additional_outputs.md);
TensorRT-LLM's ``tensorrt_llm_bls`` returns ``cum_log_probs`` for ``return_log_probs``.
The CPU stand-ins honour both (local/models). What the router makes of them is
``router.logprobs.answer_confidence``.
"""

from __future__ import annotations

import math
import struct
from typing import Any

#: (request flag input, cumulative log-prob output) per Triton backend.
TENSORS: dict[str, tuple[str, str]] = {
    "vllm": ("return_cumulative_logprob", "cumulative_logprob"),
    "tensorrtllm": ("return_log_probs", "cum_log_probs"),
}
_OUTPUTS = {out for _, out in TENSORS.values()}


def request_logprobs(req: Any, backend: str = "vllm") -> Any:
    """Add the backend's log-prob flag to a ModelInferRequest built with
    raw_input_contents (as the router builds them): shape [1] for vLLM, [1, 1] for
    TensorRT-LLM (whose model batches); other backends are left alone."""
    if backend not in TENSORS:
        return req
    t = req.inputs.add()
    t.name, t.datatype = TENSORS[backend][0], "BOOL"
    t.shape.extend([1, 1] if backend == "tensorrtllm" else [1])
    req.raw_input_contents.append(b"\x01")
    return req


def read_cumulative_logprob(resp: Any) -> float | None:
    """The first sequence's cumulative log-prob in one ModelInferResponse, or None.
    Refuses (ValueError) a tensor that is not FP32 or a value that is not a log-prob."""
    raw = resp.raw_output_contents
    for i, out in enumerate(resp.outputs):
        if out.name not in _OUTPUTS:
            continue
        if out.datatype not in ("FP32", ""):
            raise ValueError(f"{out.name} is {out.datatype}, expected FP32")
        if i < len(raw):
            if len(raw[i]) < 4 or len(raw[i]) % 4:
                raise ValueError(f"{out.name}: {len(raw[i])} bytes is not FP32 data")
            (value,) = struct.unpack_from("<f", raw[i], 0)
        elif out.contents.fp32_contents:
            value = out.contents.fp32_contents[0]
        else:
            return None
        if math.isnan(value) or value > 1e-3:
            raise ValueError(f"{out.name} = {value} is not a log-probability")
        return float(min(value, 0.0))
    return None
