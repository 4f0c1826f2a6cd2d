"""The benchmark's side-by-side static embedding (benchmarks/_static_views.py): one id
space, each half its own table's weighted mean, the pair unit length."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _static_views import BothEmbedder, view

from slmfleet.router.static_embed import sentence_vector


class Table:
    def __init__(self, table: np.ndarray, words: dict[str, int]) -> None:
        self.table, self.words = table.astype(np.float16), words
        self.vocab, self.dim = table.shape

    def ids(self, text: str) -> list[int]:
        return [self.words[w] for w in text.split() if w in self.words]

    def ids_many(self, texts):
        return [self.ids(t) for t in texts]


A = Table(np.array([[1, 0], [0, 1], [1, 1]]), {"card": 0, "bank": 1, "fee": 2})
B = Table(np.array([[1, 0, 0], [0, 0, 1]]), {"card": 1, "trip": 0})


def test_ids_share_one_space():
    both = BothEmbedder(A, B)
    assert both.vocab == 5 and both.dim == 5
    assert both.ids_many(["card fee", "trip"]) == [[0, 2, 3 + 1], [3 + 0]]


def test_vector_is_both_means_side_by_side_at_unit_length():
    both = BothEmbedder(A, B)
    w = np.array([1.0, 1.0, 3.0, 1.0, 2.0], np.float32)
    ids = both.ids("card fee")
    v = both.vector(ids, w)
    want = np.concatenate(
        [sentence_vector(A.table, w[:3], [0, 2]), sentence_vector(B.table, w[3:], [1])]
    )
    np.testing.assert_allclose(v, want / np.sqrt(2), rtol=1e-6)
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-6)


def test_a_text_one_table_cannot_read_gets_a_zero_row():
    both = BothEmbedder(A, B)
    w = np.ones(5, np.float32)
    rows = both.vectors(both.ids_many(["bank", "card"]), w)
    assert not rows[0].any()  # "bank": no WordLlama-side id, no side-by-side vector
    assert np.linalg.norm(rows[1]) == pytest.approx(1.0, abs=1e-6)


def test_unknown_view_is_refused():
    with pytest.raises(ValueError, match="unknown view"):
        view("glove", None)
