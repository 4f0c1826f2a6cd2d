"""Embeddings of training texts, cached per process across refits.

A config change usually adds or edits a few examples; refitting then embeds only those,
which keeps hot reloads cheap. LRU-bounded (~300 MB at the cap).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from .embed import Encoder

_CACHE_MAX = 200_000
_cache: OrderedDict[tuple[str, bytes], np.ndarray] = OrderedDict()
_cache_lock = threading.Lock()


def _key(encoder: Encoder, text: str) -> tuple[str, bytes]:
    return encoder.name, hashlib.blake2b(text.encode(), digest_size=16).digest()


def embed_cached(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    """Embed ``texts``, reusing vectors of texts seen before in this process.

    A config change usually adds or edits a few examples; refitting then embeds only
    those, which keeps hot reloads cheap. LRU-bounded (~300 MB at the cap).
    """
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    missing: dict[str, list[int]] = {}
    with _cache_lock:
        for i, t in enumerate(texts):
            v = _cache.get(_key(encoder, t))
            if v is None:
                missing.setdefault(t, []).append(i)
            else:
                _cache.move_to_end(_key(encoder, t))
                out[i] = v
    if missing:
        new = list(missing)
        vecs = encoder.encode(new)
        with _cache_lock:
            for t, v in zip(new, vecs, strict=True):
                out[missing[t]] = v
                _cache[_key(encoder, t)] = v
            while len(_cache) > _CACHE_MAX:
                _cache.popitem(last=False)
    return out


def clear_embedding_cache() -> None:
    with _cache_lock:
        _cache.clear()
