"""The router's classifier: a cheap TF-IDF stage in front of the full DomainClassifier.

* ``cheap(text)`` - the TF-IDF logistic regression alone (~65 us for a short query).
  When its top domain's probability reaches ``ClassifierParams.cheap_cut`` *and* the
  text is familiar (the share of its words the examples' vocabulary knows is at least
  ``DomainClassifier.familiar_floor``, a low quantile of the examples' own held-out
  familiarity) it decides: ``best`` is that domain, the scores are the TF-IDF
  probabilities (so the confidence is at least the cut, above any sensible
  ``minConfidence``). Otherwise None. The familiarity check is what keeps an
  out-of-domain request that happens to use a domain's keywords from being routed by
  word statistics alone: with many examples, in-domain requests are almost always
  fully familiar and such requests are not.
* ``predict_staged(texts)`` - the cheap stage where it was not tried yet, then the full
  classifier (TF-IDF + embeddings + k-NN similarity, batched) for the uncertain rest.

Every text is first clipped to ``ClassifierParams.max_tokens`` tokens, which bounds the
cost of a request whatever its length. ``classifying.ClassifierService`` runs the
cheap stage inline and the rest on its worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .classify import DomainClassifier, RouteScores


class StagedClassifier:
    def __init__(self, full: DomainClassifier) -> None:
        self.full = full
        self.cut = full.params.cheap_cut
        self.max_tokens = full.params.max_tokens

    @property
    def ids(self) -> list[str]:
        return self.full.ids

    def clip(self, text: str) -> str:
        enc = self.full.encoder
        clip = getattr(enc, "clip", None)
        if clip is not None:
            return clip(text, self.max_tokens)
        limit = 6 * self.max_tokens  # TF-IDF only: characters, a few per token
        if len(text) <= limit:
            return text
        return text[: 2 * limit // 3] + " " + text[-(limit // 3) :]

    def cheap(self, text: str) -> RouteScores | None:
        """The TF-IDF stage's decision when it is confident and the text familiar enough,
        else None."""
        r = self.full.tfidf_signals(text)
        if r is None:
            return None
        p, familiar = r
        b = int(np.argmax(p))
        if p[b] < self.cut or familiar < self.full.familiar_floor:
            return None
        scores = dict.fromkeys(self.full.all_ids, 0.0)
        scores.update({sid: float(v) for sid, v in zip(self.full.ids, p, strict=True)})
        return RouteScores(self.full.ids[b], float(p[b]), scores)

    def predict_staged(
        self, texts: Sequence[str], cheap_done: Sequence[bool] | None = None
    ) -> list[tuple[RouteScores, str]]:
        """(scores, "cheap" | "full") per text."""
        clipped = [self.clip(t) for t in texts]
        out: list[tuple[RouteScores, str] | None] = [None] * len(texts)
        rest: list[int] = []
        for i, t in enumerate(clipped):
            r = None if (cheap_done and cheap_done[i]) else self.cheap(t)
            if r is not None:
                out[i] = (r, "cheap")
            else:
                rest.append(i)
        if rest:
            for i, r in zip(rest, self.full.predict_many([clipped[i] for i in rest]), strict=True):
                out[i] = (r, "full")
        return [o for o in out if o is not None]

    def predict_many(self, texts: Sequence[str]) -> list[RouteScores]:
        return [r for r, _ in self.predict_staged(texts)]

    def predict(self, text: str) -> RouteScores:
        return self.predict_staged([text])[0][0]
