"""Exact token accounting: a tokenizer for what the backend does not count, and the
Triton vLLM backend's token-count tensors for what it does.

Settle with the backend's counts when it gives them (``num_input_tokens`` and the sum
of ``num_output_tokens`` over a request's responses); otherwise count with the
specialist's own ``tokenizer.json`` (the ``tokenizers`` package). Reserve with an
upper bound (``upper_bound``), so a reservation is a true worst case: the exact count
plus the special tokens a chat template or BOS/EOS may add, or, without a tokenizer,
the prompt's UTF-8 length (byte-level BPE and SentencePiece with byte fallback never
produce more tokens than bytes).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

#: Tokens a chat template, BOS/EOS and role markers may add around a prompt.
SPECIAL_TOKENS_ALLOWANCE = 16

RETURN_INPUT = "return_num_input_tokens"
RETURN_OUTPUT = "return_num_output_tokens"
NUM_INPUT = "num_input_tokens"
NUM_OUTPUT = "num_output_tokens"


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...

    def upper_bound(self, text: str) -> int: ...


class ByteBound:
    """No tokenizer at hand: a bound that holds for byte-level tokenizers, not a count."""

    def count(self, text: str) -> int:
        return len(text.encode("utf-8"))

    def upper_bound(self, text: str) -> int:
        return len(text.encode("utf-8")) + SPECIAL_TOKENS_ALLOWANCE


class TokenizerCounter:
    """Counts with a Hugging Face ``tokenizer.json`` (thread-safe: encode is reentrant)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    @classmethod
    def from_file(cls, path: str | Path) -> TokenizerCounter:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        # Files often ship with truncation and padding for training or embedding (e.g.
        # to 128): a counter must see every token of the text, and only those.
        tok.no_truncation()
        tok.no_padding()
        return cls(tok)

    def count(self, text: str) -> int:
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        return len(enc.ids)

    def upper_bound(self, text: str) -> int:
        return self.count(text) + SPECIAL_TOKENS_ALLOWANCE


def counter_for(tokenizer_file: str | Path | None) -> TokenCounter:
    """The specialist's tokenizer when its file is available, else the byte bound."""
    if tokenizer_file is not None and Path(tokenizer_file).is_file():
        return TokenizerCounter.from_file(tokenizer_file)
    return ByteBound()


# -- the vLLM backend's token-count tensors --------------------------------------------------


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
