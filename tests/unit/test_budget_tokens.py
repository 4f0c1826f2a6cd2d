"""Token counting: the tokenizer counter, the byte bound, the count-tensor codec."""

from __future__ import annotations

import struct

import pytest
from tritonclient.grpc import service_pb2

from slmfleet.budget.tokens import (
    SPECIAL_TOKENS_ALLOWANCE,
    ByteBound,
    TokenizerCounter,
    counter_for,
)
from slmfleet.router.embed import model_dir
from slmfleet.router.triton.codec import build_request
from slmfleet.router.triton.counts import (
    TokenCounts,
    read_token_counts,
    request_token_counts,
    total_counts,
)

TEXTS = ["", "hello world", "Ünïcödé \u2013 ≠ 日本語のテキスト 🙂", "refund " * 200, "a\tb\nc  d"]


@pytest.fixture(scope="module")
def tokenizer_file():
    # A real tokenizer.json shipped by a registry package (all-MiniLM-L6-v2's WordPiece).
    return model_dir() / "tokenizer.json"


def test_tokenizer_counts_what_the_tokenizer_encodes(tokenizer_file):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_truncation()
    tok.no_padding()
    counter = counter_for(tokenizer_file)
    assert isinstance(counter, TokenizerCounter)
    for text in TEXTS:
        exact = len(tok.encode(text, add_special_tokens=False).ids)
        assert counter.count(text) == exact
        # With special tokens the model sees more than the text: the bound covers them.
        assert counter.upper_bound(text) >= len(tok.encode(text).ids)
    assert counter.count("hello world") == 2
    assert counter.count("refund " * 200) == 200 * counter.count("refund") > 128  # no cut


def test_without_a_tokenizer_the_byte_bound_holds(tokenizer_file, tmp_path):
    assert isinstance(counter_for(None), ByteBound)
    assert isinstance(counter_for(tmp_path / "missing.json"), ByteBound)
    real = TokenizerCounter.from_file(tokenizer_file)
    for text in TEXTS:
        assert ByteBound().upper_bound(text) >= real.count(text) + 2
        assert ByteBound().upper_bound(text) == len(text.encode()) + SPECIAL_TOKENS_ALLOWANCE


def test_request_asks_for_counts_in_the_vllm_contract():
    req = request_token_counts(build_request("m", "hi", {"max_tokens": 4}, "r1"))
    names = [t.name for t in req.inputs]
    assert names[-2:] == ["return_num_output_tokens", "return_num_input_tokens"]
    assert [t.datatype for t in req.inputs[-2:]] == ["BOOL", "BOOL"]
    assert list(req.inputs[-1].shape) == [1]
    # raw_input_contents stays aligned with the inputs (Triton rejects it otherwise).
    assert len(req.raw_input_contents) == len(req.inputs)
    assert req.raw_input_contents[-1] == b"\x01"
    only_out = request_token_counts(build_request("m", "hi", {}, "r2"), input_tokens=False)
    assert [t.name for t in only_out.inputs][-1] == "return_num_output_tokens"


def response(**tensors):
    resp = service_pb2.ModelInferResponse()
    for name, values in tensors.items():
        out = resp.outputs.add()
        out.name, out.datatype = name, "UINT32"
        out.shape.append(len(values))
        resp.raw_output_contents.append(b"".join(struct.pack("<I", v) for v in values))
    return resp


def test_read_token_counts():
    assert read_token_counts(response()) == TokenCounts()
    assert read_token_counts(response(num_output_tokens=[3])) == TokenCounts(None, 3)
    got = read_token_counts(response(num_input_tokens=[17], num_output_tokens=[2, 5]))
    assert got == TokenCounts(17, 7)  # n=2 sequences: summed
    # Typed contents instead of raw bytes work too.
    resp = service_pb2.ModelInferResponse()
    out = resp.outputs.add()
    out.name, out.datatype = "num_output_tokens", "UINT32"
    out.contents.uint_contents.extend([4])
    assert read_token_counts(resp) == TokenCounts(None, 4)


def test_read_token_counts_refuses_garbage():
    resp = service_pb2.ModelInferResponse()
    out = resp.outputs.add()
    out.name, out.datatype = "num_output_tokens", "UINT32"
    resp.raw_output_contents.append(b"\x01\x02\x03")
    with pytest.raises(ValueError):
        read_token_counts(resp)
    resp.outputs[0].datatype = "FP32"
    with pytest.raises(ValueError):
        read_token_counts(resp)


def test_total_counts():
    parts = [TokenCounts(9, 1), TokenCounts(9, 1), TokenCounts(None, None), TokenCounts(9, 2)]
    assert total_counts(parts) == TokenCounts(9, 4)
    assert total_counts([]) == TokenCounts()
