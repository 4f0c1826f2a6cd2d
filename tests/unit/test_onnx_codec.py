"""The ONNX classifier codec (metadata -> tensors, probabilities -> label) and where its
tokenizer and labels come from (the model artifact)."""

from __future__ import annotations

import json
import math

import pytest
from tritonclient.grpc import service_pb2

from slmfleet.api.routerconfig import SpecialistConfig
from slmfleet.router.artifacts import (
    ArtifactReader,
    ArtifactUnavailable,
    artifact_path,
    labels_from_config,
)
from slmfleet.router.backends import Codecs
from slmfleet.router.errors import UpstreamError
from slmfleet.router.triton.codec import Piece
from slmfleet.router.triton.onnx_codec import (
    OnnxClassifierCodec,
    classifier_io,
    probabilities,
)
from slmfleet.router.triton.tensors import decode, encode


def meta(inputs, outputs, name="clf"):
    m = service_pb2.ModelMetadataResponse(name=name)
    for coll, specs in ((m.inputs, inputs), (m.outputs, outputs)):
        for n, dtype, shape in specs:
            t = coll.add()
            t.name, t.datatype = n, dtype
            t.shape.extend(shape)
    return m


BERT = [
    ("input_ids", "INT64", [-1, -1]),
    ("attention_mask", "INT64", [-1, -1]),
    ("token_type_ids", "INT64", [-1, -1]),
]
LOGITS = [("logits", "FP32", [-1, 3])]


class FakeTokenizer:
    def encode(self, text):
        ids = [101, *(len(w) for w in text.split()), 102]
        return ids, [1] * len(ids), [0] * len(ids)


@pytest.mark.parametrize(
    ("inputs", "outputs", "error"),
    [
        (BERT, LOGITS, None),
        (BERT[:2], LOGITS, None),  # DistilBERT-style: no token_type_ids
        ([("input_ids", "INT32", [-1])], [("probs", "FP32", [3])], None),
        (BERT[1:], LOGITS, "inputs must be input_ids"),
        ([*BERT, ("pixel_values", "FP32", [-1, 3])], LOGITS, "inputs must be input_ids"),
        ([("input_ids", "FP32", [-1, -1])], LOGITS, "INT64 or INT32"),
        (BERT, [("logits", "FP32", [-1, 4])], "4 classes but 3 labels"),
        (BERT, [("a", "FP32", [3]), ("b", "FP32", [3])], "no label-probability output"),
        (BERT, [("ids", "INT64", [3])], "no label-probability output"),
    ],
)
def test_classifier_io_from_metadata(inputs, outputs, error):
    if error is None:
        io = classifier_io(meta(inputs, outputs), 3)
        assert [s.name for s in io.inputs] == [n for n, _, _ in inputs]
    else:
        with pytest.raises(UpstreamError, match=error) as err:
            classifier_io(meta(inputs, outputs), 3)
        assert err.value.reason == "codec"


def test_output_choice_prefers_named_probabilities_over_logits():
    io = classifier_io(meta(BERT, [("logits", "FP32", [3]), ("probabilities", "FP32", [3])]), 3)
    assert (io.output.name, io.logits) == ("probabilities", False)
    io = classifier_io(meta(BERT, [("out", "FP32", [3]), ("x", "INT64", [1])]), 3)
    assert (io.output.name, io.logits) == ("out", False)


@pytest.mark.parametrize(
    ("values", "logits", "expected"),
    [
        ([0.2, 0.8], False, [0.2, 0.8]),
        ([1.0, 3.0], False, [0.5, 1.5]),  # not a distribution: softmax below
        ([0.0, math.log(3.0)], True, [0.25, 0.75]),
        ([-1.0, 1.0], False, None),
    ],
)
def test_probabilities(values, logits, expected):
    p = probabilities(values, logits=logits)
    assert math.isclose(sum(p), 1.0)
    if expected == [0.5, 1.5]:
        assert p[1] > p[0] and not math.isclose(p[0], 0.5)
    elif expected is not None:
        assert p == pytest.approx(expected)


@pytest.mark.parametrize(
    ("inputs", "shapes"),
    [
        (BERT, {"input_ids": [1, 4], "attention_mask": [1, 4], "token_type_ids": [1, 4]}),
        ([("input_ids", "INT32", [-1]), ("attention_mask", "INT32", [-1])],
         {"input_ids": [4], "attention_mask": [4]}),
    ],
)  # fmt: skip
def test_request_tensors_follow_the_metadata(inputs, shapes):
    codec = OnnxClassifierCodec(FakeTokenizer(), ["a", "b", "c"])
    assert codec.needs_metadata("clf")
    codec.learn("clf", meta(inputs, LOGITS))
    assert not codec.needs_metadata("clf")
    req = codec.request("clf", "hi there", {"max_tokens": 5}, "rid", timeout_s=1.0)
    got = {t.name: (t.datatype, list(t.shape)) for t in req.inputs}
    assert {n: s for n, (_, s) in got.items()} == shapes
    dtype = inputs[0][1]
    assert {d for d, _ in got.values()} == {dtype}
    assert decode(dtype, req.raw_input_contents[0]) == [101, 2, 5, 102]
    assert [o.name for o in req.outputs] == ["logits"]


def _resp(values, name="logits", final=None):
    r = service_pb2.ModelInferResponse(model_name="clf", id="r")
    out = r.outputs.add()
    out.name, out.datatype = name, "FP32"
    out.shape.extend([1, len(values)])
    r.raw_output_contents.append(encode("FP32", values))
    if final is not None:
        r.parameters["triton_final_response"].bool_param = final
    return r


def test_answer_is_the_most_probable_label_with_its_probability():
    codec = OnnxClassifierCodec(FakeTokenizer(), ["refund", "invoice", "tracking"])
    codec.learn("clf", meta(BERT, LOGITS))
    piece, final = codec.parse(_resp([0.0, math.log(3.0), 0.0]))
    assert piece == Piece("invoice", 0.6) and final  # one response: always the last
    flag_only = service_pb2.ModelInferResponse(model_name="clf")
    flag_only.parameters["triton_final_response"].bool_param = True
    assert codec.parse(flag_only) == (None, True)
    with pytest.raises(UpstreamError, match="2 scores for 3 labels"):
        codec.parse(_resp([0.1, 0.2]))
    with pytest.raises(UpstreamError, match="lacks output logits"):
        codec.parse(_resp([0.1, 0.2, 0.7], name="other"))


def test_request_before_metadata_is_refused():
    codec = OnnxClassifierCodec(FakeTokenizer(), ["a"])
    with pytest.raises(UpstreamError, match="metadata not known"):
        codec.request("clf", "x", {}, "r")
    with pytest.raises(ValueError, match="labels"):
        OnnxClassifierCodec(FakeTokenizer(), [])


# -- the artifact -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "error"),
    [
        ("pvc://claim/models/clf", None),
        ("pvc://claim/../../etc", "inside its claim"),
        ("pvc://claim/missing", "is not a folder"),
        ("hf://org/model", "never fetches over the network"),
        ("s3://bucket/model", "never fetches over the network"),
    ],
)
def test_artifact_path(tmp_path, uri, error):
    (tmp_path / "ns" / "claim" / "models" / "clf").mkdir(parents=True)
    if error is None:
        assert artifact_path(uri, tmp_path, "ns") == tmp_path / "ns" / "claim" / "models" / "clf"
        # Another namespace's specialist naming the same claim reads nothing of ns.
        with pytest.raises(ArtifactUnavailable, match="not a folder"):
            artifact_path(uri, tmp_path, "other")
    else:
        with pytest.raises(ArtifactUnavailable, match=error):
            artifact_path(uri, tmp_path, "ns")
    with pytest.raises(ArtifactUnavailable, match="no --artifact-root"):
        artifact_path("pvc://claim/models/clf", None, "ns")


@pytest.mark.parametrize(
    ("config", "labels", "error"),
    [
        (None, (), None),
        ({"id2label": {"1": "b", "0": "a"}}, ("a", "b"), None),
        ({"id2label": {"0": "a", "2": "c"}}, None, "0..n-1"),
        ({"other": 1}, (), None),
    ],
)
def test_labels_from_config(tmp_path, config, labels, error):
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    if error:
        with pytest.raises(ArtifactUnavailable, match=error):
            labels_from_config(tmp_path)
    else:
        assert labels_from_config(tmp_path) == labels


@pytest.fixture
def artifact(tmp_path):
    from slmfleet.router.embed import model_dir

    folder = tmp_path / "ns" / "claim" / "clf"
    folder.mkdir(parents=True)
    (folder / "tokenizer.json").write_bytes((model_dir() / "tokenizer.json").read_bytes())
    (folder / "config.json").write_text(json.dumps({"id2label": {"0": "no", "1": "yes"}}))
    return tmp_path


def test_reader_loads_tokenizer_and_labels(artifact):
    reader = ArtifactReader(artifact)
    parts = reader.classifier("pvc://claim/clf", "ns")
    assert parts.labels == ("no", "yes")
    ids, mask, types = parts.tokenizer.encode("hello world")
    assert ids[0] == 101 and ids[-1] == 102 and len(ids) == 4  # [CLS] hello world [SEP]
    assert mask == [1, 1, 1, 1] and types == [0, 0, 0, 0]  # no padding to 128
    assert len(parts.tokenizer.encode("word " * 2000)[0]) == 512  # truncated
    assert reader.classifier("pvc://claim/clf", "ns") is parts  # cached
    # The specialist's domain.labels win over the artifact's.
    assert reader.classifier("pvc://claim/clf", "ns", ("n", "y")).labels == ("n", "y")
    (artifact / "ns" / "claim" / "clf" / "config.json").unlink()
    with pytest.raises(ArtifactUnavailable, match="no labels"):
        ArtifactReader(artifact).classifier("pvc://claim/clf", "ns")
    (artifact / "ns" / "claim" / "clf" / "tokenizer.json").unlink()
    with pytest.raises(ArtifactUnavailable, match=r"no tokenizer\.json"):
        ArtifactReader(artifact).classifier("pvc://claim/clf", "ns")


async def test_codecs_load_an_onnx_classifier_once(artifact):
    codecs = Codecs(ArtifactReader(artifact))
    spec = SpecialistConfig(
        id="ns/clf",
        endpoint="h:1",
        triton_model="clf",
        backend="onnxruntime",
        artifact="pvc://claim/clf",
    )
    first = await codecs.for_specialist(spec)
    assert isinstance(first, OnnxClassifierCodec) and first.labels == ("no", "yes")
    assert await codecs.for_specialist(spec) is first
    relabelled = spec.model_copy(
        update={"domain": spec.domain.model_copy(update={"labels": ["n", "y"]})}
    )
    second = await codecs.for_specialist(relabelled)
    assert second is not first and second.labels == ("n", "y")
