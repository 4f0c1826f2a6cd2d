"""The decision record: what the router decided about one request, as the log keeps it.

The router builds one ``DecisionRecord`` per request from its ``Decision`` (see
``record_from_decision``) and hands it to the writer. Building it is cheap (field
copies, no serialisation, no hashing): the privacy rules and the JSON encoding run in
the writer's thread (``to_row``), off the request path.

Schema version 1 (the ``record`` JSON column; the same keys in every backend)::

    v, request_id, time, policy, kind, stream, status, error,
    route: {specialist, source, confidence, raw_confidence, scores, stage},
    tier, target, accepted, answer_confidence, raw_answer_confidence,
    attempts: [{tier, outcome, reasons, target, latency_ms, answer_confidence,
                validators, prompt_tokens, completion_tokens, reasoning_tokens,
                cost_usd, truncated}],
    tokens: {input, output, reasoning},
    latency_ms: {total, router, upstream},
    cost_usd, truncated, budget: {degraded, exceeded}, review: {queue, case_id},
    prompt / answer / routing_text: absent (content off) | {sha256, chars} |
                                    {text, chars, cut}

``confidence`` and ``answer_confidence`` are what the router compared (calibrated when
the policy has calibrators); ``raw_confidence`` / ``raw_answer_confidence``, present
when they differ, are the values before calibration (what the next calibrator is
fitted on; see learn/store_outcomes.py).

``attempts[].outcome`` is ``accepted`` (its answer was returned and passed),
``rejected`` (it answered; the answer failed acceptance), ``failed`` (error, timeout,
open circuit, unready), ``skipped`` (not called: routing confidence, budget), or
``returned`` (no tier passed; this rejected answer was the one returned).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from .privacy import content_field
from .settings import ContentPolicy

SCHEMA_VERSION = 1

_FAILED = frozenset({"error", "timeout", "circuit_open", "unready"})
_SKIPPED = frozenset(
    {"low_routing_confidence", "budget_degrade", "budget_exceeded", "out_of_domain"}
)


@dataclass(slots=True)
class TierAttempt:
    """One cascade tier the request reached."""

    tier: str
    outcome: str
    reasons: tuple[str, ...] = ()
    target: str | None = None
    latency_ms: float | None = None
    answer_confidence: float | None = None
    validators: dict[str, bool] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    truncated: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tier": self.tier, "outcome": self.outcome}
        if self.reasons:
            out["reasons"] = list(self.reasons)
        for key in (
            "target",
            "latency_ms",
            "answer_confidence",
            "validators",
            "prompt_tokens",
            "completion_tokens",
            "reasoning_tokens",
            "cost_usd",
            "truncated",
        ):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(slots=True)
class DecisionRecord:
    """One request's decision, as captured on the request path (raw prompt/answer
    references included; ``to_row`` applies the content policy)."""

    request_id: str
    time: float
    policy: str
    status: int = 200
    error: str | None = None
    kind: str = "chat"
    stream: bool = False
    route: str | None = None
    route_source: str = "-"
    classifier_stage: str | None = None
    routing_confidence: float = 0.0
    route_scores: Mapping[str, float] | None = None
    tier: str | None = None
    target: str | None = None
    accepted: bool = True
    answer_confidence: float | None = None
    raw_routing_confidence: float | None = None
    raw_answer_confidence: float | None = None
    attempts: list[TierAttempt] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    latency_total_ms: float = 0.0
    latency_upstream_ms: float = 0.0
    cost_usd: float = 0.0
    truncated: bool = False
    degraded: bool = False
    budget_exceeded: tuple[str, ...] = ()
    review_queue: str | None = None
    case_id: str | None = None
    prompt: str | None = None
    answer: str | None = None
    routing_text: str | None = None
    """The text the classifier routed on (what the learning loop learns examples from)."""
    content: ContentPolicy | None = None

    def size_hint(self) -> int:
        """Characters of text this record holds on to (the writer's byte budget)."""
        return 512 + len(self.prompt or "") + len(self.answer or "") + len(self.routing_text or "")


def attempts_from_escalations(
    escalations: Sequence[str], final_tier: str | None, accepted: bool, status: int
) -> list[TierAttempt]:
    """Tier attempts reconstructed from a ``tier:reason`` escalation list.

    For a Decision that carries no ``attempts`` of its own (the router records them as
    it goes: ``router/hops.py``). ``routing:*`` entries are the routing stage, not a
    tier, and are skipped here (the route keeps them).
    """
    attempts: list[TierAttempt] = []
    for item in escalations:
        tier, _, reason = item.partition(":")
        if tier == "routing" or not reason:
            continue
        if attempts and attempts[-1].tier == tier:
            attempts[-1].reasons += (reason,)
        else:
            attempts.append(TierAttempt(tier, "", (reason,)))
    for a in attempts:
        a.outcome = _outcome(a.reasons)
        failed_validators = {
            r.split(":", 1)[1]: False for r in a.reasons if r.startswith("validator:")
        }
        if failed_validators:
            a.validators = failed_validators
    if final_tier and final_tier != "-" and status < 400:
        if accepted:
            attempts.append(TierAttempt(final_tier, "accepted"))
        else:
            # The returned answer is a rejected one, listed above: mark it returned.
            for a in reversed(attempts):
                if a.tier == final_tier and a.outcome == "rejected":
                    a.outcome = "returned"
                    break
            else:
                attempts.append(TierAttempt(final_tier, "returned"))
    return attempts


def _outcome(reasons: Iterable[str]) -> str:
    reasons = tuple(reasons)
    if any(r in _FAILED for r in reasons):
        return "failed"
    if reasons and all(r in _SKIPPED for r in reasons):
        return "skipped"
    return "rejected"


def record_from_decision(
    d: Any,
    *,
    started_at: float,
    duration_s: float,
    content: ContentPolicy | None = None,
    prompt: str | None = None,
    answer: str | None = None,
    routing_text: str | None = None,
    kind: str = "chat",
    stream: bool = False,
    route_scores: Mapping[str, float] | None = None,
    attempts: list[TierAttempt] | None = None,
    case_id: str | None = None,
) -> DecisionRecord:
    """The record of the router's ``Decision`` ``d`` (read by attribute name: request_id,
    policy, route, route_source, classifier_stage, confidence, route_scores, tier,
    target, accepted, answer_confidence, prompt/completion/reasoning_tokens, cost_usd,
    truncated, attempts, escalations, human_queue, case_id, degraded, budget_exceeded,
    upstream_s, status, error).

    The tier attempts are the Decision's own (``router.decision.Attempt``) when it
    records them, else derived from its ``tier:reason`` escalations.

    ``started_at`` is the wall-clock time the request arrived; ``duration_s`` its total
    time. ``prompt`` and ``answer`` are kept only if ``content`` says so.
    """
    status = int(getattr(d, "status", 200))
    tier = _dash(getattr(d, "tier", None))
    accepted = bool(getattr(d, "accepted", True))
    if attempts is None:
        recorded = getattr(d, "attempts", None)
        attempts = (
            [attempt_of(a) for a in recorded]
            if recorded
            else attempts_from_escalations(
                getattr(d, "escalations", ()) or (), tier, accepted, status
            )
        )
    if route_scores is None:
        route_scores = getattr(d, "route_scores", None)
    if case_id is None:
        case_id = getattr(d, "case_id", None)
    keep = content is not None and content.content != "off"
    return DecisionRecord(
        request_id=d.request_id,
        time=started_at,
        policy=getattr(d, "policy", "-") or "-",
        status=status,
        error=getattr(d, "error", None),
        kind=kind,
        stream=stream,
        route=_dash(getattr(d, "route", None)),
        route_source=getattr(d, "route_source", "-") or "-",
        classifier_stage=_dash(getattr(d, "classifier_stage", None)),
        routing_confidence=float(getattr(d, "confidence", 0.0) or 0.0),
        route_scores=route_scores,
        tier=tier,
        target=_dash(getattr(d, "target", None)),
        accepted=accepted,
        answer_confidence=getattr(d, "answer_confidence", None),
        raw_routing_confidence=getattr(d, "raw_confidence", None),
        raw_answer_confidence=getattr(d, "raw_answer_confidence", None),
        attempts=attempts,
        prompt_tokens=int(getattr(d, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(d, "completion_tokens", 0) or 0),
        reasoning_tokens=int(getattr(d, "reasoning_tokens", 0) or 0),
        latency_total_ms=duration_s * 1000.0,
        latency_upstream_ms=float(getattr(d, "upstream_s", 0.0) or 0.0) * 1000.0,
        cost_usd=float(getattr(d, "cost_usd", 0.0) or 0.0),
        truncated=bool(getattr(d, "truncated", False)),
        degraded=bool(getattr(d, "degraded", False)),
        budget_exceeded=tuple(getattr(d, "budget_exceeded", ()) or ()),
        review_queue=getattr(d, "human_queue", None),
        case_id=case_id,
        prompt=prompt if keep else None,
        answer=answer if keep else None,
        routing_text=routing_text if keep else None,
        content=content if keep else None,
    )


def attempt_of(a: Any) -> TierAttempt:
    """A router ``Attempt`` as the record keeps it (latency in ms, no answer text)."""
    latency = getattr(a, "latency_s", None)
    return TierAttempt(
        tier=a.tier,
        outcome=a.outcome,
        reasons=tuple(a.reasons),
        target=a.target,
        latency_ms=round(latency * 1000.0, 3) if latency is not None else None,
        answer_confidence=a.answer_confidence,
        validators=a.validators,
        prompt_tokens=a.prompt_tokens,
        completion_tokens=a.completion_tokens,
        reasoning_tokens=a.reasoning_tokens,
        cost_usd=a.cost_usd,
        truncated=a.truncated,
    )


def _dash(value: str | None) -> str | None:
    return None if value in (None, "-", "") else value


def record_json(r: DecisionRecord, hash_key: bytes = b"") -> dict[str, Any]:
    """The record as the JSON document the store keeps (schema version 1)."""
    out: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "request_id": r.request_id,
        "time": r.time,
        "policy": r.policy,
        "kind": r.kind,
        "stream": r.stream,
        "status": r.status,
        "route": {
            "specialist": r.route,
            "source": r.route_source,
            "confidence": round(r.routing_confidence, 6),
        },
        "tier": r.tier,
        "target": r.target,
        "accepted": r.accepted,
        "answer_confidence": r.answer_confidence,
        "attempts": [a.as_dict() for a in r.attempts],
        "tokens": {
            "input": r.prompt_tokens,
            "output": r.completion_tokens,
            "reasoning": r.reasoning_tokens,
        },
        "latency_ms": {
            "total": round(r.latency_total_ms, 3),
            "router": round(max(0.0, r.latency_total_ms - r.latency_upstream_ms), 3),
            "upstream": round(r.latency_upstream_ms, 3),
        },
        "cost_usd": r.cost_usd,
        "truncated": r.truncated,
        "budget": {"degraded": r.degraded, "exceeded": list(r.budget_exceeded)},
    }
    raw = r.raw_routing_confidence
    if raw is not None and round(raw, 6) != out["route"]["confidence"]:
        out["route"]["raw_confidence"] = round(raw, 6)
    raw = r.raw_answer_confidence
    if raw is not None and raw != r.answer_confidence:
        out["raw_answer_confidence"] = round(raw, 6)
    if r.route_scores:
        out["route"]["scores"] = {k: round(float(v), 6) for k, v in r.route_scores.items()}
    if r.classifier_stage:
        out["route"]["stage"] = r.classifier_stage
    if r.error:
        out["error"] = r.error[:2048]
    if r.review_queue or r.case_id:
        out["review"] = {"queue": r.review_queue, "case_id": r.case_id}
    if r.content is not None:
        texts = (("prompt", r.prompt), ("answer", r.answer), ("routing_text", r.routing_text))
        for name, text in texts:
            value = content_field(text, r.content, hash_key)
            if value is not None:
                out[name] = value
    return out


#: Columns of the decisions table besides ``record`` (the queryable part).
COLUMNS = (
    "request_id",
    "ts",
    "policy",
    "status",
    "route",
    "route_source",
    "tier",
    "target",
    "accepted",
    "truncated",
    "cost_usd",
    "tokens_in",
    "tokens_out",
    "tokens_reasoning",
    "latency_ms",
    "case_id",
    "record",
)


def to_row(r: DecisionRecord, hash_key: bytes = b"") -> tuple[Any, ...]:
    """The row the store inserts, in ``COLUMNS`` order (runs in the writer thread)."""
    doc = record_json(r, hash_key)
    return (
        r.request_id[:256],
        r.time,
        r.policy[:253],
        r.status,
        r.route,
        r.route_source[:128],
        r.tier,
        r.target,
        1 if r.accepted else 0,
        1 if r.truncated else 0,
        r.cost_usd,
        r.prompt_tokens,
        r.completion_tokens,
        r.reasoning_tokens,
        round(r.latency_total_ms, 3),
        r.case_id,
        orjson.dumps(doc).decode(),
    )


def now() -> float:
    return time.time()
