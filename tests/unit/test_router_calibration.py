"""Calibrated confidences and log-prob confidence on the router's path, pure: the
policy's calibrators, the codecs' log-prob tensors, the stream's steps, the record."""

from __future__ import annotations

import struct

import pytest
from tritonclient.grpc import service_pb2

from slmfleet.api.learning import Calibration, CalibratorConfig, TierCalibration
from slmfleet.api.policy import Acceptance
from slmfleet.api.routerconfig import SpecialistConfig
from slmfleet.learn.calibrator import apply, calibrate_answer
from slmfleet.router.backends import Codecs
from slmfleet.router.calibration import answer_confidence, calibrated_scores
from slmfleet.router.decision import Decision
from slmfleet.router.logprobs import Step, wants_logprobs
from slmfleet.router.tiers.stream import Progress, consume
from slmfleet.router.tracebudget import new_state
from slmfleet.router.triton.codec import Piece, parse_response
from slmfleet.router.triton.codecs import TensorRTLLMCodec, TextCodec
from slmfleet.telemetry.record import record_from_decision, record_json

PLATT = CalibratorConfig(method="platt", slope=2.0, intercept=-1.0, samples=100)
TEMP = CalibratorConfig(method="temperature", temperature=2.0, samples=100)
ISO = CalibratorConfig(method="isotonic", knots_x=[0.2, 0.8], knots_y=[0.1, 0.9])
CAL = Calibration(
    routing=PLATT,
    tiers={"small": TierCalibration(default=TEMP, labels={"refund": ISO})},
)


@pytest.mark.parametrize(
    ("cal", "scores", "want"),
    [
        (None, {"a": 0.7}, {"a": 0.7}),
        (Calibration(), {"a": 0.7}, {"a": 0.7}),
        (CAL, None, None),
        (CAL, {"a": 0.7, "b": 0.2}, {"a": apply(PLATT, 0.7), "b": apply(PLATT, 0.2)}),
    ],
)
def test_routing_scores_calibrated(cal, scores, want):
    assert calibrated_scores(cal, scores) == want


def test_calibration_keeps_the_order_of_specialists():
    scores = {"a": 0.31, "b": 0.3, "c": 0.9}
    out = calibrated_scores(CAL, scores)
    assert sorted(out, key=out.get) == sorted(scores, key=scores.get)
    assert out["c"] != scores["c"]


@pytest.mark.parametrize(
    ("tier", "answer", "raw", "want"),
    [
        ("small", "refund: sure", 0.3, apply(ISO, 0.3)),  # the label's calibrator
        ("small", '{"label": "Refund"}', 0.3, apply(ISO, 0.3)),  # JSON label, any case
        ("small", "sizing: M", 0.7, apply(TEMP, 0.7)),  # another label: the default
        ("small", "", 0.6, apply(TEMP, 0.6)),  # no label: the tier's default
        ("large", "refund: x", 0.5, 0.5),  # a tier without calibrators: raw
        ("small", "refund: x", None, None),  # no confidence reported: none
    ],
)
def test_answer_confidence_by_tier_and_label(tier, answer, raw, want):
    got = answer_confidence(CAL, tier, answer, raw)
    assert got == (None if want is None else pytest.approx(want))
    if want is not None and raw is not None and tier in CAL.tiers:
        assert got != raw  # a calibrator applied really moves the value


def test_no_calibration_passes_the_raw_answer_confidence():
    assert answer_confidence(None, "small", "refund", 0.42) == 0.42
    only_routing = Calibration(routing=PLATT)
    assert answer_confidence(only_routing, "small", "refund", 0.42) == 0.42
    no_default = Calibration(tiers={"small": TierCalibration(labels={"refund": ISO})})
    assert calibrate_answer(no_default, "small", "sizing", 0.42) == 0.42


# -- log-probs through the codecs ------------------------------------------------------


def _names(req) -> dict[str, list[int]]:
    return {t.name: list(t.shape) for t in req.inputs}


@pytest.mark.parametrize(
    ("codec", "flag", "shape"),
    [
        (TextCodec("vllm", logprobs=True), "return_cumulative_logprob", [1]),
        (TensorRTLLMCodec(logprobs=True), "return_log_probs", [1, 1]),
        (TextCodec("vllm"), None, None),
        (TextCodec("python", logprobs=True), None, None),  # stand-ins report confidence
        (TensorRTLLMCodec(), None, None),
    ],
)
def test_codecs_ask_for_logprobs_only_when_told(codec, flag, shape):
    req = codec.request("m", "p", {"max_tokens": 3}, "r")
    names = _names(req)
    assert len(req.raw_input_contents) == len(req.inputs)
    asked = {"return_cumulative_logprob", "return_log_probs"} & set(names)
    if flag is None:
        assert not asked
    else:
        assert asked == {flag} and names[flag] == shape
        assert req.raw_input_contents[list(names).index(flag)] == b"\x01"


def _response(text: str, logprob: float | None, *, name="cumulative_logprob", raw=b""):
    resp = service_pb2.ModelInferResponse(id="r")
    out = resp.outputs.add()
    out.name, out.datatype = "text_output", "BYTES"
    resp.raw_output_contents.append(struct.pack("<I", len(text)) + text.encode())
    if logprob is not None or raw:
        lp = resp.outputs.add()
        lp.name, lp.datatype = name, "FP32"
        resp.raw_output_contents.append(raw or struct.pack("<f", logprob))
    return resp


@pytest.mark.parametrize(
    ("resp", "want"),
    [
        (_response("tok", -0.25), -0.25),
        (_response("tok", -1.5, name="cum_log_probs"), -1.5),
        (_response("tok", None), None),
        (_response("tok", None, raw=b"\x00\x00"), None),  # malformed: none, text kept
        (_response("tok", 0.8), None),  # positive: not a log-prob
    ],
)
def test_pieces_carry_the_cumulative_logprob(resp, want):
    piece, _ = parse_response(resp)
    assert piece.text == "tok"
    assert piece.cumulative_logprob == (pytest.approx(want) if want is not None else None)
    assert TensorRTLLMCodec().parse(resp)[0] == piece


def _spec(backend: str) -> SpecialistConfig:
    return SpecialistConfig(id="ns/x", endpoint="h:1", triton_model="x", backend=backend)


@pytest.mark.parametrize(
    ("backend", "logprobs", "asks"),
    [
        ("vllm", True, True),
        ("vllm", False, False),
        ("python", True, False),
        ("tensorrtllm", True, True),
        ("tensorrtllm", False, False),
    ],
)
async def test_codecs_per_specialist_ask_for_logprobs(backend, logprobs, asks):
    codec = await Codecs().for_specialist(_spec(backend), logprobs=logprobs)
    names = _names(codec.request("m", "p", {"max_tokens": 2}, "r"))
    assert bool({"return_cumulative_logprob", "return_log_probs"} & set(names)) == asks


@pytest.mark.parametrize(
    ("acc", "backend", "want"),
    [
        (Acceptance(labelThresholds={"refund": 0.9}), "vllm", True),
        (Acceptance(minAnswerConfidence=0.5), "tensorrtllm", True),
        (Acceptance(minAnswerConfidence=0.5), "python", False),
        (Acceptance(minAnswerConfidence=0.5), "onnxruntime", False),
        (Acceptance(minRoutingConfidence=0.5), "vllm", False),
        (Acceptance(), "vllm", False),
    ],
)
def test_wants_logprobs_per_tier_and_backend(acc, backend, want):
    assert wants_logprobs(acc, backend) is want


async def test_the_stream_collects_steps_only_when_logprobs_come():
    async def pieces(items):
        for p in items:
            yield p

    p = Progress(new_state(None, None))
    await consume(
        pieces([Piece("refund", 0.9, 1, None, -0.1), Piece(": ok", 0.9, 2, None, -0.1)]),
        p,
        reasoning_cap=None,
        output_cap=None,
        emit=None,
    )
    assert p.steps == [Step("refund", -0.1, 1), Step(": ok", -0.1, 2)]
    q = Progress(new_state(None, None))
    await consume(pieces([Piece("x", 0.5)]), q, reasoning_cap=None, output_cap=None, emit=None)
    assert q.steps is None and q.confidence == 0.5


# -- the decision record keeps the raw values -------------------------------------------


@pytest.mark.parametrize(
    ("raw", "served", "raw_answer", "answer", "want_route", "want_answer"),
    [
        (0.6, 0.8, 0.5, 0.7, 0.6, 0.5),
        (None, 0.8, None, 0.7, None, None),  # nothing calibrated: no raw keys
        (0.8, 0.8, 0.7, 0.7, None, None),  # identity: no raw keys
    ],
)
def test_record_keeps_the_raw_confidences(raw, served, raw_answer, answer, want_route, want_answer):
    d = Decision("r1")
    d.policy, d.route, d.route_source = "support", "ns/a", "classifier"
    d.confidence, d.raw_confidence = served, raw
    d.answer_confidence, d.raw_answer_confidence = answer, raw_answer
    doc = record_json(record_from_decision(d, started_at=1.0, duration_s=0.1))
    assert doc["route"]["confidence"] == served
    assert doc["route"].get("raw_confidence") == want_route
    assert doc["answer_confidence"] == answer
    assert doc.get("raw_answer_confidence") == want_answer
