"""Answer confidence from log-probabilities: the codec and the rule, pure."""

from __future__ import annotations

import math
import struct

import pytest
from tritonclient.grpc import service_pb2

from slmfleet.api.policy import Acceptance
from slmfleet.local.models.standin import Answer, cumulative, token_logprobs, word_deltas
from slmfleet.router.logprobs import (
    Step,
    answer_confidence,
    label_end,
    read_cumulative_logprob,
    request_logprobs,
    wants_logprobs,
)
from slmfleet.router.triton.codec import build_request


def response(name="cumulative_logprob", value=-0.5, *, raw=True, dtype="FP32"):
    resp = service_pb2.ModelInferResponse(model_name="m")
    out = resp.outputs.add()
    out.name, out.datatype = name, dtype
    out.shape.append(1)
    if raw:
        resp.raw_output_contents.append(struct.pack("<f", value))
    else:
        out.contents.fp32_contents.append(value)
    return resp


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("name", ["cumulative_logprob", "cum_log_probs"])
def test_reads_the_cumulative_logprob_of_either_backend(raw, name):
    assert read_cumulative_logprob(response(name, -1.25, raw=raw)) == pytest.approx(-1.25)


def test_codec_refuses_what_is_not_a_log_probability():
    assert read_cumulative_logprob(response("text_output", dtype="BYTES")) is None
    with pytest.raises(ValueError, match="expected FP32"):
        read_cumulative_logprob(response(dtype="FP64"))
    with pytest.raises(ValueError, match="not a log-probability"):
        read_cumulative_logprob(response(value=0.7))
    bad = response()
    bad.raw_output_contents[0] = b"\x00\x00"
    with pytest.raises(ValueError, match="not FP32"):
        read_cumulative_logprob(bad)


def test_request_flag_per_backend():
    req = request_logprobs(build_request("m", "hi", {}, "r1"), "vllm")
    names = [t.name for t in req.inputs]
    assert names[-1] == "return_cumulative_logprob"
    assert len(req.raw_input_contents) == len(req.inputs) and req.raw_input_contents[-1] == b"\x01"
    trt = request_logprobs(build_request("m", "hi", {}, "r2"), "tensorrtllm")
    assert trt.inputs[-1].name == "return_log_probs"
    py = request_logprobs(build_request("m", "hi", {}, "r3"), "python")
    assert "return_cumulative_logprob" not in [t.name for t in py.inputs]
    assert wants_logprobs(Acceptance(label_thresholds={"refund": 0.9}))
    assert wants_logprobs(Acceptance(min_answer_confidence=0.5))
    assert not wants_logprobs(Acceptance(min_routing_confidence=0.5))


@pytest.mark.parametrize(
    ("answer", "end"),
    [
        ("refund: here it is", 7),
        ("  Refund here", 9),
        ("refund", 6),
        ('{"label": "refund", "reason": "x"}', 18),
        ('"refund", said the model', 8),
        ("", None),
    ],
)
def test_label_end(answer, end):
    assert label_end(answer) == end


def test_label_rule_reads_the_prefix_that_completes_the_label():
    # BPE-like pieces: the label is known once ':' follows "refund"
    steps = [Step("ref", -0.1), Step("und", -0.2), Step(":", -0.25), Step(" ok", -3.0)]
    conf = answer_confidence(steps, labels=["refund", "invoice"])
    assert conf == pytest.approx(math.exp(-0.25))
    # not a declared label: the length-normalised sequence score instead
    assert answer_confidence(steps, labels=["invoice"]) == pytest.approx(math.exp(-3.0 / 4))
    assert answer_confidence(steps, rule="label") == pytest.approx(math.exp(-0.25))
    # a single response (no streaming): only the whole sequence's value exists
    assert answer_confidence([Step("refund: ok", -3.0)], labels=["refund"]) == pytest.approx(
        math.exp(-3.0)
    )
    js = [Step('{"label": "', -0.01), Step('invoice"', -0.4), Step(', "x": 1}', -0.9)]
    assert answer_confidence(js, labels=["invoice"]) == pytest.approx(math.exp(-0.4))


def test_sequence_rule_normalises_by_tokens():
    steps = [Step("a b", -1.0, tokens=2), Step(" c", -1.5, tokens=1), Step("", None)]
    # one step lacks a count: fall back to one token per response
    assert answer_confidence(steps) == pytest.approx(math.exp(-1.5 / 3))
    counted = [Step("a b", -1.0, tokens=2), Step(" c d", -2.0, tokens=2)]
    assert answer_confidence(counted) == pytest.approx(math.exp(-2.0 / 4))
    assert answer_confidence([Step("x", None)]) is None
    assert answer_confidence([]) is None


def test_standin_logprobs_are_honest():
    label = Answer("refund: This is a refund request.", 0.8, label_first=True)
    deltas = word_deltas(label.text)
    lps = token_logprobs(label, deltas)
    assert lps[0] == pytest.approx(math.log(0.8)) and set(lps[1:]) == {0.0}
    steps = [Step(d, c) for d, c in zip(deltas, cumulative(lps), strict=True)]
    assert answer_confidence(steps, labels=["refund"]) == pytest.approx(0.8)
    gen = Answer("Here is a complete answer.", 0.99)
    d = word_deltas(gen.text)
    steps = [Step(x, c) for x, c in zip(d, cumulative(token_logprobs(gen, d)), strict=True)]
    assert answer_confidence(steps) == pytest.approx(0.99)
    assert token_logprobs(gen, []) == [] and token_logprobs(label, []) == []
