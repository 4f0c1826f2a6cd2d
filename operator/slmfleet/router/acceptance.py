"""Whether a tier's answer is accepted, pure: confidence thresholds and validators.

The *label* of an answer (for per-label thresholds) is, in order: the ``label`` field
of an answer that is a JSON object, else the first word of the stripped answer,
lower-cased, with surrounding punctuation removed. Classification-style specialists
answer with the label first ("refund", "refund: because ..."), so both shapes work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from ..api.routerconfig import AcceptanceConfig as Acceptance
from .validators import SchemaCheck, compile_json_schema, compile_user_regex

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_PUNCT = " \t\r\n.,;:!?\"'()[]{}<>`*"


def label_of(answer: str) -> str:
    text = answer.strip()
    if text.startswith("{"):
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("label"), str):
            return obj["label"].strip().lower()
    first = text.split(None, 1)[0] if text else ""
    return first.strip(_PUNCT).lower()


def _json_of(answer: str) -> object:
    text = answer.strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1)
    return orjson.loads(text)


@dataclass(frozen=True, slots=True)
class CompiledValidator:
    name: str
    schema: SchemaCheck | None
    regex: Any  # an RE2 pattern: linear-time matching of tenant patterns

    def check(self, answer: str) -> bool:
        if self.regex is not None:
            return self.regex.fullmatch(answer.strip()) is not None
        try:
            doc = _json_of(answer)
        except orjson.JSONDecodeError:
            return False
        assert self.schema is not None
        return self.schema.is_valid(doc)


@dataclass(frozen=True, slots=True)
class CompiledAcceptance:
    min_routing_confidence: float | None
    min_answer_confidence: float | None
    label_thresholds: dict[str, float]
    validators: tuple[CompiledValidator, ...]

    @property
    def checks_answer(self) -> bool:
        """Whether the answer must be complete before it can be accepted."""
        return bool(
            self.validators or self.min_answer_confidence is not None or self.label_thresholds
        )


def compile_acceptance(acc: Acceptance) -> CompiledAcceptance:
    validators = tuple(
        CompiledValidator(
            v.name,
            compile_json_schema(v.json_schema) if v.json_schema is not None else None,
            compile_user_regex(v.regex, dotall=True) if v.regex is not None else None,
        )
        for v in acc.validators
    )
    return CompiledAcceptance(
        acc.min_routing_confidence,
        acc.min_answer_confidence,
        {k.lower(): v for k, v in acc.label_thresholds.items()},
        validators,
    )


def evaluate(
    acc: CompiledAcceptance,
    *,
    routing_confidence: float,
    answer: str,
    answer_confidence: float | None,
) -> tuple[str, ...]:
    """Reasons to reject the answer; empty means accepted.

    Answer-confidence thresholds only apply when the model reported a confidence.
    A per-label threshold replaces the tier's min_answer_confidence for that label.
    """
    reasons: list[str] = []
    if acc.min_routing_confidence is not None and routing_confidence < acc.min_routing_confidence:
        reasons.append("low_routing_confidence")
    reasons.extend(f"validator:{v.name}" for v in acc.validators if not v.check(answer))
    if answer_confidence is not None:
        label = label_of(answer) if acc.label_thresholds else ""
        if label in acc.label_thresholds:
            if answer_confidence < acc.label_thresholds[label]:
                reasons.append(f"label_threshold:{label}")
        elif acc.min_answer_confidence is not None and (
            answer_confidence < acc.min_answer_confidence
        ):
            reasons.append("low_answer_confidence")
    return tuple(reasons)
