"""Every backend's codec through the real Triton, with the official openai client.

One private Triton serves three stand-ins, each honouring its backend's tensors:
``vllm-billing`` (the vLLM contract), ``trt-billing`` (TensorRT-LLM's
``tensorrt_llm_bls`` contract, the config the operator renders for ``tensorrtllm``) and
``intent``, an ONNX classifier built here (naive Bayes over the MiniLM tokenizer's
ids) and run by onnxruntime inside a Python-backend model that declares exactly the
onnxruntime backend's tensors (the wheel's tritonserver has no onnxruntime backend).
The router tokenizes for the classifier with the artifact's tokenizer.json.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import openai
import pytest

from slmfleet.budget.tokens import TokenizerCounter
from slmfleet.local import TritonServer, write_model_repository
from slmfleet.local.models import BILLING_EXAMPLES, SHIPPING_EXAMPLES, StandIn
from slmfleet.local.models.onnx_classifier import write_onnx_classifier
from slmfleet.router.app import Settings
from slmfleet.router.embed import model_dir

from .router_support import RouterThread, write_config

pytestmark = pytest.mark.integration

EXAMPLES = {**BILLING_EXAMPLES, **SHIPPING_EXAMPLES}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton (which ships tritonserver) is not installed")
    work = tmp_path_factory.mktemp("backends")
    billing = {"examples": json.dumps(BILLING_EXAMPLES)}
    repo = write_model_repository(
        work / "models",
        {
            "vllm-billing": StandIn("domain", billing),
            "trt-billing": StandIn("domain", billing, "tensorrtllm"),
            # refuses prompt + max_tokens > 64, as TensorRT-LLM past max_seq_len
            "trt-short": StandIn("domain", billing | {"max_seq_len": "64"}, "tensorrtllm"),
        },
    )
    artifact = work / "artifacts" / "shop" / "models" / "intent"  # <root>/<ns>/<claim>/<path>
    labels = write_onnx_classifier(
        artifact, repo, "intent", EXAMPLES, model_dir() / "tokenizer.json"
    )
    server = TritonServer(repo, log_path=work / "tritonserver.log", startup_timeout=180)
    with server:
        yield server, work, artifact, labels


LABELS = list(BILLING_EXAMPLES)
PLATT = {"method": "platt", "slope": 1.5, "intercept": 0.4, "samples": 200}
CALIBRATION = {"tiers": {"routed": {"labels": {"refund": PLATT}}}}


def logprob_policy(name: str, specialist: str, **extra) -> dict:
    return {
        "modelName": name,
        "id": f"shop/{name}",
        "specialists": [specialist],
        "routing": {"semantic": {"enabled": False}},
        "cascade": [
            {"name": "routed", "routed": True, "accept": {"labelThresholds": {"refund": 0.01}}}
        ],
        **extra,
    }


@pytest.fixture(scope="module")
def router(served):
    server, work, _artifact, _labels = served

    def spec(name, model, backend, **kw):
        return {"id": f"shop/{name}", "endpoint": server.grpc_url, "tritonModel": model,
                "backend": backend, "ready": True, **kw}  # fmt: skip

    cfg = {
        "version": 1,
        "specialists": [
            spec("vllm", "vllm-billing", "vllm"),
            spec("trt", "trt-billing", "tensorrtllm", contextLength=2048),
            spec("trt-short", "trt-short", "tensorrtllm", contextLength=64),
            # the same models, declaring their labels: the label rule applies
            spec("trt-labelled", "trt-billing", "tensorrtllm", domain={"labels": LABELS}),
            spec("vllm-labelled", "vllm-billing", "vllm", domain={"labels": LABELS}),
            spec("intent", "intent", "onnxruntime", artifact="pvc://models/intent"),
            spec("orphan", "intent", "onnxruntime", artifact="pvc://models/missing"),
        ],
        "policies": [
            {
                "modelName": "triage",
                "id": "shop/triage",
                "specialists": ["shop/intent"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [
                    {
                        "name": "classifier",
                        "routed": True,
                        "accept": {"labelThresholds": {"damaged": 0.9}},
                    },
                    {"name": "writer", "specialist": "shop/trt"},
                ],
            },
            # answer-confidence thresholds: the router asks for log-probs and derives it
            logprob_policy("trt-logprobs", "shop/trt-labelled"),
            logprob_policy("vllm-logprobs", "shop/vllm-labelled"),
            logprob_policy("trt-sequence", "shop/trt"),
            logprob_policy("trt-calibrated", "shop/trt-labelled", calibration=CALIBRATION),
            {
                "modelName": "long-or-short",
                "id": "shop/long-or-short",
                "specialists": ["shop/trt-short"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [
                    {"name": "short", "specialist": "shop/trt-short"},
                    {"name": "long", "specialist": "shop/trt"},
                ],
            },
            {
                "modelName": "fragile",
                "id": "shop/fragile",
                "specialists": ["shop/orphan"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [
                    {"name": "classifier", "routed": True},
                    {"name": "writer", "specialist": "shop/vllm"},
                ],
            },
        ],
    }
    path = work / "router.json"
    write_config(path, cfg)
    with RouterThread(path, settings=Settings(artifact_root=str(work / "artifacts"))) as r:
        yield r


@pytest.fixture(scope="module")
def counting_router(router, served):
    """The same configuration, counting prompts with the MiniLM tokenizer (as
    ``slmfleet-router`` does by default): it knows a prompt's tokens."""
    with RouterThread(
        served[1] / "router.json",
        counter=TokenizerCounter.from_file(model_dir() / "tokenizer.json"),
    ) as r:
        yield r


@pytest.fixture
def client(router):
    return openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)


def chat(client, model, content, **kw):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], **kw
    )
    return raw.parse(), raw.headers


def test_vllm_contract(client):
    resp, h = chat(client, "shop/vllm", "please refund the duplicate charge", max_tokens=3)
    assert resp.choices[0].message.content == "refund: This is "
    assert h["x-slmfleet-target"] == "shop/vllm"
    assert resp.model_extra["slmfleet"]["answer_confidence"] > 0.5  # its confidence output


def test_tensorrtllm_contract_unary_stream_and_word_lists(client):
    resp, h = chat(client, "shop/trt", "please refund the duplicate charge")
    assert resp.choices[0].message.content == "refund: This is a refund request."
    assert h["x-slmfleet-target"] == "shop/trt"
    # The BLS contract has no confidence output: none is reported.
    assert resp.model_extra["slmfleet"]["answer_confidence"] is None
    # max_tokens, stop and bad words reach the model as the BLS tensors.
    resp, _ = chat(client, "shop/trt", "refund please", max_tokens=4)
    assert resp.choices[0].message.content == "refund: This is a "
    resp, _ = chat(client, "shop/trt", "refund please", stop=["refund request"])
    assert resp.choices[0].message.content == "refund: This is a "
    resp, _ = chat(
        client, "shop/trt", "refund please", extra_body={"sampling_parameters": {
            "bad_words": ["this"], "temperature": 0.7, "top_k": 5, "seed": 3}},
    )  # fmt: skip
    assert resp.choices[0].message.content == "refund: is a refund request."
    stream = client.chat.completions.create(
        model="shop/trt", messages=[{"role": "user", "content": "refund please"}], stream=True
    )
    deltas = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) == 6 and "".join(deltas) == "refund: This is a refund request."


def test_answer_confidence_from_logprobs_when_a_threshold_needs_it(client):
    """The TensorRT-LLM stand-in has no confidence output; with a label threshold the
    router asks for cum_log_probs and, for a specialist that declares its labels, the
    label rule gives back the model's confidence,
    the same the vLLM-contract stand-in reports through its confidence output (and
    through cumulative_logprob); a calibrator of the tier then maps it."""
    text = "where is my refund for the charge"
    own = chat(client, "shop/vllm", text)[0].model_extra["slmfleet"]["answer_confidence"]
    assert own is not None and 0.5 < own < 1
    trt, h = chat(client, "trt-logprobs", text)
    derived = trt.model_extra["slmfleet"]["answer_confidence"]
    assert h["x-slmfleet-target"] == "shop/trt-labelled"
    assert derived == pytest.approx(own, abs=1e-5)
    # without declared labels: the length-normalised sequence score (6 streamed tokens,
    # only the first of which the stand-in was unsure of)
    seq = chat(client, "trt-sequence", text)[0].model_extra["slmfleet"]["answer_confidence"]
    assert seq == pytest.approx(own ** (1 / 6), abs=1e-5)
    vllm = chat(client, "vllm-logprobs", text)[0].model_extra["slmfleet"]["answer_confidence"]
    assert vllm == pytest.approx(own, abs=1e-5)
    stream = client.chat.completions.create(
        model="trt-logprobs", messages=[{"role": "user", "content": text}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    calibrated = chat(client, "trt-calibrated", text)[0].model_extra["slmfleet"]
    from slmfleet.api.learning import CalibratorConfig
    from slmfleet.learn.calibrator import apply

    want = apply(CalibratorConfig.model_validate(PLATT), derived)
    assert calibrated["answer_confidence"] == pytest.approx(want, abs=1e-5) != derived


def test_tensorrtllm_bad_sampling_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, "shop/trt", "x", extra_body={"sampling_parameters": {"top_k": 1.5}})
    assert err.value.body["param"] == "top_k"


LONG = "refund " * 70  # 70 tokens to the stand-in, more to MiniLM: past a context of 64


def test_the_output_cap_fits_the_context(router, counting_router):
    """No max_tokens, no Budget: the router sends what the context leaves after the
    prompt, not the whole context (which TensorRT-LLM and vLLM refuse); a prompt that
    fills the context alone is the caller's 400 when the router counts its tokens, and
    a cascade with a longer-context tier escalates to it first."""
    for r in (router, counting_router):
        client = openai.OpenAI(base_url=r.url + "/v1", api_key="unused", max_retries=0)
        for kw in ({}, {"max_tokens": 1000}):
            resp, h = chat(client, "shop/trt-short", "please refund the duplicate charge", **kw)
            assert resp.choices[0].message.content == "refund: This is a refund request."
    client = openai.OpenAI(base_url=counting_router.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, "shop/trt-short", LONG)
    body = err.value.body
    assert (body["code"], body["param"], body["type"]) == (
        "context_length_exceeded", "messages", "invalid_request_error")  # fmt: skip
    assert "maximum context length is 64 tokens" in body["message"]
    resp, h = chat(client, "long-or-short", LONG)
    assert h["x-slmfleet-escalations"] == "short:context_length_exceeded"
    assert h["x-slmfleet-tier"] == "long" and resp.choices[0].message.content.startswith("refund:")


def _expected(artifact, text: str, labels: list[str]) -> tuple[str, float]:
    """The classifier's answer computed here, independently: tokenizer + onnxruntime."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(artifact / "tokenizer.json"))
    tok.no_padding()
    enc = tok.encode(text)
    feed = {
        "input_ids": np.array([enc.ids], dtype=np.int64),
        "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
        "token_type_ids": np.array([enc.type_ids], dtype=np.int64),
    }
    sess = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], feed)[0][0].astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    best = int(np.argmax(p))
    return labels[best], float(p[best])


@pytest.mark.parametrize(
    "text", ["my package arrived damaged", "change my delivery address", "I need my invoice"]
)
def test_onnx_classifier_answers_its_label_with_its_probability(client, served, text):
    _server, _work, artifact, labels = served
    label, prob = _expected(artifact, text, labels)
    resp, h = chat(client, "shop/intent", text)
    assert resp.choices[0].message.content == label
    assert h["x-slmfleet-target"] == "shop/intent"
    assert resp.model_extra["slmfleet"]["answer_confidence"] == pytest.approx(prob, abs=1e-5)
    stream = client.chat.completions.create(
        model="shop/intent", messages=[{"role": "user", "content": text}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == label


def test_classifier_confidence_drives_label_thresholds(client, served):
    _server, _work, artifact, labels = served
    sure, vague = "the box was crushed and the item is broken", "my package arrived damaged"
    assert _expected(artifact, sure, labels)[1] >= 0.9 > _expected(artifact, vague, labels)[1]
    resp, h = chat(client, "triage", sure)
    assert resp.choices[0].message.content == "damaged"
    assert h["x-slmfleet-tier"] == "classifier" and h["x-slmfleet-escalations"] == ""
    resp, h = chat(client, "triage", vague)  # damaged, below its 0.9 threshold
    assert h["x-slmfleet-escalations"] == "classifier:label_threshold:damaged"
    assert h["x-slmfleet-tier"] == "writer" and h["x-slmfleet-target"] == "shop/trt"


def test_missing_tokenizer_escalates_with_a_public_reason(client):
    resp, h = chat(client, "fragile", "refund please")
    assert h["x-slmfleet-escalations"] == "classifier:codec"
    assert h["x-slmfleet-tier"] == "writer" and resp.choices[0].message.content.startswith(
        "refund:"
    )
    with pytest.raises(openai.APIStatusError) as err:
        chat(client, "shop/orphan", "refund please")
    assert err.value.status_code == 502
    assert "tokenizer or labels are unavailable" in err.value.message
    assert "pvc://" not in err.value.message  # no internal detail
