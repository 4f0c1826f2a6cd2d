"""The TF-IDF logistic regression on the request path, without sklearn's per-call cost.

sklearn's ``transform`` + ``predict_proba`` cost ~1 ms a call in validation and
sparse-matrix assembly; a request only needs ``tfidf(text) @ W + b``: a few dozen
vocabulary lookups (~65 us for a CLINC-sized query, ~330 us for 400 characters).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer


class FastTfidf:
    """One fitted TfidfVectorizer's transform for a single text, fused with the LR's weights.

    sklearn's ``transform`` costs ~1 ms a call in validation and sparse-matrix assembly;
    the request path only needs ``tfidf(text) @ W``, i.e. a few dozen vocabulary lookups.
    Same analyzer, sublinear tf, idf and L2 norm as the vectorizer (fit checks it with
    ``sublinear_tf=True, norm='l2'``).

    A ``char_wb`` vectorizer's n-grams never cross a word, so its features are the sum of
    each word's: those are remembered per word (``WORD_MEMO`` words at most), which turns
    ~150 n-gram slices and lookups for a short request into a dozen dictionary hits
    (words repeat across requests). Counts and order are exactly sklearn's."""

    __slots__ = ("analyze", "idf", "memo", "ngram_range", "preprocess", "vocab", "w")

    def __init__(self, vec: TfidfVectorizer, w: np.ndarray) -> None:
        assert vec.sublinear_tf and vec.norm == "l2" and vec.use_idf
        self.analyze = vec.build_analyzer()
        self.vocab: dict[str, int] = vec.vocabulary_
        self.idf = vec.idf_.astype(np.float32)
        self.w = w
        by_word = vec.analyzer == "char_wb" and vec.input == "content"
        self.preprocess = vec.build_preprocessor() if by_word else None
        self.ngram_range: tuple[int, int] = vec.ngram_range
        self.memo: dict[str, tuple[int, ...]] = {}

    def word_features(self, word: str) -> tuple[int, ...]:
        """The vocabulary indices of one word's char_wb n-grams (as sklearn makes them)."""
        hit = self.memo.get(word)
        if hit is not None:
            return hit
        vocab = self.vocab
        w = " " + word + " "
        n_w = len(w)
        found: list[int] = []
        lo, hi = self.ngram_range
        for n in range(lo, hi + 1):
            for off in range(max(1, n_w - n + 1)):
                j = vocab.get(w[off : off + n])
                if j is not None:
                    found.append(j)
            if n_w <= n:  # a short word counts once
                break
        out = tuple(found)
        if len(self.memo) >= WORD_MEMO:
            self.memo.clear()
        self.memo[word] = out
        return out


#: Words whose char_wb features FastTfidf remembers (then it starts over).
WORD_MEMO = 50_000


def tfidf_logits(parts: list[FastTfidf], bias: np.ndarray, text: str) -> np.ndarray:
    return tfidf_scores(parts, bias, text)[0]


def tfidf_scores(parts: list[FastTfidf], bias: np.ndarray, text: str) -> tuple[np.ndarray, float]:
    """(the LR's logits, the text's *familiarity*): the share of its words (the first
    part's unigrams) that the vocabulary knows; 0.0 for a text without words."""
    out = bias.copy()
    familiar = 0.0
    for k, f in enumerate(parts):
        counts: dict[int, int] = {}
        if f.preprocess is not None:  # char_wb: per word, remembered
            for word in f.preprocess(text).split():
                for j in f.word_features(word):
                    counts[j] = counts.get(j, 0) + 1
            _add(out, f, counts)
            continue
        vocab = f.vocab
        words = known = 0
        for tok in f.analyze(text):
            j = vocab.get(tok)
            if k == 0 and " " not in tok:
                words += 1
                known += j is not None
            if j is not None:
                counts[j] = counts.get(j, 0) + 1
        if k == 0 and words:
            familiar = known / words
        _add(out, f, counts)
    return out, familiar


def _add(out: np.ndarray, f: FastTfidf, counts: dict[int, int]) -> None:
    """``out += tfidf(counts) @ W`` (sublinear tf, idf, L2 norm)."""
    if not counts:
        return
    idx = np.fromiter(counts.keys(), np.int64, len(counts))
    v = (1.0 + np.log(np.fromiter(counts.values(), np.float32, len(counts)))) * f.idf[idx]
    v /= np.sqrt(np.dot(v, v))
    out += v @ f.w[idx]


def held_out_familiarity(vec: TfidfVectorizer, texts: Sequence[str]) -> np.ndarray:
    """Per text, its familiarity to the *other* texts: the share of its words that occur
    in at least one other text. What a new request from the same distribution would
    score against a vocabulary learned from these texts (leave-one-out)."""
    analyze = vec.build_analyzer()
    words = [[t for t in analyze(x) if " " not in t] for x in texts]
    df = Counter(w for ws in words for w in set(ws))
    return np.array([np.mean([df[w] >= 2 for w in ws]) if ws else 0.0 for ws in words])
