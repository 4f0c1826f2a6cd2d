"""Familiarity: the share of a text's words a TF-IDF vocabulary knows, and each
example's familiarity to the other examples (what the cheap stage's floor is made of)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from slmfleet.router.tfidf import FastTfidf, held_out_familiarity, tfidf_logits, tfidf_scores


def vectorizer(texts: list[str]) -> TfidfVectorizer:
    return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(texts)


@pytest.mark.parametrize(
    ("texts", "want"),
    [
        # each word also in another text -> 1.0; none -> 0.0; half -> 0.5
        (["check my balance", "my balance check"], [1.0, 1.0]),
        (["check my balance", "book hotel flight"], [0.0, 0.0]),
        (["check my balance", "check my hotel", "flight"], [2 / 3, 2 / 3, 0.0]),
        # repeats inside one text do not make a word familiar; no words -> 0.0
        (["balance balance", "hotel", "!!"], [0.0, 0.0, 0.0]),
    ],
)
def test_held_out_familiarity(texts, want):
    got = held_out_familiarity(vectorizer([t for t in texts if t != "!!"] or ["x"]), texts)
    np.testing.assert_allclose(got, want)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("check my balance", 1.0),
        ("check my flight please", 0.75),  # bigrams do not count, only words
        ("completely unknown words", 0.0),
        ("?!", 0.0),  # no words at all
    ],
)
def test_familiarity_of_a_request(text, want):
    vec = vectorizer(["check my balance", "book a flight"])
    w = np.random.default_rng(0).normal(size=(len(vec.vocabulary_), 2)).astype(np.float32)
    parts = [FastTfidf(vec, w)]
    logits, familiar = tfidf_scores(parts, np.zeros(2, np.float32), text)
    assert familiar == pytest.approx(want)
    np.testing.assert_array_equal(logits, tfidf_logits(parts, np.zeros(2, np.float32), text))
