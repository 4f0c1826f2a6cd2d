"""Static sentence embeddings the static stage could use (benchmarks/static_views.py).

* ``distilled``: the router's own table, distilled from its MiniLM (static_embed.py).
* ``wordllama``: WordLlama's 256-d "l2_supercat" token table, trained for sentence
  similarity and shipped inside the ``wordllama`` wheel on PyPI (MIT; a Llama-2
  tokenizer of 32,000 ids). The wheel is downloaded once with pip (no install, no
  hub) into ``~/.cache/slmfleet/bench`` and read straight from the zip.
* ``both``: the two vectors side by side (each unit length, the pair scaled to unit
  length), one id space (WordLlama's ids after the distilled table's).

Each offers what ``StaticStage.fit`` and the tuning grid read: ``ids_many``,
``vectors``, ``vocab``, ``dim``. Benchmark-only: the router does not ship WordLlama.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slmfleet.router.static_embed import StaticEmbedder, sentence_vector

WORDLLAMA = "wordllama==0.4.0.post1"
CACHE = Path.home() / ".cache" / "slmfleet" / "bench"
VIEWS = ("distilled", "wordllama", "both")


def wordllama_wheel() -> Path:
    """The pinned wheel, downloaded with pip the first time."""
    found = sorted(CACHE.glob("wordllama-0.4.0.post1-*.whl"))
    if not found:
        CACHE.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        subprocess.run([*cmd, "-q", "-d", str(CACHE), WORDLLAMA], check=True)
        found = sorted(CACHE.glob("wordllama-0.4.0.post1-*.whl"))
    return found[0]


class WordLlamaEmbedder:
    """WordLlama's table and tokenizer, read from its wheel."""

    name = "wordllama-l2-supercat-256"

    def __init__(self, wheel: Path | None = None) -> None:
        from safetensors.numpy import load
        from tokenizers import Tokenizer

        with zipfile.ZipFile(wheel or wordllama_wheel()) as z:
            tensors = load(z.read("wordllama/weights/l2_supercat_256.safetensors"))
            tok = z.read("wordllama/tokenizers/l2_supercat_tokenizer_config.json")
        self.table = next(iter(tensors.values())).astype(np.float16)
        self.vocab, self.dim = (int(n) for n in self.table.shape)
        self._tok = Tokenizer.from_str(json.dumps(json.loads(tok)))
        self._tok.no_padding()
        self._tok.no_truncation()

    def ids(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def ids_many(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    vectors = StaticEmbedder.vectors


class BothEmbedder:
    """Two embedders side by side: ids of ``b`` offset by ``a.vocab``."""

    name = "distilled+wordllama"

    def __init__(self, a: Any, b: Any) -> None:
        self.a, self.b = a, b
        self.vocab = a.vocab + b.vocab
        self.dim = a.dim + b.dim

    def ids(self, text: str) -> list[int]:
        return self.a.ids(text) + [i + self.a.vocab for i in self.b.ids(text)]

    def ids_many(self, texts: Sequence[str]) -> list[list[int]]:
        off = self.a.vocab
        pairs = zip(self.a.ids_many(texts), self.b.ids_many(texts), strict=True)
        return [x + [i + off for i in y] for x, y in pairs]

    def vector(self, ids: Sequence[int], weights: np.ndarray) -> np.ndarray | None:
        off = self.a.vocab
        va = sentence_vector(self.a.table, weights[:off], [i for i in ids if i < off])
        vb = sentence_vector(self.b.table, weights[off:], [i - off for i in ids if i >= off])
        if va is None or vb is None:
            return None
        return np.concatenate([va, vb]) / np.float32(np.sqrt(2.0))

    def vectors(self, id_lists: Sequence[Sequence[int]], weights: np.ndarray) -> np.ndarray:
        out = np.zeros((len(id_lists), self.dim), np.float32)
        for i, ids in enumerate(id_lists):
            v = self.vector(ids, weights)
            if v is not None:
                out[i] = v
        return out


def view(name: str, encoder: Any) -> Any:
    """The embedder called ``name`` (one of VIEWS) for the router's MiniLM ``encoder``."""
    if name == "distilled":
        return StaticEmbedder.of(encoder)
    if name == "wordllama":
        return WordLlamaEmbedder()
    if name == "both":
        return BothEmbedder(StaticEmbedder.of(encoder), WordLlamaEmbedder())
    raise ValueError(f"unknown view {name!r}; one of {VIEWS}")
