"""The static-embedding stage's pure parts: token weights, sentence vectors, the
decision rule, held-out similarity, the table's cache key and cache directory, and the
table's distil-once cache (a tiny stand-in network: the recipe, not MiniLM)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from slmfleet.router import static_embed as se
from slmfleet.router.static_stage import held_out_similarity, static_decides


@pytest.mark.parametrize(
    ("id_lists", "want"),
    [
        # id 0 in both examples, id 1 in one, ids 2-3 in none: n=2
        (
            [[0, 1], [0, 0]],
            [1 + math.log(3 / 3), 1 + math.log(3 / 2), 1 + math.log(3), 1 + math.log(3)],
        ),
        ([], [1 + math.log(1)] * 4),  # no examples: every id alike
        ([[3]], [1 + math.log(2)] * 3 + [1.0]),
    ],
)
def test_idf_weights_count_examples_not_occurrences(id_lists, want):
    assert se.token_weights(id_lists, 4, "idf") == pytest.approx(want)


def test_no_weighting_and_unknown_weighting():
    assert se.token_weights([[1, 2]], 3, "none").tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="weighting"):
        se.token_weights([[1]], 3, "zipf")  # type: ignore[arg-type]


TABLE = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.float16)


@pytest.mark.parametrize(
    ("weights", "ids", "want"),
    [
        ([1, 1, 1, 1], [0], [1.0, 0.0]),
        ([1, 1, 1, 1], [0, 1], [math.sqrt(0.5), math.sqrt(0.5)]),
        ([3, 1, 1, 1], [0, 1], [3 / math.sqrt(10), 1 / math.sqrt(10)]),  # weighted
        ([1, 1, 1, 1], [0, 0, 1], [2 / math.sqrt(5), 1 / math.sqrt(5)]),  # repeats count
        ([1, 1, 1, 1], [], None),  # nothing to embed
        ([1, 1, 1, 1], [3], None),  # only a zero vector
    ],
)
def test_sentence_vector_is_the_normalised_weighted_mean(weights, ids, want):
    v = se.sentence_vector(TABLE, np.array(weights, np.float32), ids)
    if want is None:
        assert v is None
    else:
        assert v == pytest.approx(want, abs=1e-6)


GUARDS = {"cut": 0.7, "sim_floor": 0.4, "familiar_floor": 0.5}


@pytest.mark.parametrize(
    ("p", "sim", "fam", "neg", "agrees", "need", "want"),
    [
        (0.9, 0.6, 1.0, None, True, True, True),
        (0.7, 0.4, 0.5, None, True, True, True),  # every bound inclusive
        (0.69, 0.6, 1.0, None, True, True, False),  # not confident
        (0.9, 0.39, 1.0, None, True, True, False),  # too far from the domain's examples
        (0.9, 0.6, 0.4, None, True, True, False),  # too unfamiliar
        (0.9, 0.6, 1.0, 0.5, True, True, True),  # closer to the domain than to negatives
        (0.9, 0.6, 1.0, 0.6, True, True, False),  # as close to a known out-of-domain one
        (0.9, 0.6, 1.0, None, False, True, False),  # TF-IDF prefers another domain
        (0.9, 0.6, 1.0, None, False, False, True),  # ... and agreement is not asked for
    ],
)
def test_static_decides_only_when_every_guard_passes(p, sim, fam, neg, agrees, need, want):
    got = static_decides(p, sim, fam, neg, agrees, **GUARDS, need_agreement=need)
    assert got is want


def test_held_out_similarity_leaves_each_row_out():
    rows = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [1, 0]], np.float32)
    bounds = np.array([0, 3, 4, 5])  # domain 0: rows 0-2; domains 1 and 2: one row each
    got = held_out_similarity(rows, bounds, k=1)
    # row 0's nearest other row is row 1 (cos 1); row 2's nearest is 0 or 1 (cos 0).
    assert got.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert held_out_similarity(rows, np.array([0, 3, 5]), k=2)[:3].tolist() == [0.5, 0.5, 0.0]


def test_cache_key_changes_with_any_weight_shape_dtype_recipe_or_dims():
    a, b = np.arange(6, dtype=np.float32), np.ones(3, np.float32)
    key = se.cache_key([a, b], "r1", 256)
    assert key == se.cache_key([a.copy(), b.copy()], "r1", 256)  # content, not identity
    a2 = a.copy()
    a2[5] += 1
    others = {
        se.cache_key([a2, b], "r1", 256),
        se.cache_key([a.reshape(2, 3), b], "r1", 256),
        se.cache_key([a.astype(np.float64), b], "r1", 256),
        se.cache_key([a, b], "r2", 256),
        se.cache_key([a, b], "r1", 128),
        se.cache_key([b, a], "r1", 256),
    }
    assert key not in others and len(others) == 6


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({"SLMFLEET_STATIC_CACHE": "/tmp/x", "XDG_CACHE_HOME": "/c"}, Path("/tmp/x")),
        ({"SLMFLEET_STATIC_CACHE": "", "HOME": "/h"}, None),  # explicitly nowhere
        ({"XDG_CACHE_HOME": "/c", "HOME": "/h"}, Path("/c/slmfleet/static")),
        ({"HOME": "/h"}, Path("/h/.cache/slmfleet/static")),
        ({}, None),
    ],
)
def test_cache_dir(env, want):
    assert se.cache_dir(env) == want


def test_pca_reduce_centres_and_keeps_the_leading_axes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) * np.array([10, 5, 1, 0.1, 0.01]) + 3.0
    y = se.pca_reduce(x, 2)
    assert y.shape == (200, 2) and np.allclose(y.mean(axis=0), 0.0, atol=1e-4)
    # Almost all variance is in the first two input axes, and PCA keeps it.
    assert y.var(axis=0).sum() == pytest.approx((x - x.mean(0))[:, :2].var(axis=0).sum(), rel=1e-3)


@dataclass
class _Layer:
    w: np.ndarray


class _Tok:
    """Ids 0-2 are [UNK], [CLS], [SEP]; the rest the words w3..w39."""

    VOCAB = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2} | {f"w{i}": i for i in range(3, 40)}

    def get_vocab_size(self) -> int:
        return 40

    def token_to_id(self, t: str) -> int:
        return self.VOCAB[t]

    def to_str(self) -> str:
        from tokenizers import Tokenizer, models, pre_tokenizers

        tok = Tokenizer(models.WordLevel(self.VOCAB, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        return tok.to_str()


class TinyEncoder:
    """The attributes load_table reads, over a fixed random 'network'."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dim, self.name, self._tok = 8, "tiny", _Tok()
        self._word = rng.normal(size=(40, 8)).astype(np.float32)
        self._layers = [_Layer(rng.normal(size=(8, 8)).astype(np.float32))]
        self.calls = 0

    def _forward(self, ids: np.ndarray, mask: None) -> np.ndarray:
        self.calls += 1
        x = np.tanh(self._word[ids] @ self._layers[0].w).mean(axis=1)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def fresh_tables():
    se._tables.clear()
    yield
    se._tables.clear()


def test_the_table_is_distilled_once_then_read_back(tmp_path, fresh_tables):
    enc = TinyEncoder()
    table = se.load_table(enc, dims=4, directory=tmp_path)
    assert table.shape == (40, 4) and table.dtype == np.float16
    assert enc.calls == math.ceil(40 / se.BATCH)
    (saved,) = tmp_path.glob("*.npy")
    assert np.array_equal(np.load(saved), table)
    assert se.load_table(enc, dims=4, directory=tmp_path) is table  # this process
    se._tables.clear()
    again = TinyEncoder()
    assert np.array_equal(se.load_table(again, dims=4, directory=tmp_path), table)
    assert again.calls == 0  # read from disk, not distilled
    # Other weights: another key, another table.
    other = se.load_table(TinyEncoder(seed=1), dims=4, directory=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not np.array_equal(other, table)


def test_an_unwritable_cache_keeps_the_table_in_memory(tmp_path, fresh_tables):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    enc = TinyEncoder()
    table = se.load_table(enc, dims=4, directory=blocker / "static")
    assert table.shape == (40, 4) and enc.calls == 1
    assert se.load_table(enc, dims=4, directory=blocker / "static") is table


def test_a_corrupt_cache_file_is_distilled_again(tmp_path, fresh_tables):
    enc = TinyEncoder()
    good = se.load_table(enc, dims=4, directory=tmp_path)
    (saved,) = tmp_path.glob("*.npy")
    saved.write_bytes(b"garbage")
    se._tables.clear()
    assert np.array_equal(se.load_table(TinyEncoder(), dims=4, directory=tmp_path), good)
    assert np.array_equal(np.load(saved), good)  # rewritten


def test_one_embedder_per_encoder_and_dims(tmp_path, fresh_tables, monkeypatch):
    monkeypatch.setenv("SLMFLEET_STATIC_CACHE", str(tmp_path))
    enc = TinyEncoder()
    a = se.StaticEmbedder.of(enc, dims=4)
    assert se.StaticEmbedder.of(enc, dims=4) is a and enc.calls == 1
    assert se.StaticEmbedder.of(enc, dims=3) is not a
    assert se.StaticEmbedder.of(TinyEncoder(), dims=4) is not a
    # Its sentences: the words' ids (no [CLS]/[SEP]), then the weighted mean of their rows.
    assert a.ids("w5 w7 nope") == [5, 7, 0]
    v = a.vectors([a.ids("w5 w7")], np.ones(40, np.float32))[0]
    want = a.table[5].astype(np.float32) + a.table[7]
    assert v == pytest.approx(want / np.linalg.norm(want), abs=1e-6)
