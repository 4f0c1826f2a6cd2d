"""The stand-ins of the other backends: the TensorRT-LLM contract's word lists, the
ONNX classifier the tests build (and the config it is served with)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slmfleet.local.models import BILLING_EXAMPLES, SHIPPING_EXAMPLES, StandIn
from slmfleet.local.models import standin as s
from slmfleet.local.models.onnx_classifier import (
    build_classifier,
    naive_bayes,
    onnxruntime_like_config,
    write_onnx_classifier,
)
from slmfleet.render.triton import model_repository_files
from slmfleet.router.embed import model_dir


@pytest.mark.parametrize(
    ("text", "stop", "bad", "expected"),
    [
        ("refund: This is a refund request.", [], [], "refund: This is a refund request."),
        ("refund: This is a refund request.", ["refund request"], [], "refund: This is a "),
        ("a b c", ["x", "b"], [], "a "),
        ("a Darn b darn.", [], ["darn"], "a b darn."),  # whole words only
        ("a b", [""], [""], "a b"),
    ],
)
def test_word_lists(text, stop, bad, expected):
    assert s.apply_word_lists(text, stop, bad) == expected


def test_trtllm_stand_in_is_served_with_the_bls_config():
    stand_in = StandIn("domain", {"examples": json.dumps(BILLING_EXAMPLES)}, "tensorrtllm")
    config = model_repository_files("trt", stand_in.model_spec())["config.pbtxt"]
    assert 'backend: "python"' in config and 'name: "max_tokens"' in config
    assert "count: 1" in config  # one BLS instance for a CPU stand-in
    assert 'name: "confidence"' not in config  # the BLS has no confidence output


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_padding()
    return tok


def _run(onnx_bytes: bytes, tok, text: str) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    enc = tok.encode(text)
    feed = {
        "input_ids": np.array([enc.ids], dtype=np.int64),
        "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
        "token_type_ids": np.array([enc.type_ids], dtype=np.int64),
    }
    return sess.run(["logits"], feed)[0][0]


def test_naive_bayes_onnx_classifier_classifies_unseen_text(tokenizer):
    examples = {**BILLING_EXAMPLES, **SHIPPING_EXAMPLES}
    labels, table, bias = naive_bayes(
        examples, lambda t: tokenizer.encode(t).ids, tokenizer.get_vocab_size()
    )
    onnx_bytes = build_classifier(table, bias)
    for text, label in [
        ("I was charged two times, refund it", "refund"),
        ("the box arrived crushed, the item is broken", "damaged"),
        ("where can I get my invoice", "invoice"),
    ]:
        logits = _run(onnx_bytes, tokenizer, text)
        assert labels[int(np.argmax(logits))] == label, (
            text,
            dict(zip(labels, logits, strict=True)),
        )
    # The graph computes exactly naive Bayes' joint log-likelihoods.
    ids = tokenizer.encode("track my parcel").ids
    expected = table[ids].sum(axis=0) + bias
    np.testing.assert_allclose(_run(onnx_bytes, tokenizer, "track my parcel"), expected, 1e-5)


def test_served_config_is_what_onnxruntime_would_auto_complete(tmp_path):
    labels = write_onnx_classifier(
        tmp_path / "artifact",
        tmp_path / "repo",
        "intent",
        {"a": ["alpha"], "b": ["beta"]},
        model_dir() / "tokenizer.json",
    )
    assert labels == ["a", "b"]
    art = tmp_path / "artifact"
    assert {p.name for p in art.iterdir()} == {"model.onnx", "tokenizer.json", "config.json"}
    assert json.loads((art / "config.json").read_text())["id2label"] == {"0": "a", "1": "b"}
    config = (tmp_path / "repo" / "intent" / "config.pbtxt").read_text()
    assert config == onnxruntime_like_config("intent", (art / "model.onnx").read_bytes())
    assert "max_batch_size: 8" in config and "decoupled" not in config
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert f'name: "{name}"\n  data_type: TYPE_INT64\n  dims: [ -1 ]' in config
    assert 'name: "logits"\n  data_type: TYPE_FP32\n  dims: [ 2 ]' in config
    assert (tmp_path / "repo" / "intent" / "1" / "model.onnx").is_file()
