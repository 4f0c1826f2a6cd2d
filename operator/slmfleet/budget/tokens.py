"""Exact token accounting where the backend does not count: a tokenizer, and bounds.

Settle with the backend's counts when it gives them (the Triton vLLM backend's
``num_input_tokens`` and ``num_output_tokens`` tensors: ``router.triton.counts``);
otherwise count with a ``tokenizer.json`` (the ``tokenizers`` package). Reserve with an
upper bound (``upper_bound``), so a reservation is a true worst case: the exact count
plus the special tokens a chat template or BOS/EOS may add, or, without a tokenizer,
the prompt's UTF-8 length (byte-level BPE and SentencePiece with byte fallback never
produce more tokens than bytes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

#: Tokens a chat template, BOS/EOS and role markers may add around a prompt.
SPECIAL_TOKENS_ALLOWANCE = 16


class TokenCounter(Protocol):
    exact: bool
    """Whether ``count`` counts tokens (a tokenizer) or only bounds them (bytes)."""

    def count(self, text: str) -> int: ...

    def upper_bound(self, text: str) -> int: ...


class ByteBound:
    """No tokenizer at hand: a bound that holds for byte-level tokenizers, not a count."""

    exact = False

    def count(self, text: str) -> int:
        return len(text.encode("utf-8"))

    def upper_bound(self, text: str) -> int:
        return len(text.encode("utf-8")) + SPECIAL_TOKENS_ALLOWANCE


class TokenizerCounter:
    """Counts with a Hugging Face ``tokenizer.json`` (thread-safe: encode is reentrant)."""

    exact = True

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
