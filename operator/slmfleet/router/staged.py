"""The router's classifier: a cheap TF-IDF stage and a static-embedding stage in front
of the full DomainClassifier.

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
* ``quick(text)`` - the cheap stage, then (when it did not decide) the *static* stage
  (static_stage.py: a linear model over static embeddings distilled from the same
  MiniLM, ~30 us, decides when confident, similar enough to the chosen domain's examples
  and familiar): ``(scores, "cheap" | "static")`` or None. A static decision's scores
  are its averaged probabilities, so its confidence is at least ``static_cut``.
* ``predict_staged(texts)`` - ``quick`` where it was not tried yet, then the full
  classifier (TF-IDF + embeddings + k-NN similarity, batched) for the uncertain rest.

The static stage exists when the full classifier runs on ``MiniLMEncoder`` (the table
is distilled from its weights, static_embed.py) and ``static_cut`` is at most 1;
otherwise ``quick`` is the cheap stage alone.

Every text is first clipped to ``ClassifierParams.max_tokens`` tokens, which bounds the
cost of a request whatever its length. ``classifying.ClassifierService`` runs
``quick`` inline and the rest on its worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from slmfleet.api.routerconfig import DomainConfig

from .classify import ClassifierParams, DomainClassifier, RouteScores
from .embed import Encoder
from .static_embed import StaticEmbedder
from .static_stage import StaticStage
from .tfidf import held_out_familiarity

log = logging.getLogger(__name__)


def static_stage_for(
    full: DomainClassifier, embedder: StaticEmbedder | None = None
) -> tuple[StaticStage | None, float]:
    """(the static stage fitted on ``full``'s texts, its familiarity floor), or (None, 0)
    when it is off (``static_cut`` > 1), ``full`` has no MiniLM encoder to distil from
    (and no ``embedder`` is given) or there is nothing to choose between."""
    p = full.params
    if p.static_cut > 1 or full._word is None:
        return None, 0.0
    if embedder is None:
        enc: Any = full.encoder
        if enc is None or not hasattr(enc, "_forward") or not hasattr(enc, "_tok"):
            return None, 0.0
        embedder = StaticEmbedder.of(enc, dims=p.static_dims)
    stage = StaticStage.fit(embedder, full.texts, full._bounds, full._n_neg, p)
    floor = 0.0
    if stage is not None and p.static_familiarity > 0:
        held = held_out_familiarity(full._word, full.texts[: int(full._bounds[-1])])
        floor = float(np.quantile(held, p.static_familiarity))
    return stage, floor


class StagedClassifier:
    def __init__(
        self,
        full: DomainClassifier,
        static: StaticStage | None = None,
        static_familiar_floor: float = 0.0,
    ) -> None:
        self.full = full
        self.cut = full.params.cheap_cut
        self.max_tokens = full.params.max_tokens
        self.static = static
        self.static_familiar_floor = static_familiar_floor

    @classmethod
    def fit(
        cls,
        domains: Mapping[str, DomainConfig],
        *,
        encoder: Encoder | None = None,
        embed: bool = True,
        params: ClassifierParams | None = None,
        negatives: Sequence[str] = (),
        static: StaticEmbedder | None = None,
    ) -> StagedClassifier:
        """``DomainClassifier.fit`` (same arguments) and the static stage on its texts
        (``static``: the embedder to use, default the one distilled from its encoder)."""
        full = DomainClassifier.fit(
            domains, encoder=encoder, embed=embed, params=params, negatives=negatives
        )
        return cls(full, *static_stage_for(full, static))

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
        r = self.quick(text, static=False)
        return None if r is None else r[0]

    def quick(self, text: str, *, static: bool = True) -> tuple[RouteScores, str] | None:
        """The cheap stage's decision, else the static stage's, else None (module
        docstring); the TF-IDF signals are computed once for both."""
        r = self.full.tfidf_signals(text)
        if r is None:
            return None
        p, familiar = r
        b = int(np.argmax(p))
        if p[b] >= self.cut and familiar >= self.full.familiar_floor:
            return self._scores(p, b), "cheap"
        if not static or self.static is None:
            return None
        d = self.static.decide(text, p, familiar, self.static_familiar_floor)
        return None if d is None else (self._scores(d[1], d[0]), "static")

    def _scores(self, p: np.ndarray, b: int) -> RouteScores:
        scores = dict.fromkeys(self.full.all_ids, 0.0)
        scores.update({sid: float(v) for sid, v in zip(self.full.ids, p, strict=True)})
        return RouteScores(self.full.ids[b], float(p[b]), scores)

    def predict_staged(
        self, texts: Sequence[str], cheap_done: Sequence[bool] | None = None
    ) -> list[tuple[RouteScores, str]]:
        """(scores, "cheap" | "static" | "full") per text; ``cheap_done[i]``: ``quick``
        already ran for text i (inline, on the event loop) and did not decide."""
        clipped = [self.clip(t) for t in texts]
        out: list[tuple[RouteScores, str] | None] = [None] * len(texts)
        rest: list[int] = []
        for i, t in enumerate(clipped):
            q = None if (cheap_done and cheap_done[i]) else self.quick(t)
            if q is not None:
                out[i] = q
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
