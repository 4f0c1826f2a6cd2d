"""The classifier's numeric helpers and what a specialist's territory is learned from."""

from __future__ import annotations

import re
import warnings

import numpy as np
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from slmfleet.api.routerconfig import DomainConfig

from .classifier_params import ClassifierParams

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


def pseudo_intents(
    emb: np.ndarray, bounds: np.ndarray, n_neg: int, p: ClassifierParams
) -> tuple[np.ndarray, np.ndarray]:
    """k-means inside each domain (rows ``bounds[d]:bounds[d+1]`` of ``emb``; the
    ``n_neg`` negatives after them): a label per row and the domain of each cluster
    (``len(bounds) - 1`` for the negatives' clusters)."""
    labels = np.zeros(len(emb), dtype=np.int64)
    owner: list[int] = []
    n_dom = len(bounds) - 1
    spans = [(int(bounds[d]), int(bounds[d + 1]), p.examples_per_cluster) for d in range(n_dom)]
    if n_neg:
        spans.append((int(bounds[-1]), int(bounds[-1]) + n_neg, p.negatives_per_cluster))
    for d, (lo, hi, per) in enumerate(spans):
        cap = p.max_clusters if d < n_dom else hi - lo
        k = max(1, min(cap, round((hi - lo) / per)))
        if k > 1:
            km = KMeans(n_clusters=k, n_init=1, random_state=0).fit(emb[lo:hi])
            labels[lo:hi] = km.labels_ + len(owner)
        else:
            labels[lo:hi] = len(owner)
        owner += [d] * k
    return labels, np.asarray(owner)
