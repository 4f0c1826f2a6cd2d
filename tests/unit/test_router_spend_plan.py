"""The accounting rules of one tier call, pure: worst case, upstream bounds, actual."""

from __future__ import annotations

import pytest

from slmfleet.budget.amounts import Amount
from slmfleet.budget.tokens import SPECIAL_TOKENS_ALLOWANCE, ByteBound, TokenizerCounter
from slmfleet.router.embed import model_dir
from slmfleet.router.tiers.plan import (
    EXTERNAL_DEFAULT_OUTPUT_TOKENS,
    PER_MESSAGE_TOKENS,
    ContextExceeded,
    bounded_sampling,
    context_room,
    continuation_bound,
    external_plan,
    input_tokens,
    message_bound,
    output_tokens,
    specialist_plan,
)
from slmfleet.router.tracebudget import Caps

PRICES = (1.0, 2.0)  # USD per million input, output tokens
ALLOW = SPECIAL_TOKENS_ALLOWANCE


@pytest.mark.parametrize(
    ("sampling", "max_tokens", "expected"),
    [
        ({}, 8, {"max_tokens": 8}),
        # a caller's own max_tokens (body or sampling_parameters) never raises the cap
        ({"max_tokens": 10**6, "temperature": 0.2}, 8, {"max_tokens": 8, "temperature": 0.2}),
        ({"max_completion_tokens": 10**6}, 8, {"max_tokens": 8}),
        # nor do parameters that multiply the output
        ({"n": 16, "best_of": 16, "use_beam_search": True, "beam_width": 4}, 8, {"max_tokens": 8}),
        # min_tokens above the cap would be an upstream error: held to it
        ({"min_tokens": 50, "top_p": 0.9}, 8, {"max_tokens": 8, "min_tokens": 8, "top_p": 0.9}),
        ({"min_tokens": 3}, 8, {"max_tokens": 8, "min_tokens": 3}),
        ({"think_tokens": 40}, 5, {"max_tokens": 5, "think_tokens": 40}),
    ],
)
def test_bounded_sampling(sampling, max_tokens, expected):
    assert bounded_sampling(sampling, max_tokens) == expected


@pytest.mark.parametrize(
    ("caps", "reasons", "halve", "out_cap", "rcap", "halved", "worst_in", "worst_out"),
    [
        # no caps: what the context leaves after the prompt (bounded by its bytes)
        (Caps(), False, False, 4096 - 5 - ALLOW, None, False, 5 + ALLOW, 4096 - 5 - ALLOW),
        (Caps(max_output_tokens=100), False, False, 100, None, False, 5 + ALLOW, 100),
        # halveReasoning does nothing to a model that does not reason
        (Caps(max_output_tokens=100), False, True, 100, None, False, 5 + ALLOW, 100),
        # reasoning: the continuation (prompt + thought + marker in, answer out) counts too
        (
            Caps(max_reasoning_tokens=40, max_output_tokens=100, answer_tokens=10),
            True,
            False,
            100,
            40,
            False,
            (5 + ALLOW) * 2 + 40 + 8,
            110,
        ),
        (
            Caps(max_reasoning_tokens=40, max_output_tokens=100, answer_tokens=10),
            True,
            True,
            100,
            20,
            True,
            (5 + ALLOW) * 2 + 20 + 8,
            110,
        ),
        # no reasoning cap: halving takes half the output cap
        (
            Caps(max_output_tokens=100, answer_tokens=10),
            True,
            True,
            100,
            45,
            True,
            (5 + ALLOW) * 2 + 45 + 8,
            110,
        ),
    ],
)
def test_specialist_plan(caps, reasons, halve, out_cap, rcap, halved, worst_in, worst_out):
    p = specialist_plan(
        "hello", caps, reasons=reasons, halve_reasoning=halve, context_length=4096, prices=PRICES
    )
    assert (p.output_cap, p.reasoning_cap, p.reasoning_halved) == (out_cap, rcap, halved)
    assert p.input_bound == 5 + ALLOW
    assert p.worst.tokens == worst_in + worst_out
    assert p.worst.usd == pytest.approx((worst_in * 1 + worst_out * 2) / 1e6)
    if rcap is not None:
        assert continuation_bound(p) == p.input_bound + rcap + 8


MINILM = TokenizerCounter.from_file(model_dir() / "tokenizer.json")
N = 3  # "refund please" in MiniLM's WordPiece: ref ##und please


@pytest.mark.parametrize(
    ("prompt", "context", "counter", "room"),
    [
        # the byte bound when it leaves room (never too much), tokenizer or not
        ("refund please", 4096, MINILM, 4096 - 13 - ALLOW),
        ("refund please", 4096, ByteBound(), 4096 - 13 - ALLOW),
        # the bytes fill the context: a tokenizer counts (context - tokens - allowance)
        ("refund please", 13 + ALLOW, MINILM, 13 + ALLOW - N - ALLOW),
        ("refund please", N + ALLOW + 1, MINILM, 1),
        ("x" * 100, 117, ByteBound(), 1),
        # past the byte bound the router cannot tell: ~4 bytes a token, the backend decides
        ("x" * 100, 116, ByteBound(), 116 - 25),
        ("x" * 1000, 116, ByteBound(), 1),
    ],
)
def test_context_room(prompt, context, counter, room):
    assert context_room(prompt, context, counter) == room


@pytest.mark.parametrize("context", [N + ALLOW, N, 1])
def test_a_prompt_that_fills_the_context_is_refused(context):
    with pytest.raises(ContextExceeded) as err:
        context_room("refund please", context, MINILM)
    assert (err.value.prompt_tokens, err.value.context_length) == (N, context)
    assert f"maximum context length is {context} tokens" in str(err.value)


@pytest.mark.parametrize(
    ("caps", "counter", "out_cap"),
    [
        (Caps(), MINILM, 64 - 13 - ALLOW),  # all the context leaves after the bytes
        (Caps(max_output_tokens=10), MINILM, 10),  # a smaller cap stands
        # a larger one cannot: the bytes do not leave it, so the prompt is counted
        (Caps(max_output_tokens=1000), MINILM, 64 - N - ALLOW),
        (Caps(max_output_tokens=1000), ByteBound(), 64 - 13 - ALLOW),
    ],
)
def test_the_output_cap_fits_the_context(caps, counter, out_cap):
    """prompt + max_tokens <= context: what vLLM and TensorRT-LLM accept."""
    p = specialist_plan(
        "refund please", caps, reasons=False, halve_reasoning=False, context_length=64,
        prices=PRICES, counter=counter,
    )  # fmt: skip
    assert p.output_cap == out_cap
    assert p.worst.tokens == 13 + ALLOW + out_cap  # the reservation follows the cap


class CountingCounter(TokenizerCounter):
    def __init__(self) -> None:
        super().__init__(MINILM.tokenizer)
        self.calls = 0

    def count(self, text: str) -> int:
        self.calls += 1
        return super().count(text)


def test_the_tokenizer_runs_only_when_the_bytes_fill_the_context():
    """Counting is the request path's cost (~1 ms for 3,000 characters, on the loop)."""
    counter = CountingCounter()
    long = "how do I get my money back for order 1234? " * 70  # ~3,000 characters
    assert context_room(long, 4096, counter) == 4096 - len(long) - ALLOW
    assert counter.calls == 0
    assert context_room(long, 2048, counter) == 2048 - MINILM.count(long) - ALLOW
    assert counter.calls == 1


def test_a_cap_the_bytes_cannot_leave_is_checked_against_the_real_count():
    """8K context, a ~7,000-byte English prompt (~1,500 tokens), max_tokens 4,000: the
    bytes alone would cut the answer to ~1,100 tokens although the context has room."""
    prompt = "please summarise the delivery terms of my last order " * 130
    caps = Caps(max_output_tokens=4000)
    p = specialist_plan(
        prompt, caps, reasons=False, halve_reasoning=False, context_length=8192,
        prices=PRICES, counter=MINILM,
    )  # fmt: skip
    assert len(prompt) + ALLOW + 4000 > 8192 and p.output_cap == 4000


def test_the_byte_bound_holds_for_a_real_tokenizer():
    counter = TokenizerCounter.from_file(model_dir() / "tokenizer.json")
    for text in ["refund please", "Ünïcödé ≠ 日本語 🙂" * 20, "x" * 5000]:
        p = specialist_plan(
            text, Caps(), reasons=False, halve_reasoning=False, context_length=10, prices=PRICES
        )
        assert counter.count(text) + 2 <= p.input_bound  # [CLS]/[SEP] included


@pytest.mark.parametrize(
    ("backend", "text", "exact", "cap", "expected"),
    [
        (7, "whatever", True, 3, 7),  # the backend's count is the count, even past the bound
        (None, "one two three", True, 100, None),  # the tokenizer's count
        (None, "one two three", True, 2, 2),  # never above the reservation's bound
        (None, "one two three", False, 100, 13),  # no tokenizer: the byte bound
    ],
)
def test_input_tokens(backend, text, exact, cap, expected):
    counter = TokenizerCounter.from_file(model_dir() / "tokenizer.json") if exact else ByteBound()
    if expected is None:
        expected = counter.count(text)
    assert input_tokens(backend, text, counter, cap=cap) == expected


@pytest.mark.parametrize(
    ("backend", "text", "exact", "deltas", "cap", "expected"),
    [
        (9, "a b", True, 2, 4, 9),  # the backend's count
        (None, "a b c d", True, 1, 100, 4),  # the tokenizer: more than the deltas seen
        (None, "a b c d", True, 6, 100, 6),  # at least one token per delta
        (None, "a b c d", True, 1, 3, 3),  # at most max_tokens (the backend enforces it)
        (None, "a b c d", False, 2, 100, 2),  # no tokenizer: the deltas
    ],
)
def test_output_tokens(backend, text, exact, deltas, cap, expected):
    counter = TokenizerCounter.from_file(model_dir() / "tokenizer.json") if exact else ByteBound()
    assert output_tokens(backend, text, counter, deltas=deltas, cap=cap) == expected


def test_external_plan():
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert message_bound(msgs) == 8 + 2 + 2 * PER_MESSAGE_TOKENS + ALLOW
    p = external_plan(msgs, Caps(), PRICES)
    assert p.output_cap == EXTERNAL_DEFAULT_OUTPUT_TOKENS
    assert p.worst == Amount(
        (message_bound(msgs) + 2 * EXTERNAL_DEFAULT_OUTPUT_TOKENS) / 1e6,
        message_bound(msgs) + EXTERNAL_DEFAULT_OUTPUT_TOKENS,
    )
    assert external_plan(msgs, Caps(max_output_tokens=50), PRICES).output_cap == 50
