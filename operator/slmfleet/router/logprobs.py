"""Answer confidence from log-probabilities, for specialists that do not report one.

A vLLM (or TensorRT-LLM) specialist has no ``confidence`` output, so per-label
thresholds on it accepted every answer. Both Triton backends return the cumulative
log-probability of the generated sequence when asked (vLLM: input
``return_cumulative_logprob``, output ``cumulative_logprob``, FP32, one value per
sequence, on every response; TensorRT-LLM: ``return_log_probs`` -> ``cum_log_probs``).
The router always streams, and with vLLM each response carries the sum of log-probs of
*all tokens so far*, so the stream gives prefix sums.

**The rule** (``answer_confidence``):

* *classifier specialist* - the specialist declares output labels (``domain.labels``)
  and the answer's label (``acceptance.label_of``) is one of them: the confidence is
  the probability of the tokens up to and including the label, ``exp(cumulative
  log-prob at the first response whose text completes the label)``. For a label-first
  answer (``refund: ...``) the label is complete once a delimiter follows the first
  word; for a JSON answer, once the ``"label": "<value>"`` pair is closed. A response
  may carry a few tokens more than the label (a backend batching decode steps), which
  only lowers the value: the rule never overstates confidence.
* *otherwise* - a length-normalised sequence score, the geometric mean of the token
  probabilities: ``exp(cumulative log-prob / tokens)``, tokens from ``num_output_tokens``
  when the request asked for them, else one per response.

Request log-probs only when a threshold needs them (``wants_logprobs``): they cost the
backend a little on every token.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..api.policy import Acceptance
from .acceptance import _PUNCT, label_of

#: (request flag input, cumulative log-prob output) per Triton backend.
TENSORS: dict[str, tuple[str, str]] = {
    "vllm": ("return_cumulative_logprob", "cumulative_logprob"),
    "tensorrtllm": ("return_log_probs", "cum_log_probs"),
}
_OUTPUTS = {out for _, out in TENSORS.values()}
_JSON_LABEL = re.compile(r'"label"\s*:\s*"((?:[^"\\]|\\.)*)"')


def wants_logprobs(acc: Acceptance) -> bool:
    """Whether a tier's acceptance reads answer confidence (then ask for log-probs)."""
    return acc.min_answer_confidence is not None or bool(acc.label_thresholds)


def request_logprobs(req: Any, backend: str = "vllm") -> Any:
    """Add the backend's log-prob flag to a ModelInferRequest built with
    raw_input_contents (as the router builds them); other backends are left alone."""
    if backend not in TENSORS:
        return req
    t = req.inputs.add()
    t.name, t.datatype = TENSORS[backend][0], "BOOL"
    t.shape.append(1)
    req.raw_input_contents.append(b"\x01")
    return req


def read_cumulative_logprob(resp: Any) -> float | None:
    """The first sequence's cumulative log-prob in one ModelInferResponse, or None."""
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


@dataclass(frozen=True, slots=True)
class Step:
    """One streamed response: its text delta, the cumulative log-prob after it, and its
    token count when known."""

    text: str
    cumulative_logprob: float | None
    tokens: int | None = None


def label_end(answer: str) -> int | None:
    """Offset in ``answer`` after which its label (``label_of``) is determined: one
    character past the label (proof that the word ended), or the end of the answer."""
    stripped = answer.lstrip()
    offset = len(answer) - len(stripped)
    if stripped.startswith("{"):
        m = _JSON_LABEL.search(stripped)
        if m is not None:
            return offset + m.end()
    label = label_of(answer)
    if not label:
        return None
    start = offset + (len(stripped) - len(stripped.lstrip(_PUNCT)))
    return min(start + len(label) + 1, len(answer))


def answer_confidence(
    steps: Sequence[Step],
    *,
    labels: Sequence[str] = (),
    rule: Literal["auto", "label", "sequence"] = "auto",
) -> float | None:
    """The answer's confidence from its streamed log-probs (see the module docstring);
    None when the stream carried none."""
    cums = [s.cumulative_logprob for s in steps]
    if not steps or all(c is None for c in cums):
        return None
    answer = "".join(s.text for s in steps)
    label = label_of(answer)
    use_label = rule == "label" or (
        rule == "auto" and label and label in {x.lower() for x in labels}
    )
    if use_label:
        end = label_end(answer)
        if end is not None:
            seen = 0
            for s in steps:
                seen += len(s.text)
                if seen >= end and s.cumulative_logprob is not None:
                    return math.exp(s.cumulative_logprob)
    last = next(c for c in reversed(cums) if c is not None)
    counted = [s.tokens for s in steps if s.tokens is not None]
    n = sum(counted) if counted and len(counted) == len(steps) else len(steps)
    return math.exp(last / max(1, n))
