"""Pure behaviour of the CPU stand-in models: prompt in, (text, confidence) out.

This file is copied next to ``model.py`` in every stand-in's model repository, because
Triton's Python backend stub imports the model standalone: it must depend on nothing
but the standard library and numpy (no slmfleet imports).

A token is one whitespace-separated word with its trailing whitespace, so the
concatenated stream deltas reconstruct the text exactly and ``max_tokens`` is easy to
check from the outside.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS = ("domain", "reasoner", "extractor", "generalist", "failing")

_TOKEN = re.compile(r"\s*\S+\s*")


class StandInError(Exception):
    """The model refuses the request; model.py turns it into a TritonError."""


@dataclass(frozen=True)
class Answer:
    text: str
    confidence: float
    label_first: bool = False
    """The first token is a label the model chose (a classifier); the rest follows from it."""


def token_logprobs(answer: Answer, deltas: list[str]) -> list[float]:
    """Log-probability of each token delta under the stand-in, as a vLLM model reports
    them summed in ``cumulative_logprob``.

    Honest for what the stand-ins are: a classifier picks its label with probability
    ``confidence`` and then writes a fixed sentence for it (probability 1 per token); the
    other stand-ins are ``confidence`` sure of every token they write, so the length-
    normalised score (geometric mean of token probabilities) is their confidence."""
    lp = math.log(max(answer.confidence, 1e-12))
    if answer.label_first:
        return [lp] + [0.0] * (len(deltas) - 1) if deltas else []
    return [lp] * len(deltas)


def cumulative(logprobs: list[float]) -> list[float]:
    """Prefix sums: the ``cumulative_logprob`` after each token."""
    out, total = [], 0.0
    for v in logprobs:
        total += v
        out.append(total)
    return out


def word_deltas(text: str, max_tokens: int | None = None) -> list[str]:
    """Split text into token deltas (leading whitespace rides on the first one)."""
    deltas = _TOKEN.findall(text)
    if not deltas and text:
        deltas = [text]  # whitespace only
    if max_tokens is not None:
        deltas = deltas[: max(0, max_tokens)]
    return deltas


def count_tokens(text: str) -> int:
    return len(text.split())


@dataclass(frozen=True)
class TokenCounts:
    """Which token counts a request asked for (the vLLM backend's additional outputs)."""

    input_tokens: int | None = None
    """The prompt's tokens, when ``return_num_input_tokens`` was set."""
    output: bool = False
    """Whether ``return_num_output_tokens`` was set."""


def parse_sampling(raw: str | bytes | None) -> dict[str, Any]:
    """sampling_parameters is JSON in a BYTES tensor; absent or empty means defaults."""
    if raw is None:
        return {}
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise StandInError(f"sampling_parameters is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise StandInError("sampling_parameters must be a JSON object")
    return value


def max_tokens_of(sampling: dict[str, Any]) -> int | None:
    value = sampling.get("max_tokens")
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise StandInError(f"max_tokens must be an integer, got {value!r}") from exc


def apply_word_lists(text: str, stop: list[str], bad: list[str]) -> str:
    """TensorRT-LLM's word lists, as the stand-ins honour them: the text ends before
    the first stop word, and bad words (whole words, case-insensitive) are left out."""
    cut = min((i for i in (text.find(w) for w in stop if w) if i >= 0), default=-1)
    if cut >= 0:
        text = text[:cut]
    banned = {w.lower() for w in bad if w}
    if banned:
        kept = [t for t in _TOKEN.findall(text) if t.strip().lower() not in banned]
        text = "".join(kept)
    return text


# -- domain: a tiny honest classifier ---------------------------------------------------

_DIM = 4096
_WORD = re.compile(r"[a-z0-9]+")


def _features(text: str) -> list[str]:
    """Words plus boundary-marked character trigrams: robust to typos and inflection."""
    feats: list[str] = []
    for word in _WORD.findall(text.lower()):
        feats.append("w:" + word)
        padded = f"^{word}$"
        feats.extend(padded[i : i + 3] for i in range(len(padded) - 2))
    return feats


def _counts(text: str) -> np.ndarray:
    vec = np.zeros(_DIM, dtype=np.float64)
    for feat in _features(text):
        vec[zlib.crc32(feat.encode()) % _DIM] += 1.0
    return vec


class DomainScorer:
    """Nearest-example classifier over TF-IDF hashed features.

    Confidence is the product of two honest quantities: how close the text is to any
    example at all (out-of-domain text scores low whatever the label), and how clearly
    the best label beats the others.
    """

    def __init__(
        self,
        examples: dict[str, list[str]],
        *,
        in_domain_similarity: float = 0.3,
        sharpness: float = 20.0,
        temperature: float = 0.05,
    ) -> None:
        if not examples or not all(examples.values()):
            raise ValueError("every label needs at least one example")
        self.labels = sorted(examples)
        texts = [t for label in self.labels for t in examples[label]]
        owners = [i for i, label in enumerate(self.labels) for _ in examples[label]]
        counts = np.stack([_counts(t) for t in texts])
        df = (counts > 0).sum(axis=0)
        # Features never seen in the examples get the highest weight: unfamiliar
        # wording pulls similarity down, which is the point.
        self.idf = np.log((1.0 + len(texts)) / (1.0 + df)) + 1.0
        self.matrix = self._normalise(counts * self.idf)
        self.owner = np.asarray(owners)
        self.in_domain_similarity = in_domain_similarity
        self.sharpness = sharpness
        self.temperature = temperature

    @staticmethod
    def _normalise(m: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(m, axis=-1, keepdims=True)
        return np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)

    def similarities(self, text: str) -> dict[str, float]:
        """Best cosine similarity to any example of each label."""
        query = self._normalise(_counts(text) * self.idf)
        sims = self.matrix @ query
        return {label: float(sims[self.owner == i].max()) for i, label in enumerate(self.labels)}

    def classify(self, text: str) -> tuple[str, float]:
        sims = self.similarities(text)
        scores = np.array([sims[label] for label in self.labels])
        best = int(scores.argmax())
        shifted = np.exp((scores - scores[best]) / self.temperature)
        label_share = float(shifted[best] / shifted.sum())
        in_domain = 1.0 / (
            1.0 + math.exp(-self.sharpness * (scores[best] - self.in_domain_similarity))
        )
        return self.labels[best], round(label_share * in_domain, 4)


class DomainModel:
    """Answers with the label and a short canned sentence.

    Parameters: ``examples`` (JSON object label -> list of utterances), optional
    ``replies`` (JSON object label -> sentence) and ``in_domain_similarity``.
    The text is ``"<label>: <sentence>"`` so the label is the first token.
    """

    def __init__(self, params: dict[str, str]) -> None:
        try:
            examples = json.loads(params["examples"])
        except (KeyError, ValueError) as exc:
            raise ValueError("domain stand-in needs an 'examples' JSON parameter") from exc
        self.replies: dict[str, str] = json.loads(params.get("replies", "{}"))
        kwargs = {}
        if "in_domain_similarity" in params:
            kwargs["in_domain_similarity"] = float(params["in_domain_similarity"])
        self.scorer = DomainScorer(examples, **kwargs)

    def respond(self, prompt: str, sampling: dict[str, Any]) -> Answer:
        label, confidence = self.scorer.classify(prompt)
        sentence = self.replies.get(label, f"This is a {label.replace('_', ' ')} request.")
        return Answer(f"{label}: {sentence}", confidence, label_first=True)


# -- reasoner: budgetable chain of thought ----------------------------------------------

_ARITHMETIC = re.compile(r"(-?\d+(?:\.\d+)?)\s*([-+*/x])\s*(-?\d+(?:\.\d+)?)")
_THINK_WORDS = ("consider", "the", "question", "carefully", "then", "check", "each", "step")


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.4g}"


def solve(question: str) -> str:
    """The reasoner's answer: arithmetic when it sees some, else an echo of the topic."""
    match = _ARITHMETIC.search(question)
    if match:
        a, op, b = float(match.group(1)), match.group(2), float(match.group(3))
        if op == "+":
            result = a + b
        elif op == "-":
            result = a - b
        elif op in "*x":
            result = a * b
        elif b == 0:
            return "The answer is undefined: division by zero."
        else:
            result = a / b
        return f"The answer is {_number(result)}."
    words = _WORD.findall(question.lower())
    topic = " ".join(words[-6:]) if words else "nothing"
    return f"The answer concerns {topic}."


class ReasonerModel:
    """Thinks ``think_tokens`` words inside the markers, then answers.

    When the prompt already ends with a closed reasoning section (the router cut the
    thinking short and appended the end marker) it answers straight away.
    """

    def __init__(self, params: dict[str, str]) -> None:
        self.start = params.get("start_marker", "<think>")
        self.end = params.get("end_marker", "</think>")
        self.default_think = int(params.get("think_tokens", "200"))

    def question_of(self, prompt: str) -> tuple[str, bool]:
        """(question, already_thought): the text before the reasoning section, if any."""
        stripped = prompt.rstrip()
        if stripped.endswith(self.end) and self.start in stripped:
            return stripped[: stripped.rfind(self.start)], True
        return prompt, False

    def respond(self, prompt: str, sampling: dict[str, Any]) -> Answer:
        question, thought = self.question_of(prompt)
        answer = solve(question)
        if thought:
            return Answer(answer, 0.9)
        think = int(sampling.get("think_tokens", self.default_think))
        steps = " ".join(_THINK_WORDS[i % len(_THINK_WORDS)] for i in range(max(0, think)))
        body = f"{self.start} {steps} {self.end} " if steps else f"{self.start} {self.end} "
        return Answer(body + answer, 0.9)


# -- extractor: JSON or honestly not JSON ----------------------------------------------

_ORDER_ID = re.compile(
    r"\b(?:order\s*(?:id|number|no\.?|#)?\s*[:#]?\s*)([A-Z]{2,4}-?\d{3,})", re.IGNORECASE
)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_AMOUNT = re.compile(r"(?:[$€£]\s?(\d+(?:\.\d{1,2})?)|(\d+(?:\.\d{1,2})?)\s?(?:USD|EUR|GBP))")


def extract(text: str) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if m := _ORDER_ID.search(text):
        fields["order_id"] = m.group(1).upper()
    if m := _EMAIL.search(text):
        fields["email"] = m.group(0)
    if m := _AMOUNT.search(text):
        fields["amount"] = float(m.group(1) or m.group(2))
    return fields


class ExtractorModel:
    """Returns the fields as a JSON object; with none found, prose that is not JSON."""

    def __init__(self, params: dict[str, str]) -> None:
        pass

    def respond(self, prompt: str, sampling: dict[str, Any]) -> Answer:
        fields = extract(prompt)
        if not fields:
            return Answer("I could not find an order id, email or amount in the text.", 0.1)
        confidence = min(0.99, 0.6 + 0.15 * len(fields))
        return Answer(json.dumps(fields, sort_keys=True), round(confidence, 4))


# -- generalist and failing ---------------------------------------------------------------


class GeneralistModel:
    """The expensive fallback: always answers, deterministically, with confidence 0.99."""

    def __init__(self, params: dict[str, str]) -> None:
        self.name = params.get("display_name", "generalist")

    def respond(self, prompt: str, sampling: dict[str, Any]) -> Answer:
        question = " ".join(prompt.split())
        if len(question) > 200:
            question = question[:200] + "..."
        return Answer(
            f"Here is a complete answer from the {self.name} model. "
            f"You asked: {question} {solve(question)}",
            0.99,
        )


class FailingModel:
    """Always errors, so routers exercise their fallback paths."""

    def __init__(self, params: dict[str, str]) -> None:
        self.message = params.get("message", "stand-in model failure (by design)")

    def respond(self, prompt: str, sampling: dict[str, Any]) -> Answer:
        raise StandInError(self.message)


_MODELS = {
    "domain": DomainModel,
    "reasoner": ReasonerModel,
    "extractor": ExtractorModel,
    "generalist": GeneralistModel,
    "failing": FailingModel,
}


def build(params: dict[str, str]) -> Any:
    """The behaviour named by the ``standin`` parameter, configured by the others."""
    kind = params.get("standin")
    if kind not in _MODELS:
        raise ValueError(f"parameter 'standin' must be one of {', '.join(KINDS)}, got {kind!r}")
    return _MODELS[kind](params)
