"""Per-backend codecs: the tensors each sends (checked against the config the operator
renders for that backend) and how each reads its backend's responses."""

from __future__ import annotations

import struct

import orjson
import pytest
from tritonclient.grpc import service_pb2

from slmfleet.api.routerconfig import SpecialistConfig
from slmfleet.api.specialist import ModelSpec
from slmfleet.render.triton import TEXT_INPUTS, tensorrtllm_bls_config
from slmfleet.router.backends import CODEC_KINDS, Codecs, codec_kind
from slmfleet.router.errors import RouterError, UpstreamError
from slmfleet.router.triton.codec import Piece
from slmfleet.router.triton.codecs import TensorRTLLMCodec, TextCodec
from slmfleet.router.triton.tensors import decode, encode


def _inputs(req) -> dict[str, tuple[str, list[int], list]]:
    return {
        t.name: (t.datatype, list(t.shape), decode(t.datatype, raw))
        for t, raw in zip(req.inputs, req.raw_input_contents, strict=True)
    }


@pytest.mark.parametrize(
    ("datatype", "values", "raw"),
    [
        ("BYTES", ["ab", b"c"], b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"),
        ("BOOL", [True, False], b"\x01\x00"),
        ("INT32", [1, -2], struct.pack("<2i", 1, -2)),
        ("INT64", [2**40], struct.pack("<q", 2**40)),
        ("UINT64", [2**63], struct.pack("<Q", 2**63)),
        ("FP32", [0.5], struct.pack("<f", 0.5)),
    ],
)
def test_tensor_encoding_round_trips(datatype, values, raw):
    assert encode(datatype, values) == raw
    back = decode(datatype, raw)
    assert back == [v.encode() if isinstance(v, str) else v for v in values]


# -- TensorRT-LLM (tensorrt_llm_bls) ----------------------------------------------------


def test_trtllm_request_tensors():
    req = TensorRTLLMCodec().request(
        "m",
        "héllo",
        {"max_tokens": 7, "temperature": 0.5, "top_k": 3, "seed": 42, "stop": ["\n\n", "END"]},
        "rid",
        timeout_s=1.5,
    )
    got = _inputs(req)
    assert got == {
        "text_input": ("BYTES", [1, 1], ["héllo".encode()]),
        "max_tokens": ("INT32", [1, 1], [7]),
        "stream": ("BOOL", [1, 1], [True]),
        "exclude_input_in_output": ("BOOL", [1, 1], [True]),
        "temperature": ("FP32", [1, 1], [0.5]),
        "top_k": ("INT32", [1, 1], [3]),
        "seed": ("UINT64", [1, 1], [42]),
        "stop_words": ("BYTES", [1, 2], [b"\n\n", b"END"]),
    }
    assert (req.model_name, req.id) == ("m", "rid")
    assert req.parameters["triton_enable_empty_final_response"].bool_param
    assert req.parameters["timeout"].int64_param == 1_500_000


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [
        ({}, {"max_tokens": [4096 - 4]}),  # "a prompt words": 14 chars, ~4 tokens
        ({"stop": "x"}, {"stop_words": [b"x"]}),
        ({"stop": "x", "stop_words": ["y"]}, {"stop_words": [b"x", b"y"]}),
        ({"bad_words": ["darn"]}, {"bad_words": [b"darn"]}),
        ({"best_of": 2, "think_tokens": 9}, {}),  # no tensor for these: not sent
        ({"stop": []}, {}),
    ],
)
def test_trtllm_defaults_and_word_lists(sampling, expected):
    got = _inputs(TensorRTLLMCodec().request("m", "a prompt words", sampling, "r"))
    for name, values in expected.items():
        assert got[name][2] == values
    extra = set(got) - {"text_input", "max_tokens", "stream", "exclude_input_in_output"}
    assert extra == set(expected) - {"max_tokens"}


@pytest.mark.parametrize(
    ("sampling", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"top_k": 1.5}, "top_k"),
        ({"seed": -1}, "seed"),
        ({"max_tokens": True}, "max_tokens"),
        ({"stop": [1, 2]}, "stop"),
    ],
)
def test_trtllm_bad_sampling_is_a_400_naming_the_parameter(sampling, param):
    with pytest.raises(RouterError) as err:
        TensorRTLLMCodec().request("m", "p", sampling, "r")
    assert err.value.status == 400 and err.value.param == param


def _declared(config_inputs) -> dict[str, tuple[str, list[int]]]:
    return {t["name"]: (str(t["data_type"]), list(t["dims"])) for t in config_inputs}


def _matches(shape: list[int], dims: list[int]) -> bool:
    return len(shape) == len(dims) and all(
        d == -1 or d == s for s, d in zip(shape, dims, strict=True)
    )


TRITON_TYPE = {"BYTES": "TYPE_STRING", "BOOL": "TYPE_BOOL", "INT32": "TYPE_INT32",
               "UINT64": "TYPE_UINT64", "FP32": "TYPE_FP32"}  # fmt: skip


def test_trtllm_codec_sends_only_what_the_rendered_bls_config_declares():
    config = tensorrtllm_bls_config(ModelSpec(uri="hf://o/m", backend="tensorrtllm"))
    assert config["max_batch_size"] > 0  # so every tensor carries a batch dimension
    declared = _declared(config["input"])
    sampling = {"max_tokens": 3, "stop": "s", "bad_words": ["b"]}
    sampling |= {k: 1 for k in ("temperature", "top_p", "top_k", "seed", "min_tokens")}
    sampling |= {k: 0.5 for k in ("presence_penalty", "frequency_penalty")}
    sampling |= {"repetition_penalty": 1.1, "length_penalty": 1.0, "end_id": 2, "pad_id": 0}
    req = TensorRTLLMCodec().request("m", "p", sampling, "r")
    assert len(req.inputs) == 4 + 11 + 2  # fixed, scalars, word lists
    for name, (datatype, shape, _) in _inputs(req).items():
        assert name in declared, name
        dtype, dims = declared[name]
        assert dtype == TRITON_TYPE[datatype], name
        assert shape[0] == 1 and _matches(shape[1:], dims), (name, shape, dims)
    required = {n for n, t in ((t["name"], t) for t in config["input"]) if not t.get("optional")}
    assert required <= set(_inputs(req))
    assert next(o["name"] for o in config["output"]) == "text_output"


def test_text_codec_sends_what_the_vllm_config_declares():
    declared = _declared(TEXT_INPUTS)
    req = TextCodec().request("m", "p", {"max_tokens": 2}, "r")
    for name, (datatype, shape, _) in _inputs(req).items():
        assert declared[name][0] == TRITON_TYPE[datatype]
        assert _matches(shape, declared[name][1])


def test_trtllm_reads_text_output_deltas():
    resp = service_pb2.ModelInferResponse(id="r")
    out = resp.outputs.add()
    out.name, out.datatype = "text_output", "BYTES"
    out.shape.extend([1, 1])
    resp.raw_output_contents.append(encode("BYTES", ["tok "]))
    resp.parameters["triton_final_response"].bool_param = False
    assert TensorRTLLMCodec().parse(resp) == (Piece("tok ", None), False)


# -- selection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "kind"),
    [("vllm", "text"), ("python", "text"), ("tensorrtllm", "tensorrtllm"),
     ("onnxruntime", "onnx-classifier")],
)  # fmt: skip
def test_codec_kind_per_backend(backend, kind):
    assert codec_kind(backend) == kind


def test_every_backend_of_the_api_has_a_codec():
    from typing import get_args

    from slmfleet.api.specialist import Backend

    assert set(get_args(Backend)) == set(CODEC_KINDS)
    with pytest.raises(ValueError, match="no codec"):
        codec_kind("tgi")


def _spec(backend: str, **kw) -> SpecialistConfig:
    return SpecialistConfig(id="ns/x", endpoint="h:1", triton_model="x", backend=backend, **kw)


async def test_codecs_for_specialists():
    codecs = Codecs()
    assert isinstance(await codecs.for_specialist(_spec("vllm")), TextCodec)
    trt = await codecs.for_specialist(_spec("tensorrtllm", context_length=1024))
    assert isinstance(trt, TensorRTLLMCodec) and trt.context_length == 1024
    with pytest.raises(UpstreamError, match="names no artifact") as err:
        await codecs.for_specialist(_spec("onnxruntime"))
    assert err.value.reason == "codec"
    assert "tokenizer" in err.value.public_message
    with pytest.raises(UpstreamError, match="never fetches over the network"):
        await codecs.for_specialist(_spec("onnxruntime", artifact="hf://org/model"))


def test_sampling_json_is_unchanged_for_the_text_codec():
    req = TextCodec().request("m", "p", {"temperature": 0.2, "x": [1]}, "r")
    assert orjson.loads(req.raw_input_contents[2][4:]) == {"temperature": 0.2, "x": [1]}
