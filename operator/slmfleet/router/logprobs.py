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
backend a little on every token. The tensors are asked for and read by the codecs
(``triton/codecs.py``, with ``triton/logprobs.py``); the specialist tier collects the
``Step`` s of the stream and, when the stream carried log-probs, the derived confidence
replaces any ``confidence`` output (the contract of a vLLM or TensorRT-LLM model has none;
a stand-in in that contract emits both).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..api.policy import Acceptance
from .acceptance import _PUNCT, label_of
from .triton.logprobs import TENSORS, read_cumulative_logprob, request_logprobs

__all__ = [
    "TENSORS",
    "Step",
    "answer_confidence",
    "label_end",
    "read_cumulative_logprob",
    "request_logprobs",
    "wants_logprobs",
]

_JSON_LABEL = re.compile(r'"label"\s*:\s*"((?:[^"\\]|\\.)*)"')


def wants_logprobs(acc: Acceptance | Any, backend: str | None = None) -> bool:
    """Whether a tier's acceptance reads answer confidence (then ask for log-probs), and,
    given ``backend``, whether that backend can give them."""
    if backend is not None and backend not in TENSORS:
        return False
    return acc.min_answer_confidence is not None or bool(acc.label_thresholds)


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
