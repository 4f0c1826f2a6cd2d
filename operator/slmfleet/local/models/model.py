"""Triton Python-backend model shared by every CPU stand-in (copied as ``1/model.py``).

Thin glue: tensors in, ``standin.build(parameters).respond(...)`` for the text, tensors
out. Decoupled like the vLLM backend: with ``stream`` true one response per token,
otherwise one response with the whole text; then a flag-only final response. Which
behaviour runs is the config.pbtxt parameter ``standin``; the rest of the parameters
configure it.

The tensors are those the model's config.pbtxt declares, in one of two contracts:
the vLLM backend's (``text_input``, ``stream``, ``sampling_parameters``; out
``text_output`` and ``confidence``) or TensorRT-LLM's ``tensorrt_llm_bls`` (a
``max_tokens`` input: ``text_input``, ``max_tokens``, ``stream``,
``exclude_input_in_output``, ``stop_words``, ``bad_words``, ``return_log_probs``; out
``text_output`` and ``cum_log_probs``, with the batch dimension the batching config
implies). With a ``max_seq_len`` parameter a TensorRT-LLM-contract stand-in refuses a
request whose prompt (``standin.count_tokens``) plus ``max_tokens`` exceeds it, as
TensorRT-LLM refuses one past the engine's maximum sequence length.

Token counts and log-probabilities as the vLLM backend reports them (its
docs/additional_outputs.md): when a request sets ``return_num_output_tokens``, every
response carries ``num_output_tokens`` (UINT32, the tokens of this response's text); with
``return_num_input_tokens``, ``num_input_tokens`` (UINT32, the prompt's); with
``return_cumulative_logprob``, ``cumulative_logprob`` (FP32, the summed log-probability
of every token generated so far, see ``standin.token_logprobs``). The inputs and outputs
are added to the configuration by ``auto_complete_config`` of a vLLM-contract model, as
the vLLM backend adds them to its own; the TensorRT-LLM contract has no token counts
(the router counts) and answers ``return_log_probs`` with ``cum_log_probs`` when its
configuration declares them (as the backend's documented config.pbtxt does).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import numpy as np

try:  # inside the Python backend stub
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported by tooling outside Triton
    pb_utils = None

try:  # the stub imports this file as "<version>.model", with standin.py alongside
    from . import standin
except ImportError:
    import standin  # type: ignore[no-redef]


def _first(request: Any, name: str) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    values = tensor.as_numpy().reshape(-1)
    return values[0] if values.size else None


def _strings(request: Any, name: str) -> list[str]:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return []
    return [
        v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in tensor.as_numpy().reshape(-1)
    ]


#: Optional tensors the vLLM backend's auto-complete adds, and we add the same way.
TOKEN_INPUTS = ("return_num_input_tokens", "return_num_output_tokens", "return_cumulative_logprob")
TOKEN_OUTPUTS = (
    ("num_input_tokens", [1], "TYPE_UINT32"),
    ("num_output_tokens", [-1], "TYPE_UINT32"),
    ("cumulative_logprob", [-1], "TYPE_FP32"),
)


def _loras(args: dict[str, str]) -> dict[str, str] | None:
    """The adapters of ``multi_lora.json`` in the version directory (name -> weights
    directory), as the vLLM backend reads it with ``enable_lora``; None without it."""
    path = os.path.join(args["model_repository"], args["model_version"], "multi_lora.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return {str(k): str(v) for k, v in json.load(f).items()}


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config: Any) -> Any:
        config = auto_complete_model_config.as_dict()
        inputs = {i["name"] for i in config.get("input", [])}
        outputs = {o["name"] for o in config.get("output", [])}
        if "max_tokens" in inputs:  # TensorRT-LLM's contract reports no token counts
            return auto_complete_model_config
        for name in TOKEN_INPUTS:
            if name not in inputs:
                auto_complete_model_config.add_input(
                    {"name": name, "data_type": "TYPE_BOOL", "dims": [1], "optional": True}
                )
        for name, dims, dtype in TOKEN_OUTPUTS:
            if name not in outputs:
                auto_complete_model_config.add_output(
                    {"name": name, "data_type": dtype, "dims": dims}
                )
        return auto_complete_model_config

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.behaviour = standin.build(params)
        self.token_delay = float(params.get("token_delay_ms", "0")) / 1000.0
        inputs = {t["name"] for t in config.get("input", [])}
        self.contract = "tensorrtllm" if "max_tokens" in inputs else "vllm"
        self.outputs = {t["name"] for t in config.get("output", [])}
        self.batched = int(config.get("max_batch_size", 0)) > 0
        # (request flag, output) of the cumulative log-prob in this contract
        self.logprob_flag, self.logprob_output = (
            ("return_log_probs", "cum_log_probs")
            if self.contract == "tensorrtllm"
            else ("return_cumulative_logprob", "cumulative_logprob")
        )
        self.loras = _loras(args)
        self.max_seq_len = int(params["max_seq_len"]) if "max_seq_len" in params else None

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._answer(request, sender)
            except Exception as exc:  # a decoupled request must always get its final flag
                message = str(exc) if isinstance(exc, standin.StandInError) else repr(exc)
                error = pb_utils.TritonError(message)
                sender.send(
                    pb_utils.InferenceResponse(output_tensors=[], error=error),
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
                )
        return None

    def _read(self, request: Any) -> tuple[str, bool, dict[str, Any], bool]:
        """(prompt, stream, sampling, echo the prompt?) in the model's contract."""
        raw = _first(request, "text_input")
        if raw is None:
            raise standin.StandInError("text_input is required")
        prompt = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        stream = bool(_first(request, "stream") or False)
        if self.contract == "vllm":
            sampling = standin.parse_sampling(_first(request, "sampling_parameters"))
            return prompt, stream, sampling, False
        sampling = {
            "max_tokens": int(_first(request, "max_tokens")),
            "stop": _strings(request, "stop_words"),
            "bad_words": _strings(request, "bad_words"),
        }
        exclude = bool(_first(request, "exclude_input_in_output") or False)
        prompt_len = standin.count_tokens(prompt)
        if self.max_seq_len is not None and prompt_len + sampling["max_tokens"] > self.max_seq_len:
            raise standin.StandInError(
                f"input length ({prompt_len}) + max_tokens ({sampling['max_tokens']}) exceeds "
                f"the maximum sequence length ({self.max_seq_len})"
            )
        return prompt, stream, sampling, not stream and not exclude

    def _answer(self, request: Any, sender: Any) -> None:
        prompt, stream, sampling, echo = self._read(request)
        counts = standin.TokenCounts(
            input_tokens=standin.count_tokens(prompt)
            if bool(_first(request, "return_num_input_tokens") or False)
            else None,
            output=bool(_first(request, "return_num_output_tokens") or False),
        )
        lora = sampling.pop("lora_name", None)
        logprob = bool(_first(request, self.logprob_flag) or False)
        answer = self.behaviour.respond(prompt, sampling)
        if lora is not None:
            answer = dataclasses.replace(answer, text=self._adapted(str(lora), answer.text))
        text = standin.apply_word_lists(
            answer.text, sampling.get("stop") or [], sampling.get("bad_words") or []
        )
        deltas = standin.word_deltas(text, standin.max_tokens_of(sampling))
        sums = standin.cumulative(standin.token_logprobs(answer, deltas))
        if echo:  # the echoed prompt was not generated: it adds no log-probability
            deltas, sums = [prompt, *deltas], [0.0, *sums]
        if stream:
            for delta, cum in zip(deltas, sums, strict=True):
                if getattr(sender, "is_cancelled", lambda: False)():
                    break  # the router cut us off (e.g. reasoning budget hit)
                if self.token_delay:
                    time.sleep(self.token_delay)
                sender.send(
                    self._response(delta, answer.confidence, counts, cum if logprob else None)
                )
        else:
            if self.token_delay:
                time.sleep(self.token_delay * len(deltas))
            cum = (sums[-1] if sums else 0.0) if logprob else None
            sender.send(self._response("".join(deltas), answer.confidence, counts, cum))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _adapted(self, lora: str, text: str) -> str:
        """As Triton's vLLM backend checks ``lora_name`` (same messages), then answer as
        that adapter: the ``reply.txt`` of its weights directory, else its name."""
        if self.loras is None:
            raise standin.StandInError("LoRA feature is not enabled.")
        if lora not in self.loras:
            raise standin.StandInError(
                f"LoRA {lora} is not supported, we currently support {list(self.loras)}"
            )
        reply = os.path.join(self.loras[lora], "reply.txt")
        if os.path.isfile(reply):
            with open(reply) as f:
                return f.read().strip()
        return f"[{lora}] {text}"

    def _response(
        self, text: str, confidence: float, counts: Any, cumulative_logprob: float | None = None
    ) -> Any:
        shape = (1, 1) if self.batched else (1,)
        tensors = [
            pb_utils.Tensor(
                "text_output", np.array([text.encode("utf-8")], dtype=np.object_).reshape(shape)
            )
        ]
        if "confidence" in self.outputs:
            conf = np.array([confidence], dtype=np.float32).reshape(shape)
            tensors.append(pb_utils.Tensor("confidence", conf))
        if counts.input_tokens is not None:
            value = np.array([counts.input_tokens], dtype=np.uint32)
            tensors.append(pb_utils.Tensor("num_input_tokens", value))
        if counts.output:
            value = np.array([standin.count_tokens(text)], dtype=np.uint32)
            tensors.append(pb_utils.Tensor("num_output_tokens", value))
        if cumulative_logprob is not None and self.logprob_output in self.outputs:
            value = np.array([cumulative_logprob], dtype=np.float32).reshape(shape)
            tensors.append(pb_utils.Tensor(self.logprob_output, value))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        pass
