"""What a tier call may cost at worst, the upstream parameters that keep it so, and what
it did cost: pure, so the accounting rules are table-tested (docs/budgets.md).

A reservation holds only if the upstream cannot generate more than it covers, so the
router always sends the output cap it reserved as ``max_tokens`` and drops what would
multiply the output (``n``, ``best_of``, beam search), whatever the caller asked for in
``max_tokens`` or ``sampling_parameters``. Input is bounded by the prompt's UTF-8 bytes
(plus special tokens): a bound for byte-level BPE and SentencePiece tokenizers, which
never make more tokens than bytes. Actual amounts come from the backend's counts when it
reports them, else from the router's tokenizer, never above the bound the reservation
used (the backend's ``max_tokens`` already holds the true output to it).

The output cap also fits the model's context: vLLM and TensorRT-LLM refuse a request
whose prompt plus ``max_tokens`` exceeds the model's length, so the cap is at most the
context length minus the prompt's tokens (``context_room``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...budget.amounts import Amount, cost, worst_case_call, worst_case_reasoning_call
from ...budget.ladder import halved_reasoning_cap
from ...budget.tokens import SPECIAL_TOKENS_ALLOWANCE, ByteBound, TokenCounter
from ..tracebudget import Caps

#: Sampling fields that would let one request generate more than its reservation.
UNBOUNDED = frozenset(
    {"max_tokens", "max_completion_tokens", "n", "best_of", "use_beam_search", "beam_width"}
)
#: Output tokens held for an external call that names no cap (the endpoint's own limit
#: is unknown to the router, so this becomes the call's ``max_tokens``).
EXTERNAL_DEFAULT_OUTPUT_TOKENS = 4096
#: Tokens a chat template adds per message (role markers, separators).
PER_MESSAGE_TOKENS = 8

_BYTES = ByteBound()


class ContextExceeded(ValueError):
    """The prompt alone leaves no room for an answer in the model's context."""

    def __init__(self, prompt_tokens: int, context_length: int) -> None:
        super().__init__(
            f"This model's maximum context length is {context_length} tokens; the prompt "
            f"has {prompt_tokens} tokens (plus up to {SPECIAL_TOKENS_ALLOWANCE} a chat "
            "template adds), which leaves no room for an answer. Shorten the messages."
        )
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length


#: Without a cap the byte bound's room is the output cap only when it leaves at least
#: this much (or a quarter of the context): a short prompt is never counted, and a long
#: one is, rather than cutting answers to the few tokens its bytes leave.
UNCAPPED_ROOM = 512


def context_room(
    prompt: str,
    context_length: int,
    counter: TokenCounter = _BYTES,
    *,
    want: int | None = None,
    bound: int | None = None,
) -> int:
    """Output tokens the model's context leaves after ``prompt``, as far as the caller
    needs to know: ``want`` (the cap it asks, None: none) and ``bound`` (the prompt's
    byte bound, when already computed).

    First the byte bound: a prompt never has more tokens than UTF-8 bytes (plus the
    template allowance), so the room after it is safe, and when it covers ``want`` (or,
    without one, leaves ``UNCAPPED_ROOM``) it is the answer and no tokenizer runs on the
    request path (one costs ~40 us for a short prompt and ~1 ms for 3,000 characters, on
    the event loop). Otherwise, with a tokenizer (``counter.exact``), the prompt is
    counted: the room is the context minus its count and the allowance, and a prompt
    that leaves none raises ``ContextExceeded`` (the caller's error, not the upstream's).
    Without one, the byte room when there is some; past it the router cannot tell whether
    the prompt fits, so it leaves the backend to decide, with a cap from ~4 bytes a token
    (the estimate the TensorRT-LLM codec uses for a bare call)."""
    if bound is None:
        bound = _BYTES.upper_bound(prompt)
    byte_room = context_length - bound
    need = want if want is not None else min(UNCAPPED_ROOM, context_length // 4)
    if byte_room > 0 and byte_room >= need:
        return byte_room
    if counter.exact:
        tokens = counter.count(prompt)
        if tokens + SPECIAL_TOKENS_ALLOWANCE >= context_length:
            raise ContextExceeded(tokens, context_length)
        return context_length - tokens - SPECIAL_TOKENS_ALLOWANCE
    if byte_room > 0:
        return byte_room
    return max(1, context_length - (bound - SPECIAL_TOKENS_ALLOWANCE + 3) // 4)


def bounded_sampling(sampling: Mapping[str, Any], max_tokens: int) -> dict[str, Any]:
    """The caller's sampling parameters, held to ``max_tokens`` and one sequence."""
    out = {k: v for k, v in sampling.items() if k not in UNBOUNDED}
    out["max_tokens"] = max_tokens
    low = out.get("min_tokens")
    if isinstance(low, int) and not isinstance(low, bool) and low > max_tokens:
        out["min_tokens"] = max_tokens
    return out


@dataclass(frozen=True, slots=True)
class SpecialistPlan:
    input_bound: int
    """Upper bound of the prompt's tokens."""
    output_cap: int
    """``max_tokens`` of the (first) generation."""
    reasoning_cap: int | None
    """Reasoning tokens before the thought is cut (None: never cut)."""
    reasoning_halved: bool
    worst: Amount
    """What the call may cost at most: the reservation."""


def specialist_plan(
    prompt: str,
    caps: Caps,
    *,
    reasons: bool,
    halve_reasoning: bool,
    context_length: int,
    prices: tuple[float, float],
    counter: TokenCounter = _BYTES,
) -> SpecialistPlan:
    """Caps -> the call's limits and worst case. The output cap is the caps' one, never
    more than the context leaves after the prompt (``context_room``; without a cap, all
    of that). ``halve_reasoning`` (a ladder step) halves the reasoning cap in force (or,
    with none, the output cap) of a reasoning model. Raises ``ContextExceeded``."""
    bound = _BYTES.upper_bound(prompt)
    want = caps.max_output_tokens
    room = context_room(prompt, context_length, counter, want=want, bound=bound)
    out_cap = room if caps.max_output_tokens is None else min(caps.max_output_tokens, room)
    rcap = caps.reasoning_cap if reasons else None
    halved = False
    if halve_reasoning and reasons:
        half = halved_reasoning_cap(rcap, out_cap)
        if half is not None:
            rcap, halved = half, True
    worst = worst_case_reasoning_call(bound, out_cap, rcap, caps.answer_tokens, *prices)
    return SpecialistPlan(bound, out_cap, rcap, halved, worst)


def continuation_bound(plan: SpecialistPlan) -> int:
    """What the reservation allows for the prompt of the answer-only generation."""
    return plan.input_bound + (plan.reasoning_cap or 0) + 8


def input_tokens(backend: int | None, text: str, counter: TokenCounter, *, cap: int) -> int:
    """A call's input: the backend's count when it gave one (exact, even past the bound:
    an overrun is reported, never hidden); else the counter's, at most the bound the
    reservation used (without a tokenizer: the byte bound itself, on the safe side)."""
    if backend is not None:
        return backend
    return min(cap, counter.count(text))


def output_tokens(
    backend: int | None, text: str, counter: TokenCounter, *, deltas: int, cap: int
) -> int:
    """A call's output: the backend's count; else the tokenizer's, at least the streamed
    deltas (each one token or more) and at most ``cap`` (the ``max_tokens`` sent, which
    the backend enforces); without a tokenizer, the deltas."""
    if backend is not None:
        return backend
    if not counter.exact:
        return deltas
    return max(deltas, min(cap, counter.count(text)))


@dataclass(frozen=True, slots=True)
class ExternalPlan:
    output_cap: int
    worst: Amount


def message_bound(messages: Sequence[Mapping[str, str]]) -> int:
    """Upper bound of a chat's input tokens at an OpenAI-compatible endpoint."""
    return (
        sum(len(m.get("content", "").encode()) + PER_MESSAGE_TOKENS for m in messages)
        + SPECIAL_TOKENS_ALLOWANCE
    )


def external_plan(
    messages: Sequence[Mapping[str, str]], caps: Caps, prices: tuple[float, float]
) -> ExternalPlan:
    out_cap = caps.max_output_tokens or EXTERNAL_DEFAULT_OUTPUT_TOKENS
    return ExternalPlan(out_cap, worst_case_call(message_bound(messages), out_cap, *prices))


def actual(input_tokens: int, output_tokens: int, prices: tuple[float, float]) -> Amount:
    return cost(input_tokens, output_tokens, *prices)
