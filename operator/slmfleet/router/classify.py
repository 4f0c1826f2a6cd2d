"""The router's learned domain classifier: which specialist should answer a request.

Rules run before it and cost-aware choice after it; this module only scores domains.
It learns each specialist's territory from its ``DomainConfig`` (examples, keywords,
description) and combines two signals, because neither alone both routes well and
spots out-of-domain requests (CLINC150 val, domain level: TF-IDF LR 96.9% raw accuracy
but 12% OOS recall untuned; nearest-neighbour similarity alone tops out ~95/80):

* **which domain** - the average of two probability models: a word+char TF-IDF logistic
  regression over domains, and a logistic regression over MiniLM embeddings whose classes
  are *pseudo-intents* (k-means clusters inside each domain, probabilities summed back
  per domain). Domains are unions of unrelated intents, so a linear model over
  embeddings needs the sub-structure: pseudo-intents lift it from 94.8% to 98.1% with
  all of CLINC150's train; with a few examples an intent, clusters of ~5 examples lift
  the classifier from 92.5 to 94.5% raw on a train split (ClassifierParams).
* **whether any domain** - the mean cosine similarity of the query to its ``k`` nearest
  examples of each domain, mapped through a logistic ``g(s) = 1/(1+exp(-(s-c)/w))``.
  Exact k-NN runs only for the ``knn_domains`` most probable domains (contiguous slices
  of the stored vectors); the rest use their nearest pseudo-intent centroid.

The request path avoids sklearn's per-call overhead: TF-IDF features are computed from
the fitted vectorizers' analyzers, vocabularies and idf and multiplied straight into the
LR weights (``FastTfidf``); a decision costs ~0.2-0.5 ms on top of encoding (~1.6 ms
for a short request with the int8 encoder on one core).

``scores[d] = p[d] * g(sim[d])``; ``best = argmax p``; ``confidence = scores[best]``. A
request far from every example gets a low confidence however peaked ``p`` is, which is
what lets a threshold escalate out-of-domain traffic.

**Out-of-domain examples** (optional ``negatives``: requests that belong to none of the
specialists) add two things. Both linear models get one extra class, "none of them"
(k-means pseudo-intents of the negatives in the embedding LR); its probability is not
renormalised away, so ``p`` over the domains sums to ``1 - p(none)``. And the query's
k-NN similarity to the negatives is compared with its similarity to ``best``:
``scores *= 1/(1+exp((sim_neg - sim[best] - m)/w))``, so a request closer to a known
out-of-domain example than to its domain loses confidence. With no negatives neither
runs and the classifier is exactly the one above.

Without the embedding model (not installed, or ``embed=False``) the same structure runs
on TF-IDF alone: the LR gives ``p`` and TF-IDF cosine gives ``sim``. It is weaker, but
keeps the router and unit tests working on a machine without the weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from slmfleet.api.routerconfig import DomainConfig

from .classifier_params import ClassifierParams
from .classifier_parts import domain_texts, fit_quietly, g, pseudo_intents, softmax, topk_mean
from .classifier_parts import lr as new_lr
from .embed import EmbeddingUnavailable, Encoder, default_encoder
from .embedcache import clear_embedding_cache, embed_cached
from .tfidf import FastTfidf, held_out_familiarity, tfidf_logits, tfidf_scores

log = logging.getLogger(__name__)

__all__ = [
    "ClassifierParams",
    "DomainClassifier",
    "RouteScores",
    "clear_embedding_cache",
    "domain_texts",
]


@dataclass(frozen=True)
class RouteScores:
    """One routing decision's evidence."""

    best: str | None
    """Specialist id with the highest domain probability; None only when there is nothing
    to route (empty text, no domains). The caller applies its min_confidence."""
    confidence: float
    """0..1: probability of ``best`` times how close the text is to its examples."""
    scores: dict[str, float] = field(default_factory=dict)
    """The same product for every specialist id (inputs to cost-aware choice)."""

    def accepted(self, min_confidence: float) -> str | None:
        """``best`` when confident enough, else None (escalate / fall back)."""
        return self.best if self.best is not None and self.confidence >= min_confidence else None


class DomainClassifier:
    """Scores a request against every specialist's domain; see the module docstring."""

    def __init__(self) -> None:  # use fit()
        self.ids: list[str] = []
        self.params = ClassifierParams()
        self.encoder: Encoder | None = None
        self._word: TfidfVectorizer | None = None
        self._char: TfidfVectorizer | None = None
        self._tf_lr: LogisticRegression | None = None
        self._tf_w: tuple[np.ndarray, np.ndarray] = (np.zeros((0, 0)), np.zeros((0, 0)))
        self._tf_b = np.zeros(0, dtype=np.float32)
        self._tf_fast: list[FastTfidf] = []
        self._tf_rows: sparse.csr_matrix | None = None  # TF-IDF of the texts (TF-IDF-only sim)
        self._emb_rows: np.ndarray | None = None  # (n_texts, dim), grouped by domain
        self._emb_w: np.ndarray | None = None  # pseudo-intent LR: (dim, n_clusters)
        self._emb_b: np.ndarray | None = None
        self._cluster_domain: np.ndarray | None = None  # cluster -> domain index
        self._centroids: np.ndarray | None = None  # (dim, n_clusters) unit pseudo-intent means
        self._centroid_domain = np.zeros(0, dtype=np.int64)  # centroid column -> domain
        self._bounds = np.zeros(1, dtype=np.int64)
        self._empty: list[str] = []
        self._n_neg = 0  # negatives: stored after the domains' rows (TF-IDF and embedding)
        self.texts: list[str] = []
        """What was fitted: the domains' texts by ``bounds``, then the negatives (the
        staged path's static stage fits on the same)."""
        self.familiar_floor = 0.0
        """The cheap stage decides only for requests at least this familiar (see
        ClassifierParams.cheap_familiarity)."""

    @property
    def all_ids(self) -> list[str]:
        """Every specialist id, those without domain text (never chosen) included."""
        return [*self.ids, *self._empty]

    @property
    def uses_embeddings(self) -> bool:
        return self.encoder is not None

    # -- fitting ------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        domains: Mapping[str, DomainConfig],
        *,
        encoder: Encoder | None = None,
        embed: bool = True,
        params: ClassifierParams | None = None,
        negatives: Sequence[str] = (),
    ) -> DomainClassifier:
        """Learn from ``{specialist id: DomainConfig}``.

        ``encoder`` defaults to the packaged all-MiniLM-L6-v2; when that is not installed
        (or ``embed=False``) the classifier falls back to TF-IDF only and says so in the
        log. Domains with no text at all are kept but can never be chosen.

        ``negatives``: example requests that belong to none of the domains. They only
        lower confidence (an extra class and a k-NN factor, see the module docstring);
        ``best`` is still a domain. Texts that are also a domain's text are ignored.
        """
        self = cls()
        self.params = p = params or ClassifierParams()
        if embed and encoder is None:
            try:
                encoder = default_encoder()
            except EmbeddingUnavailable as e:
                log.warning("domain classifier falls back to TF-IDF only: %s", e)
        self.encoder = encoder if embed else None
        per_domain = {sid: domain_texts(d) for sid, d in domains.items()}
        self.ids = [sid for sid, t in per_domain.items() if t]
        empty = [sid for sid, t in per_domain.items() if not t]
        if empty:
            log.warning("specialists with no domain text cannot be routed to: %s", empty)
        self._empty = empty
        texts = [t for sid in self.ids for t in per_domain[sid]]
        sizes = [len(per_domain[sid]) for sid in self.ids]
        self._bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        if not texts:
            return self
        y = np.repeat(np.arange(len(self.ids)), sizes)
        own = set(texts)
        neg = [t for t in dict.fromkeys(n.strip() for n in negatives) if t and t not in own]
        self._n_neg = len(neg)
        n_cls = len(self.ids) + (1 if neg else 0)
        weight = None
        if neg:
            texts = texts + neg
            y = np.concatenate([y, np.full(len(neg), len(self.ids))])
            weight = np.ones(len(y))
            weight[-len(neg) :] = p.negative_weight

        self.texts = texts
        big = len(texts) >= 1000
        self._word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32)
        self._char = TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=(2, 5),
            sublinear_tf=True,
            min_df=2 if big else 1,
            dtype=np.float32,
        )
        x = sparse.hstack([self._word.fit_transform(texts), self._char.fit_transform(texts)])
        x = x.tocsr()
        if n_cls > 1:
            self._tf_lr = fit_quietly(new_lr(p.lr_c), x, y, weight)
            # Dense per-block weights: scoring one request is then two sparse-dense
            # products, skipping sparse.hstack and predict_proba (~1 ms per request).
            w = self._tf_lr.coef_.T.astype(np.float32)
            n_word = len(self._word.vocabulary_)
            self._tf_w = (np.ascontiguousarray(w[:n_word]), np.ascontiguousarray(w[n_word:]))
            self._tf_b = self._tf_lr.intercept_.astype(np.float32)
            self._tf_fast = [
                FastTfidf(self._word, self._tf_w[0]),
                FastTfidf(self._char, self._tf_w[1]),
            ]
            if p.cheap_familiarity > 0:
                held = held_out_familiarity(self._word, texts[: len(texts) - self._n_neg])
                self.familiar_floor = float(np.quantile(held, p.cheap_familiarity))
        if self.encoder is None:
            # Row-normalise the stacked word+char vectors so a dot product is a cosine.
            norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel()
            self._tf_rows = sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ x
            self._tf_rows = sparse.csr_matrix(self._tf_rows.T)  # (features, n) for q @ rows
            return self

        emb = embed_cached(self.encoder, texts)
        self._emb_rows = np.ascontiguousarray(emb)
        if n_cls > 1:
            labels, owner = pseudo_intents(emb, self._bounds, self._n_neg, p)
            lr = fit_quietly(new_lr(p.lr_c), emb, labels, weight)
            self._emb_w = np.ascontiguousarray(lr.coef_.T.astype(np.float32))
            self._emb_b = lr.intercept_.astype(np.float32)
            self._cluster_domain = owner[lr.classes_]
            cent = np.zeros((len(owner), emb.shape[1]), np.float32)
            np.add.at(cent, labels, emb)
            cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
            keep = owner < len(self.ids)  # the negatives' clusters are not a domain's
            self._centroids = np.ascontiguousarray(cent[keep].T)
            self._centroid_domain = owner[keep]
        return self

    # -- prediction ---------------------------------------------------------------------
    def tfidf_probabilities(self, text: str) -> np.ndarray | None:
        """The TF-IDF LR's probability of each domain (``ids`` order; the negatives'
        class, if any, left out so the domains sum to 1 - p(none)), or None when there
        is no LR (a single domain) or no text."""
        r = self.tfidf_signals(text)
        return None if r is None else r[0]

    def tfidf_signals(self, text: str) -> tuple[np.ndarray, float] | None:
        """(``tfidf_probabilities``, the text's familiarity: the share of its words the
        examples' vocabulary knows), or None as ``tfidf_probabilities``."""
        if self._tf_lr is None or not text.strip():
            return None
        logits, familiar = tfidf_scores(self._tf_fast, self._tf_b, text)
        logits = logits[None, :]
        if logits.shape[1] == 1:  # binary LR: one logit for the second class
            logits = np.hstack([np.zeros_like(logits), logits])
        return softmax(logits)[0, : len(self.ids)], familiar

    def predict(self, text: str) -> RouteScores:
        """Score one request; ``best`` is set whenever there is text and a domain."""
        return self.predict_many([text])[0]

    def predict_many(self, texts: Sequence[str]) -> list[RouteScores]:
        """Score several requests at once (batch embedding); same result as predict."""
        zero = {sid: 0.0 for sid in [*self.ids, *self._empty]}
        live = [i for i, t in enumerate(texts) if t and t.strip()]
        out = [RouteScores(None, 0.0, dict(zero)) for _ in texts]
        if not live or not self.ids:
            return out
        batch = [texts[i] for i in live]
        prob, sim, center, sim_neg = self._signals(batch)
        scores = prob * g(sim, center, self.params.sim_width)
        best = prob.argmax(axis=1)
        if sim_neg is not None and self.params.negative_width > 0:
            gap = sim_neg - sim[np.arange(len(batch)), best] - self.params.negative_margin
            scores *= 1.0 / (1.0 + np.exp(gap / self.params.negative_width))[:, None]
        for r, i in enumerate(live):
            sc = dict(zero)
            sc.update({sid: float(s) for sid, s in zip(self.ids, scores[r], strict=True)})
            b = int(best[r])
            out[i] = RouteScores(self.ids[b], float(scores[r, b]), sc)
        return out

    def _signals(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, float, np.ndarray | None]:
        """(probabilities, similarities, g's center, similarity to the negatives): the
        first two (len(texts), n_domains), the last (len(texts),) or None without
        negatives."""
        p = self.params
        n_dom = len(self.ids)
        lo = int(self._bounds[-1])
        neg = slice(lo, lo + self._n_neg)
        assert self._word is not None and self._char is not None
        if self._tf_lr is not None:
            logits = np.stack([tfidf_logits(self._tf_fast, self._tf_b, t) for t in texts])
            if logits.shape[1] == 1:  # binary LR: one logit for the second class
                logits = np.hstack([np.zeros_like(logits), logits])
            p_tf = softmax(logits)
        else:
            p_tf = np.ones((len(texts), 1), np.float32)
        if self.encoder is None:
            assert self._tf_rows is not None
            xw, xc = self._word.transform(texts), self._char.transform(texts)
            x = sparse.hstack([xw, xc]).tocsr()
            norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel()
            sims = np.asarray((x @ self._tf_rows).todense(), dtype=np.float32)
            sims /= np.maximum(norms, 1e-12)[:, None]
            sim = topk_mean(sims, self._bounds, p.knn_k)
            if not self._n_neg:
                return p_tf, sim, p.tfidf_sim_center, None
            s_neg = topk_mean(sims[:, neg], np.array([0, self._n_neg]), p.knn_k)[:, 0]
            return p_tf[:, :n_dom], sim, p.tfidf_sim_center, s_neg

        assert self._emb_rows is not None
        q = (
            self.encoder.encode_one(texts[0])[None, :]
            if len(texts) == 1
            else self.encoder.encode(texts)
        )
        if n_dom == 1 and not self._n_neg:
            prob = np.ones((len(texts), 1), np.float32)
            sim = topk_mean(q @ self._emb_rows.T, self._bounds, p.knn_k)
            return prob, sim, p.sim_center, None
        assert self._emb_w is not None and self._emb_b is not None
        assert self._cluster_domain is not None and self._centroids is not None
        e = softmax(q @ self._emb_w + self._emb_b)
        p_emb = np.zeros((len(texts), p_tf.shape[1]), np.float32)
        np.add.at(p_emb.T, self._cluster_domain, e.T)
        prob = p.tfidf_weight * p_tf + (1.0 - p.tfidf_weight) * p_emb
        s_neg = None
        if self._n_neg:  # drop "none of them": it lowers the domains' p, never wins
            prob = prob[:, :n_dom]
            block = q @ self._emb_rows[neg].T
            s_neg = topk_mean(block, np.array([0, self._n_neg]), p.knn_k)[:, 0]
        # Cheap similarity for every domain: its nearest pseudo-intent centroid ...
        csim = q @ self._centroids
        sim = np.full((len(texts), n_dom), -1.0, np.float32)
        np.maximum.at(sim.T, self._centroid_domain, csim.T)
        # ... and exact k-NN over the stored examples of the few domains that can win.
        top = np.argsort(-prob, axis=1)[:, : p.knn_domains]
        for r in range(len(texts)):
            for d in top[r]:
                block = self._emb_rows[self._bounds[d] : self._bounds[d + 1]]
                sd = block @ q[r]
                kk = min(p.knn_k, len(sd))
                sim[r, d] = np.partition(sd, len(sd) - kk)[-kk:].mean()
        return prob, sim, p.sim_center, s_neg
