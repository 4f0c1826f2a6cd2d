"""The staged classifier's middle stage: a linear model over static embeddings.

Between the TF-IDF stage and the full MiniLM classifier (staged.py). It sees the same
examples, as :class:`~.static_embed.StaticEmbedder` vectors (a weighted mean of
distilled token vectors, ~30 us a short request instead of ~1.6 ms):

* **which domain** - a logistic regression over the vectors with the full classifier's
  pseudo-intents (k-means inside each domain; a "none of them" class from the
  negatives when the policy has some), averaged with the TF-IDF stage's probabilities
  (weight ``static_tfidf_weight``), as the full classifier averages its two models;
* **whether it may decide** (:func:`static_decides`) - the top probability reaches
  ``static_cut``; the request's mean cosine to the ``knn_k`` nearest examples of that
  domain reaches ``sim_floor``, the ``static_similarity`` quantile of the examples' own
  held-out similarity (each example against the rest of its domain); it is closer to
  its domain than to the nearest negatives; it is as familiar as the TF-IDF stage asks
  (``familiar_floor``); and, with ``static_agreement``, the TF-IDF stage's own top
  domain is the same. The similarity and familiarity guards are what keep an
  out-of-domain request from being routed by a confident linear model alone.

Otherwise the full classifier decides. Every hyperparameter was chosen on CLINC150
train splits (benchmarks/static_stage_tuning.py); see ``ClassifierParams``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .classifier_params import ClassifierParams
from .classifier_parts import fit_quietly, pseudo_intents, softmax
from .classifier_parts import lr as new_lr
from .static_embed import StaticEmbedder, sentence_vector, token_weights


def static_decides(
    p_best: float,
    sim_best: float,
    familiar: float,
    sim_neg: float | None,
    agrees: bool,
    *,
    cut: float,
    sim_floor: float,
    familiar_floor: float,
    need_agreement: bool,
) -> bool:
    """The static stage's rule (module docstring): every guard must pass. ``agrees``:
    the TF-IDF stage's top domain is the same (required when ``need_agreement``)."""
    return (
        p_best >= cut
        and sim_best >= sim_floor
        and familiar >= familiar_floor
        and (sim_neg is None or sim_neg < sim_best)
        and (agrees or not need_agreement)
    )


def held_out_similarity(rows: np.ndarray, bounds: np.ndarray, k: int) -> np.ndarray:
    """Per row, the mean cosine to its ``k`` nearest *other* rows of the same domain
    (contiguous ``bounds``); a domain of one row gives 0.0 (nothing to compare)."""
    out = np.zeros(len(rows), np.float32)
    for d in range(len(bounds) - 1):
        lo, hi = int(bounds[d]), int(bounds[d + 1])
        if hi - lo < 2:
            continue
        s = rows[lo:hi] @ rows[lo:hi].T
        np.fill_diagonal(s, -np.inf)
        kk = min(k, hi - lo - 1)
        out[lo:hi] = np.partition(s, s.shape[1] - kk, axis=1)[:, -kk:].mean(axis=1)
    return out


@dataclass
class StaticStage:
    """One fitted static stage; see the module docstring. Use :meth:`fit`."""

    embedder: StaticEmbedder
    weights: np.ndarray  # (vocab,) per token id
    w: np.ndarray  # (dim, n_clusters)
    b: np.ndarray
    cluster_domain: np.ndarray  # cluster -> domain index (n_dom: the negatives)
    rows: np.ndarray  # (n_texts + n_neg, dim), grouped by domain, negatives last
    bounds: np.ndarray
    n_neg: int
    sim_floor: float
    params: ClassifierParams

    @property
    def n_dom(self) -> int:
        return len(self.bounds) - 1

    @classmethod
    def fit(
        cls,
        embedder: StaticEmbedder,
        texts: Sequence[str],
        bounds: np.ndarray,
        n_neg: int,
        params: ClassifierParams,
    ) -> StaticStage | None:
        """Fit on the full classifier's texts (domains' rows by ``bounds``, then ``n_neg``
        negatives). None when there is nothing to choose between (one class)."""
        p = params
        n_dom = len(bounds) - 1
        if n_dom + (1 if n_neg else 0) < 2 or not len(texts):
            return None
        ids = embedder.ids_many(texts)
        weights = token_weights(ids[: int(bounds[-1])], embedder.vocab, p.static_weighting)
        rows = embedder.vectors(ids, weights)
        labels, owner = pseudo_intents(rows, bounds, n_neg, p)
        y = np.repeat(np.arange(n_dom), np.diff(bounds))
        sw = None
        if n_neg:
            sw = np.ones(len(rows))
            sw[-n_neg:] = p.negative_weight
        if len(np.unique(labels)) < 2:
            return None
        model = fit_quietly(new_lr(p.lr_c), rows, labels, sw)
        held = held_out_similarity(rows[: len(y)], bounds, p.knn_k)
        floor = float(np.quantile(held, p.static_similarity)) if p.static_similarity > 0 else -1.0
        return cls(
            embedder=embedder,
            weights=weights,
            w=np.ascontiguousarray(model.coef_.T.astype(np.float32))
            if len(model.classes_) > 2
            else _binary(model),
            b=model.intercept_.astype(np.float32)
            if len(model.classes_) > 2
            else np.array([0.0, float(model.intercept_[0])], np.float32),
            cluster_domain=owner[model.classes_],
            rows=np.ascontiguousarray(rows),
            bounds=bounds,
            n_neg=n_neg,
            sim_floor=floor,
            params=p,
        )

    def __post_init__(self) -> None:
        # cluster -> domain as a (n_clusters, n_dom) 0/1 matrix: summing the clusters'
        # probabilities per domain is then one small product (np.add.at costs ~10 us).
        agg = np.zeros((len(self.cluster_domain), self.n_dom), np.float32)
        own = self.cluster_domain < self.n_dom
        agg[np.flatnonzero(own), self.cluster_domain[own]] = 1.0
        self._agg = agg

    def vector(self, text: str) -> np.ndarray | None:
        return sentence_vector(self.embedder.table, self.weights, self.embedder.ids(text))

    def probabilities(self, q: np.ndarray) -> np.ndarray:
        """(n, n_dom) domain probabilities of the LR for unit vectors ``q`` (n, dim); the
        negatives' class is left out, so rows sum to 1 - p(none)."""
        return softmax(q @ self.w + self.b) @ self._agg

    def similarity(self, q: np.ndarray, d: int) -> float:
        """Mean cosine of ``q`` to its ``knn_k`` nearest examples of domain ``d``
        (``d == n_dom``: the negatives)."""
        lo = int(self.bounds[d]) if d < self.n_dom else int(self.bounds[-1])
        hi = int(self.bounds[d + 1]) if d < self.n_dom else lo + self.n_neg
        s = self.rows[lo:hi] @ q
        kk = min(self.params.knn_k, len(s))
        return float(np.partition(s, len(s) - kk)[-kk:].sum()) / kk

    def decide(
        self, text: str, p_tf: np.ndarray, familiar: float, familiar_floor: float
    ) -> tuple[int, np.ndarray] | None:
        """(domain index, combined probabilities) when the stage may decide, else None;
        ``p_tf`` and ``familiar`` are the TF-IDF stage's (already computed). The k-NN
        similarities run only when the other guards pass (same rule, less work)."""
        q = self.vector(text)
        if q is None:
            return None
        a = self.params.static_tfidf_weight
        z = q @ self.w + self.b
        e = np.exp(z - z.max())
        p = (e / e.sum()) @ self._agg
        if a:
            p = a * p_tf + (1.0 - a) * p
        best = int(np.argmax(p))
        rule = {
            "cut": self.params.static_cut,
            "sim_floor": self.sim_floor,
            "familiar_floor": familiar_floor,
            "need_agreement": self.params.static_agreement,
        }
        agrees = int(np.argmax(p_tf)) == best
        pb = float(p[best])
        if not static_decides(pb, math.inf, familiar, None, agrees, **rule):
            return None
        sim_neg = self.similarity(q, self.n_dom) if self.n_neg else None
        ok = static_decides(pb, self.similarity(q, best), familiar, sim_neg, agrees, **rule)
        return (best, p) if ok else None


def _binary(model: object) -> np.ndarray:
    """A binary LR's one weight column as two softmax columns (0 for the first class)."""
    coef = model.coef_.astype(np.float32)  # type: ignore[attr-defined]
    return np.ascontiguousarray(np.stack([np.zeros(coef.shape[1], np.float32), coef[0]], 1))
