"""The classifier's numeric helpers and what a specialist's territory is learned from."""

from __future__ import annotations

import re
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from slmfleet.api.routerconfig import DomainConfig

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def domain_texts(domain: DomainConfig) -> list[str]:
    """What a specialist's territory is learned from: examples, description sentences,
    each keyword, and the keywords together (so keyword- or description-only domains
    still have several texts)."""
    texts = [e.strip() for e in domain.examples if e.strip()]
    texts += [s.strip() for s in _SENTENCE.split(domain.description) if s.strip()]
    kws = [k.strip() for k in domain.keywords if k.strip()]
    texts += kws
    if len(kws) > 1:
        texts.append(", ".join(kws))
    return list(dict.fromkeys(texts))  # dedupe, keep order


def g(s: np.ndarray, center: float, width: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(s - center) / width))


def topk_mean(sims: np.ndarray, bounds: np.ndarray, k: int) -> np.ndarray:
    """Per domain (contiguous row ranges ``bounds``), mean of the k largest of ``sims``."""
    out = np.empty((sims.shape[0], len(bounds) - 1), dtype=np.float32)
    for d in range(len(bounds) - 1):
        block = sims[:, bounds[d] : bounds[d + 1]]
        kk = min(k, block.shape[1])
        out[:, d] = np.partition(block, block.shape[1] - kk, axis=1)[:, -kk:].mean(axis=1)
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def lr(c: float) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=2000)


def fit_quietly(
    model: LogisticRegression, x: object, y: np.ndarray, weight: np.ndarray | None = None
) -> LogisticRegression:
    """Tiny keyword-only corpora are separable and make lbfgs warn; the fit is still fine."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y, sample_weight=weight)
