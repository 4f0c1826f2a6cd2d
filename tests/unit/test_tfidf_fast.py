"""FastTfidf against sklearn: the request path's TF-IDF logits equal transform() @ W + b,
word n-grams and char_wb n-grams alike (the latter remembered per word)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from slmfleet.router import tfidf
from slmfleet.router.tfidf import FastTfidf, tfidf_logits

FIT = [
    "what is my account balance",
    "transfer money to savings",
    "book a flight to paris",
    "is my flight delayed",
    "set an alarm for 7am",
    "a b cd",
]
TEXTS = [
    "what's the balance of my savings account?",
    "Book  a\tflight\nto Paris, please",
    "a",  # shorter than every n: counted once
    "ab",  # as long as the smallest n
    "zzzz unknown qqq",
    "",
    "   ",
    "ÉTÉ café déjà vu",
    "alarm alarm alarm 7am 7am",
    "x" * 40,
]


@pytest.mark.parametrize(
    "vec",
    [
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True),
    ],
    ids=["word", "char_wb-2-5", "char_wb-1-3"],
)
@pytest.mark.parametrize("text", TEXTS)
def test_logits_equal_sklearn(vec, text):
    vec = vec.fit(FIT)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(len(vec.vocabulary_), 3)).astype(np.float32)
    b = rng.normal(size=3).astype(np.float32)
    part = FastTfidf(vec, w)
    want = (vec.transform([text]) @ w)[0] + b
    for _ in range(2):  # computed, then from the per-word memo
        np.testing.assert_allclose(tfidf_logits([part], b, text), want, rtol=1e-5, atol=1e-5)


def test_the_word_memo_is_bounded(monkeypatch):
    monkeypatch.setattr(tfidf, "WORD_MEMO", 3)
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3), sublinear_tf=True).fit(FIT)
    part = FastTfidf(vec, np.ones((len(vec.vocabulary_), 1), np.float32))
    for word in ["one", "two", "three", "four", "five"]:
        part.word_features(word)
        assert len(part.memo) <= 3
    assert part.word_features("one") == part.word_features("one")
