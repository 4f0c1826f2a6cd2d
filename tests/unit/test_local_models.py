"""Pure behaviour of the CPU stand-ins (what runs inside Triton, minus the tensors)."""

from __future__ import annotations

import json

import pytest

from slmfleet.local.models import (
    BILLING_EXAMPLES,
    SHIPPING_EXAMPLES,
    StandIn,
    default_fleet,
    write_model_repository,
)
from slmfleet.local.models import standin as s


@pytest.mark.parametrize(
    "text",
    [
        "one two  three\n four ",
        "  leading space",
        "single",
        "<think> a b </think> The answer is 42.",
    ],
)
def test_word_deltas_reconstruct_text(text: str) -> None:
    deltas = s.word_deltas(text)
    assert "".join(deltas) == text
    assert len(deltas) == s.count_tokens(text)


def test_word_deltas_keep_trailing_space_and_cap() -> None:
    assert s.word_deltas("a b c d", 2) == ["a ", "b "]
    assert s.word_deltas("a b", 0) == []
    assert s.word_deltas("a b", 10) == ["a ", "b"]
    assert s.word_deltas("") == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, {}),
        (b"", {}),
        ("  ", {}),
        (b'{"max_tokens": 3}', {"max_tokens": 3}),
    ],
)
def test_parse_sampling(raw: str | bytes | None, expected: dict) -> None:
    assert s.parse_sampling(raw) == expected


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]"])
def test_parse_sampling_refuses_garbage(raw: str) -> None:
    with pytest.raises(s.StandInError):
        s.parse_sampling(raw)


def test_max_tokens_must_be_integer() -> None:
    assert s.max_tokens_of({"max_tokens": "5"}) == 5
    assert s.max_tokens_of({}) is None
    with pytest.raises(s.StandInError):
        s.max_tokens_of({"max_tokens": "many"})


@pytest.mark.parametrize(
    ("examples", "text", "label"),
    [
        (BILLING_EXAMPLES, "I was charged twice and want my money refunded", "refund"),
        (BILLING_EXAMPLES, "how can I change my credit card", "payment_method"),
        (SHIPPING_EXAMPLES, "where is my parcel? it has not arrived", "tracking"),
        (SHIPPING_EXAMPLES, "my package arrived broken", "damaged"),
    ],
)
def test_domain_scorer_in_domain_is_confident(examples: dict, text: str, label: str) -> None:
    got, confidence = s.DomainScorer(examples).classify(text)
    assert got == label
    assert confidence > 0.8


@pytest.mark.parametrize(
    "text",
    [
        "what is the capital of France",
        "write a poem about the sea",
        "What is 17 + 25?",
    ],
)
def test_domain_scorer_out_of_domain_is_not(text: str) -> None:
    for examples in (BILLING_EXAMPLES, SHIPPING_EXAMPLES):
        assert s.DomainScorer(examples).classify(text)[1] < 0.2


def test_domain_scorer_needs_examples() -> None:
    with pytest.raises(ValueError):
        s.DomainScorer({"a": []})


def test_domain_model_answers_label_first() -> None:
    model = s.build(
        {
            "standin": "domain",
            "examples": json.dumps(SHIPPING_EXAMPLES),
            "replies": json.dumps({"tracking": "It is on its way."}),
        }
    )
    answer = model.respond("track my parcel please", {})
    assert answer.text == "tracking: It is on its way."


def test_reasoner_thinks_then_answers() -> None:
    model = s.ReasonerModel({"think_tokens": "7"})
    text = model.respond("What is 17 + 25?", {}).text
    head, _, answer = text.partition("</think>")
    assert head.startswith("<think> ")
    assert s.count_tokens(head) == 1 + 7
    assert answer.strip() == "The answer is 42."
    assert s.count_tokens(model.respond("What is 6 x 7?", {"think_tokens": 3}).text) == 3 + 2 + 4


def test_reasoner_answers_at_once_after_cut_thinking() -> None:
    model = s.ReasonerModel({})
    prompt = "What is 100 / 8? <think> consider the question </think>\n"
    assert model.respond(prompt, {"think_tokens": 500}).text == "The answer is 12.5."
    assert model.question_of("plain </think>") == ("plain </think>", False)


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("9 - 12", "The answer is -3."),
        ("1/0", "The answer is undefined: division by zero."),
        ("Why is the sky blue", "The answer concerns why is the sky blue."),
    ],
)
def test_solve(question: str, answer: str) -> None:
    assert s.solve(question) == answer


def test_extractor_finds_fields() -> None:
    answer = s.ExtractorModel({}).respond(
        "Order #ABC-12345 for jane.doe@example.com, total $19.99", {}
    )
    assert json.loads(answer.text) == {
        "order_id": "ABC-12345",
        "email": "jane.doe@example.com",
        "amount": 19.99,
    }
    assert answer.confidence > 0.9


def test_extractor_without_fields_is_not_json() -> None:
    answer = s.ExtractorModel({}).respond("hello there", {})
    with pytest.raises(ValueError):
        json.loads(answer.text)
    assert answer.confidence < 0.5


def test_generalist_and_failing() -> None:
    answer = s.build({"standin": "generalist"}).respond("What is 2 + 2?", {})
    assert answer.confidence == 0.99
    assert "The answer is 4." in answer.text
    with pytest.raises(s.StandInError, match="by design"):
        s.build({"standin": "failing"}).respond("x", {})
    with pytest.raises(ValueError, match="standin"):
        s.build({"standin": "oracle"})


def test_write_model_repository(tmp_path) -> None:
    root = write_model_repository(tmp_path, default_fleet())
    names = sorted(p.name for p in root.iterdir())
    assert names == [
        "domain-billing",
        "domain-shipping",
        "extractor",
        "failing",
        "generalist",
        "reasoner",
    ]
    for name in names:
        config = (root / name / "config.pbtxt").read_text()
        assert f'name: "{name}"' in config
        assert "decoupled: true" in config
        assert sorted(p.name for p in (root / name / "1").iterdir()) == ["model.py", "standin.py"]
    # Rewriting replaces, it does not accumulate.
    write_model_repository(tmp_path, {"failing": StandIn("failing", {"message": "boom"})})
    assert 'string_value: "boom"' in (root / "failing" / "config.pbtxt").read_text()


def test_model_source_imports_outside_triton() -> None:
    from slmfleet.local.models import model

    assert model.pb_utils is None
    assert hasattr(model.TritonPythonModel, "execute")


# -- the harness's pure parts (no server started) ----------------------------------------


def test_backend_directory_is_built_once(tmp_path) -> None:
    pytest.importorskip("pytriton")
    from slmfleet.local.triton import backend_directory

    first = backend_directory(tmp_path)
    stub = first / "python" / "triton_python_backend_stub"
    assert stub.is_file() and (first / "python" / "libtriton_python.so").is_file()
    assert backend_directory(tmp_path) == first
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no staging left behind


def test_server_environment_puts_interpreter_first(tmp_path) -> None:
    pytest.importorskip("pytriton")
    import sys
    import sysconfig

    from slmfleet.local import TritonServer

    server = TritonServer(
        tmp_path, http_port=1, grpc_port=2, metrics_port=3, log_path=tmp_path / "log"
    )
    env = server.environment()
    assert env["LD_LIBRARY_PATH"].split(":")[0] == sysconfig.get_config_var("LIBDIR")
    assert "nvidia_pytriton.libs" in env["LD_LIBRARY_PATH"]
    assert env["PATH"].split(":")[0] == f"{sys.prefix}/bin"
    args = server.command()
    assert f"--backend-config=python,shm-region-prefix-name={server.shm_prefix}" in args
    assert server.grpc_url == "127.0.0.1:2"
    assert server.metrics_url == "http://127.0.0.1:3/metrics"
