"""A static sentence embedding distilled from the router's MiniLM (model2vec's recipe).

The full encoder costs ~1.5-1.8 ms of CPU for a short request; most of that is six
transformer layers over every token. A *static* embedding keeps one vector per
vocabulary token, computed once by the same network, and a sentence is a weighted mean
of its tokens' vectors: a tokenizer call, a gather and a dot product (tens of us).

* **Distillation** (:func:`distil_table`): every WordPiece id goes through the loaded
  MiniLM graph in context, ``[CLS] tok [SEP]``, batched; its output (mean-pooled over
  the three positions, L2-normalised: what the encoder returns for any text) is the
  token's vector. The table is centred and PCA-reduced to ``dims`` (centring removes
  the component every token shares, so generic tokens get short vectors and count less
  in a mean) and stored as float16. No new weights and no download: the same weights
  and tokenizer ``MiniLMEncoder`` already loaded.
* **Cache** (:func:`load_table`): keyed by a hash of the weights and the recipe
  (:func:`cache_key`), in :func:`cache_dir` (``SLMFLEET_STATIC_CACHE``, else
  ``$XDG_CACHE_HOME/slmfleet/static``, else ``~/.cache/slmfleet/static``) and in the
  process. Where the directory cannot be written (a read-only root filesystem) the
  table lives in memory only and is distilled again at the next process start. The
  router image distils it at build time (``python -m slmfleet.router.static_embed
  /opt/slmfleet/static``) and sets ``SLMFLEET_STATIC_CACHE`` there, so a Pod starts
  with the table (read-only is enough) and distils nothing.
* **Sentences** (:class:`StaticEmbedder`): token ids without ``[CLS]``/``[SEP]``,
  ``sum(w[id] * T[id]) / sum(w[id])`` with per-token weights chosen by the caller
  (:func:`token_weights`), L2-normalised.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

RECIPE = "cls-tok-sep/mean/l2/pca-centred/f16/v2"
"""Part of the cache key: change it whenever the table's computation changes."""
DIMS = 256
BATCH = 512
Weighting = Literal["none", "idf"]


def cache_key(arrays: Iterable[np.ndarray], recipe: str, dims: int) -> str:
    """Hex digest of the arrays' shapes, dtypes and bytes, the recipe and ``dims``: a
    different model, tokenizer vocabulary size or recipe never reads another's table."""
    h = hashlib.blake2b(f"{recipe}|{dims}".encode(), digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"|{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def cache_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """Where tables are kept on disk: ``SLMFLEET_STATIC_CACHE`` (empty: nowhere), else
    ``$XDG_CACHE_HOME/slmfleet/static``, else ``$HOME/.cache/slmfleet/static``."""
    env = os.environ if env is None else env
    if "SLMFLEET_STATIC_CACHE" in env:
        v = env["SLMFLEET_STATIC_CACHE"]
        return Path(v) if v else None
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "slmfleet" / "static"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".cache" / "slmfleet" / "static"
    return None


def pca_reduce(x: np.ndarray, dims: int) -> np.ndarray:
    """``x`` centred and projected on its ``dims`` principal axes (float32), each axis
    signed so its largest component is positive (deterministic). Through the (d, d)
    covariance, not an SVD of ``x``: the SVD's (n, d) factor and workspace cost ~400 MB
    more at the peak for the vocabulary table."""
    xc = x - x.mean(axis=0, keepdims=True, dtype=np.float64).astype(x.dtype)
    cov = (xc.T @ xc).astype(np.float64)
    _, vecs = np.linalg.eigh(cov)  # ascending
    dims = min(dims, x.shape[1])
    top = vecs[:, ::-1][:, :dims]
    top *= np.sign(top[np.abs(top).argmax(axis=0), np.arange(dims)])
    return (xc @ top.astype(np.float32)).astype(np.float32, copy=False)


def distil_table(enc: Any, *, dims: int = DIMS, batch: int = BATCH) -> np.ndarray:
    """(vocab, dims) float16: each token id through ``enc``'s network as ``[CLS] id [SEP]``.

    ``enc`` is a ``MiniLMEncoder`` (its ``_forward`` runs whichever backend it loaded;
    batches are fixed, so the int8 graph's per-call activation scale makes the table
    deterministic too)."""
    vocab = enc._tok.get_vocab_size()
    cls_id, sep_id = enc._tok.token_to_id("[CLS]"), enc._tok.token_to_id("[SEP]")
    out = np.empty((vocab, enc.dim), np.float32)
    for lo in range(0, vocab, batch):
        hi = min(vocab, lo + batch)
        ids = np.empty((hi - lo, 3), np.int64)
        ids[:, 0], ids[:, 1], ids[:, 2] = cls_id, np.arange(lo, hi), sep_id
        out[lo:hi] = enc._forward(ids, None)
    return pca_reduce(out, dims).astype(np.float16)


def table_key(enc: Any, dims: int) -> str:
    """The cache key of ``enc``'s table (its file is ``<key>.npy``)."""
    arrays = [enc._word, *(a for ly in enc._layers for a in vars(ly).values())]
    recipe = f"{RECIPE}|{getattr(enc, 'backend', '')}|{getattr(enc, 'int8', '')}"
    return cache_key(arrays, recipe, dims)


_tables: dict[str, np.ndarray] = {}
_tables_lock = threading.Lock()


def load_table(enc: Any, *, dims: int = DIMS, directory: Path | None = None) -> np.ndarray:
    """The distilled table for ``enc``: from this process, else from ``directory``
    (default :func:`cache_dir`), else distilled now and saved there when writable."""
    key = table_key(enc, dims)
    with _tables_lock:
        if key in _tables:
            return _tables[key]
        d = cache_dir() if directory is None else directory
        path = d / f"{key}.npy" if d is not None else None
        table = None
        if path is not None and path.is_file():
            try:
                table = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as e:
                log.warning("static embedding cache %s unreadable (%s): distilling again", path, e)
        if table is None or table.shape != (enc._tok.get_vocab_size(), dims):
            t0 = time.process_time()
            table = distil_table(enc, dims=dims)
            log.info(
                "distilled the static embedding table (%d x %d) in %.1f s of CPU",
                *table.shape,
                time.process_time() - t0,
            )
            if path is not None:
                _save(path, table)
        table.setflags(write=False)
        _tables[key] = table
        return table


def _save(path: Path, table: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, table, allow_pickle=False)
        os.replace(tmp, path)
    except OSError as e:  # read-only filesystem: keep it in memory only
        log.info("static embedding table kept in memory only (%s unwritable: %s)", path, e)


def token_weights(
    id_lists: Sequence[Sequence[int]], vocab: int, weighting: Weighting
) -> np.ndarray:
    """Per token id, its weight in a sentence's mean, learned from the examples' ids.

    ``none``: 1 each. ``idf``: ``log((1 + n) / (1 + df)) + 1`` with ``df`` the number of
    examples containing the id (sklearn's smoothed idf): words every example uses count
    least; ids no example has get the largest weight, so an unfamiliar request is not
    pulled towards a domain by its few familiar words."""
    if weighting == "none":
        return np.ones(vocab, np.float32)
    if weighting != "idf":
        raise ValueError(f"unknown weighting {weighting!r}")
    df = Counter(i for ids in id_lists for i in set(ids))
    w = np.full(vocab, np.log(1.0 + len(id_lists)) + 1.0, np.float32)
    if df:
        idx = np.fromiter(df.keys(), np.int64, len(df))
        cnt = np.fromiter(df.values(), np.float32, len(df))
        w[idx] = np.log((1.0 + len(id_lists)) / (1.0 + cnt)) + 1.0
    return w


def sentence_vector(
    table: np.ndarray, weights: np.ndarray, ids: Sequence[int]
) -> np.ndarray | None:
    """L2-normalised weighted mean of the ids' rows; None without ids."""
    if not len(ids):
        return None
    idx = np.asarray(ids, np.int64)
    w = weights[idx]
    v = w @ table[idx].astype(np.float32)
    n = float(np.sqrt(v @ v))
    return v / n if n > 0 else None


_embedders: weakref.WeakKeyDictionary[Any, dict[int, StaticEmbedder]] = weakref.WeakKeyDictionary()
_embedders_lock = threading.Lock()


class StaticEmbedder:
    """Token ids and the distilled table of one ``MiniLMEncoder``; thread-safe."""

    def __init__(self, enc: Any, table: np.ndarray) -> None:
        from tokenizers import Tokenizer

        self.table = table
        self.dim = int(table.shape[1])
        self.vocab = int(table.shape[0])
        self.name = f"{enc.name}-static{self.dim}"
        tok = Tokenizer.from_str(enc._tok.to_str())
        tok.no_padding()
        tok.no_truncation()
        self._tok = tok
        self._lock = threading.Lock()

    @classmethod
    def of(cls, enc: Any, *, dims: int = DIMS) -> StaticEmbedder:
        """The embedder of ``enc``'s table, one per encoder object and ``dims``: a refit
        (hot reload) then skips hashing the weights (~0.1 s)."""
        with _embedders_lock:
            per = _embedders.setdefault(enc, {})
            if dims not in per:
                per[dims] = cls(enc, load_table(enc, dims=dims))
            return per[dims]

    def ids(self, text: str) -> list[int]:
        with self._lock:
            return self._tok.encode(text, add_special_tokens=False).ids

    def ids_many(self, texts: Sequence[str]) -> list[list[int]]:
        with self._lock:
            return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def vectors(self, id_lists: Sequence[Sequence[int]], weights: np.ndarray) -> np.ndarray:
        """(len, dim) float32 rows; a text without ids gets a zero row."""
        out = np.zeros((len(id_lists), self.dim), np.float32)
        for i, ids in enumerate(id_lists):
            v = sentence_vector(self.table, weights, ids)
            if v is not None:
                out[i] = v
        return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m slmfleet.router.static_embed [DIR]``: distil the packaged encoder's
    table into DIR (default: :func:`cache_dir`) and print its path. The router image runs
    it at build time and names the directory in ``SLMFLEET_STATIC_CACHE``, so a Pod
    starts with the table instead of spending ~10 s of CPU on it."""
    import argparse

    from .embed import default_encoder

    ap = argparse.ArgumentParser(prog="python -m slmfleet.router.static_embed")
    ap.add_argument("directory", nargs="?", help="where to write the table")
    ap.add_argument("--dims", type=int, default=DIMS)
    args = ap.parse_args(argv)
    d = Path(args.directory) if args.directory else cache_dir()
    if d is None:
        ap.error("no directory: name one, or set SLMFLEET_STATIC_CACHE or HOME")
    try:  # before ~10 s of distilling: can the table be written there at all?
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        print(f"could not write the table into {d}: {e}", file=sys.stderr)
        return 1
    enc = default_encoder()
    load_table(enc, dims=args.dims, directory=d)
    path = d / f"{table_key(enc, args.dims)}.npy"
    if not path.is_file():
        print(f"could not write the table into {d}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
