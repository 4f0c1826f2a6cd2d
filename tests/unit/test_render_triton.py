"""Triton model repository configuration per backend."""

import json

import pytest

from slmfleet.api.specialist import ModelSpec
from slmfleet.render.pbtxt import Enum, dumps
from slmfleet.render.triton import config_pbtxt, model_repository_files, vllm_model_json


def model(**kw) -> ModelSpec:
    return ModelSpec.model_validate({"uri": "hf://org/m", "backend": "vllm", **kw})


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ({"name": "m"}, 'name: "m"'),
        ({"n": 3, "f": 0.5, "b": True}, "n: 3\nf: 0.5\nb: true"),
        ({"kind": Enum("KIND_GPU")}, "kind: KIND_GPU"),
        ({"dims": [1, -1]}, "dims: [ 1, -1 ]"),
        ({"p": {"decoupled": False}}, "p {\n  decoupled: false\n}"),
        ({"i": [{"a": 1}, {"a": 2}]}, "i {\n  a: 1\n}\ni {\n  a: 2\n}"),
        ({"skip": None, "s": 'quo"te'}, 's: "quo\\"te"'),
        ({"reshape": {"shape": []}}, "reshape {\n  shape: [ ]\n}"),
    ],
)
def test_pbtxt_writer(message, text):
    assert dumps(message) == text


@pytest.mark.parametrize(
    ("backend", "must_contain"),
    [
        ("vllm", ['backend: "vllm"', "decoupled: true", "KIND_MODEL", 'name: "text_input"']),
        ("python", ['backend: "python"', "decoupled: true", 'name: "confidence"']),
        (
            "tensorrtllm",  # the tensorrt_llm_bls model: text in, text out
            [
                'backend: "python"',
                "max_batch_size: 64",
                "decoupled: true",
                'name: "max_tokens"',
                'name: "stop_words"',
                'name: "text_output"',
                'key: "tensorrt_llm_model_name"',
                "reshape {\n    shape: [ ]\n  }",
            ],
        ),
        ("onnxruntime", ['platform: "onnxruntime_onnx"', "KIND_CPU"]),
    ],
)
def test_config_per_backend(backend, must_contain):
    quant = "none"
    text = config_pbtxt("m", model(backend=backend, quantization=quant))
    assert text.startswith('name: "m"\n')
    for fragment in must_contain:
        assert fragment in text


def test_gpu_instance_kind():
    assert "KIND_GPU" in config_pbtxt("m", model(backend="python"), gpu=1)
    assert "KIND_CPU" in config_pbtxt("m", model(backend="python"), gpu=0)


@pytest.mark.parametrize("quant", ["awq", "fp8", "gptq", "int8"])
def test_vllm_quantization_passes_through(quant):
    engine = json.loads(vllm_model_json("m", model(quantization=quant)))
    assert engine["quantization"] == quant


def test_vllm_engine_arguments():
    engine = json.loads(
        vllm_model_json(
            "m",
            model(
                contextLength=8192,
                parameters={"gpu_memory_utilization": "0.5", "tokenizer_mode": "auto"},
            ),
        )
    )
    assert engine["max_model_len"] == 8192
    assert engine["gpu_memory_utilization"] == 0.5  # typed, not "0.5"
    assert engine["tokenizer_mode"] == "auto"
    assert "quantization" not in engine
    assert engine["model"] == "/models/m/1/weights"


def test_only_vllm_has_model_json():
    assert set(model_repository_files("m", model())) == {"config.pbtxt", "model.json"}
    assert set(model_repository_files("m", model(backend="python"))) == {"config.pbtxt"}


def test_tensorrtllm_bls_parameters_and_instances():
    text = config_pbtxt(
        "m",
        model(
            backend="tensorrtllm",
            maxBatchSize=8,
            parameters={"bls_instance_count": "2", "accumulate_tokens": "true"},
        ),
    )
    assert "max_batch_size: 8" in text and "count: 2" in text
    assert 'key: "accumulate_tokens"\n  value {\n    string_value: "true"' in text
    assert "bls_instance_count" not in text  # a template value, not a BLS parameter
