"""Amounts, pure: what a call may cost at worst (reserved before it) and what it cost
(settled after it). USD and tokens travel together; each window takes the unit(s) it
limits. The shared ledger stores USD as integer nano-dollars, so sums are exact and
identical on every replica."""

from __future__ import annotations

import math
from dataclasses import dataclass

NANO = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Amount:
    usd: float = 0.0
    tokens: int = 0

    def __post_init__(self) -> None:
        if self.usd < 0 or self.tokens < 0:
            raise ValueError(f"amounts are never negative: {self}")

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.usd + other.usd, self.tokens + other.tokens)

    @property
    def nano_usd(self) -> int:
        """Rounded to the nearest nano-dollar (settled amounts)."""
        return round(self.usd * NANO)

    @property
    def nano_usd_ceil(self) -> int:
        """Rounded up (reservations: a worst case is never understated)."""
        return math.ceil(self.usd * NANO - 1e-6)

    @classmethod
    def from_nano(cls, nano_usd: int, tokens: int) -> Amount:
        return cls(max(0, nano_usd) / NANO, max(0, int(tokens)))


def cost(input_tokens: int, output_tokens: int, in_per_m: float, out_per_m: float) -> Amount:
    """The actual amount of a call: its tokens and their price (USD per million)."""
    usd = (input_tokens * in_per_m + output_tokens * out_per_m) / 1e6
    return Amount(usd, input_tokens + output_tokens)


def worst_case_call(
    input_tokens: int,
    max_output_tokens: int | None,
    in_per_m: float,
    out_per_m: float,
    *,
    context_length: int | None = None,
) -> Amount:
    """The most one generation can cost: its input plus every output token it may
    produce (its cap; without one, what is left of the context). ``input_tokens`` must
    be an upper bound (``tokens.TokenCounter.upper_bound``) for the reservation to
    hold."""
    out = max_output_tokens
    if context_length is not None:
        room = max(0, context_length - input_tokens)
        out = room if out is None else min(out, room)
    if out is None:
        raise ValueError("a worst case needs an output cap or the model's context length")
    return cost(input_tokens, out, in_per_m, out_per_m)


def worst_case_reasoning_call(
    input_tokens: int,
    max_output_tokens: int | None,
    reasoning_cap: int | None,
    answer_tokens: int,
    in_per_m: float,
    out_per_m: float,
    *,
    context_length: int | None = None,
    marker_tokens: int = 8,
) -> Amount:
    """Worst case of a specialist call under the trace budget: the first generation,
    plus, when the reasoning cap may cut it, the continuation (the prompt again, the
    reasoning so far and the end marker as input; ``answer_tokens`` as output)."""
    first = worst_case_call(
        input_tokens, max_output_tokens, in_per_m, out_per_m, context_length=context_length
    )
    if reasoning_cap is None:
        return first
    second_in = input_tokens + reasoning_cap + marker_tokens
    second_out = (
        answer_tokens if max_output_tokens is None else min(answer_tokens, max_output_tokens)
    )
    return first + worst_case_call(
        second_in, second_out, in_per_m, out_per_m, context_length=context_length
    )
