"""The vLLM backend's token counts, pure: asking for them and reading them.

The Triton vLLM backend (r24.12 and later, its docs/additional_outputs.md) reports the
tokens it generated when a request sets the BOOL input ``return_num_output_tokens``:
every response then carries ``num_output_tokens`` (UINT32, the tokens of *this*
response's text, so a request's output is their sum); ``return_num_input_tokens``
adds ``num_input_tokens`` (the prompt's tokens, repeated on every response). The
Python stand-ins honour the same tensors. A backend without them refuses the request
naming the input (see ``unsupported``), and the router then counts with a tokenizer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

RETURN_INPUT = "return_num_input_tokens"
RETURN_OUTPUT = "return_num_output_tokens"
NUM_INPUT = "num_input_tokens"
NUM_OUTPUT = "num_output_tokens"


def request_token_counts(req: Any, *, input_tokens: bool = True) -> Any:
    """Ask a ModelInferRequest (built with raw_input_contents, as the router builds
    them) for ``num_output_tokens`` on every response, and ``num_input_tokens``."""
    names = [RETURN_OUTPUT] + ([RETURN_INPUT] if input_tokens else [])
    for name in names:
        t = req.inputs.add()
        t.name, t.datatype = name, "BOOL"
        t.shape.append(1)
        req.raw_input_contents.append(b"\x01")
    return req


def unsupported(error_message: str) -> bool:
    """Whether a Triton error says the model has no token-count inputs (an older vLLM
    backend, or a model of another contract): the request may be sent again without."""
    return RETURN_OUTPUT in error_message or RETURN_INPUT in error_message


@dataclass(frozen=True, slots=True)
class TokenCounts:
    input_tokens: int | None = None
    output_tokens: int | None = None


def _uint32(resp: Any, index: int, out: Any) -> int:
    raw = resp.raw_output_contents
    if index < len(raw):
        buf = raw[index]
        if len(buf) % 4:
            raise ValueError(f"{out.name}: {len(buf)} bytes is not UINT32 data")
        return sum(v for (v,) in struct.iter_unpack("<I", buf))
    return sum(out.contents.uint_contents)


def read_token_counts(resp: Any) -> TokenCounts:
    """The counts one ModelInferResponse carries (None where it carries none). For
    ``n`` > 1 sequences ``num_output_tokens`` has one value per sequence: summed."""
    counts: dict[str, int] = {}
    for i, out in enumerate(resp.outputs):
        if out.name in (NUM_INPUT, NUM_OUTPUT):
            if out.datatype not in ("UINT32", ""):
                raise ValueError(f"{out.name} is {out.datatype}, expected UINT32")
            counts[out.name] = _uint32(resp, i, out)
    return TokenCounts(counts.get(NUM_INPUT), counts.get(NUM_OUTPUT))


def total_counts(per_response: Iterable[TokenCounts]) -> TokenCounts:
    """A request's counts: the input once (every response repeats it), outputs summed."""
    inp: int | None = None
    out: int | None = None
    for c in per_response:
        if c.input_tokens is not None:
            inp = c.input_tokens
        if c.output_tokens is not None:
            out = (out or 0) + c.output_tokens
    return TokenCounts(inp, out)
