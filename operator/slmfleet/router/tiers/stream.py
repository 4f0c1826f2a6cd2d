"""The one streaming loop every tier's answer goes through.

Pieces from an upstream (Triton's streamed tokens, an external endpoint's answer, a
review message) feed the trace-budget state machine, which decides what is answer text,
whether the reasoning cap is hit (``cut``) or the output cap (``length``); answer text
goes to the client as it comes when the tier streams live. Progress is kept in a mutable
record, so a caller that fails half-way (upstream error, deadline, client gone) still
knows what was generated and charges for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from ..logprobs import Step
from ..tracebudget import TraceState, new_state, step
from ..triton.codec import Piece
from .base import Emit


@dataclass(slots=True)
class Progress:
    state: TraceState
    action: str = "continue"
    confidence: float | None = None
    emitted: bool = False
    output_tokens: int | None = None
    """Tokens generated, as the backend counted them (None: it did not count)."""
    input_tokens: int | None = None
    """The prompt's tokens, as the backend counted them."""
    steps: list[Step] | None = None
    """Each response's text and cumulative log-prob, when the stream carries them (see
    router/logprobs.py)."""

    @property
    def generated(self) -> int:
        """Tokens generated so far (reasoning and answer)."""
        return self.state.reasoning_tokens + self.state.answer_tokens


def verbatim() -> TraceState:
    """A state that passes text through unchanged (no markers, no stripping): for
    answers that are not a model's token stream (external endpoints, review messages)."""
    return replace(new_state(None, None), answer_started=True)


async def consume(
    pieces: AsyncIterator[Piece],
    p: Progress,
    *,
    reasoning_cap: int | None,
    output_cap: int | None,
    emit: Emit | None,
) -> Progress:
    """Run ``pieces`` through the trace budget into ``p`` until they end or the budget
    says stop; closing the iterator then cancels what is left upstream."""
    try:
        async for piece in pieces:
            if piece.confidence is not None:
                p.confidence = piece.confidence
            # Counted as received: a piece the budget then drops was generated all the same.
            if piece.output_tokens is not None:
                p.output_tokens = (p.output_tokens or 0) + piece.output_tokens
            if piece.input_tokens is not None:
                p.input_tokens = piece.input_tokens
            if piece.cumulative_logprob is not None:
                if p.steps is None:
                    p.steps = []
                p.steps.append(Step(piece.text, piece.cumulative_logprob, piece.output_tokens))
            p.state, s = step(
                p.state, piece.text, reasoning_cap=reasoning_cap, output_cap=output_cap
            )
            if s.answer_delta and emit is not None:
                p.emitted = True
                await emit(s.answer_delta)
            if s.action != "continue":
                p.action = s.action
                break
    finally:
        await pieces.aclose()
    return p


async def one_piece(text: str) -> AsyncIterator[Piece]:
    """An answer that arrives whole, as a stream of one piece."""
    yield Piece(text, None)
