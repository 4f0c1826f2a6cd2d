"""Triton Python-backend model that runs ``model.onnx`` with onnxruntime (``1/model.py``).

It stands in for Triton's onnxruntime backend, which the nvidia-pytriton wheel lacks:
the same file, the tensors its config.pbtxt declares (those the onnxruntime backend
auto-completes from the graph, see ``onnx_classifier.onnxruntime_like_config``), not
decoupled: one response per request with every declared output. Requests are run one
by one (batch dimension 1 each), as the router sends them.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

try:  # inside the Python backend stub
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported by tooling outside Triton
    pb_utils = None


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        self.inputs = [t["name"] for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                feed = {}
                for name in self.inputs:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    if tensor is None:
                        raise ValueError(f"input {name} is required")
                    feed[name] = tensor.as_numpy()
                values = self.session.run(self.outputs, feed)
                tensors = [
                    pb_utils.Tensor(n, np.ascontiguousarray(v))
                    for n, v in zip(self.outputs, values, strict=True)
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:
                error = pb_utils.TritonError(f"onnx model: {exc}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        return responses

    def finalize(self) -> None:
        self.session = None
