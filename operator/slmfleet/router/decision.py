"""The Decision record: everything decided about one request.

Rendered as the ``x-slmfleet-*`` response headers, the ``slmfleet`` field of the
response body and one JSON log line per request; the decision log keeps it
(``telemetry.record.record_from_decision``). The engine and the tier adapters fill it
in as the request goes, one ``Attempt`` per cascade tier reached.
"""

from __future__ import annotations

import itertools
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..telemetry.tracing import NOOP

_id_prefix = secrets.token_hex(8)
_id_seq = itertools.count()


def new_request_id() -> str:
    """A request id unique across replicas and restarts: this process's random 64-bit
    prefix and a counter, 32 hex digits like a UUID's (``uuid4`` costs ~6 us, a few
    per cent of what the router spends on a request)."""
    return f"{_id_prefix}{next(_id_seq):016x}"


def _new_prefix() -> None:
    global _id_prefix, _id_seq
    _id_prefix, _id_seq = secrets.token_hex(8), itertools.count()


os.register_at_fork(after_in_child=_new_prefix)  # a forked worker never repeats ids


@dataclass(slots=True)
class Attempt:
    """One cascade tier the request reached, as the decision log keeps it.

    ``outcome``: accepted (its answer was returned and passed), rejected (it answered;
    the answer failed acceptance), failed (error, timeout, open circuit, unready),
    skipped (not called: routing confidence, budget, deadline), returned (no tier
    passed; this rejected answer is the one returned).
    """

    tier: str
    outcome: str
    reasons: tuple[str, ...] = ()
    target: str | None = None
    latency_s: float | None = None
    answer_confidence: float | None = None
    validators: dict[str, bool] | None = None
    """Every validator of the tier by name: passed (True) or failed (False)."""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    truncated: bool | None = None
    answer: str | None = None
    """The tier's answer text: handed to a review case, never logged from here (the
    decision log keeps texts only per the policy's content setting)."""


@dataclass(slots=True)
class Decision:
    """Everything decided about one request; rendered as headers and one log line."""

    request_id: str
    policy: str = "-"
    route: str = "-"
    route_source: str = "-"
    classifier_stage: str = "-"
    """Which classifier stage decided: cache, cheap, static, full (or - when it did not
    run)."""
    tier: str = "-"
    target: str = "-"
    """What produced the answer: a specialist id, external:<model> or human:<queue>."""
    confidence: float = 0.0
    answer_confidence: float | None = None
    raw_confidence: float | None = None
    """The classifier's top score before the policy's calibrator (None: not classified)."""
    raw_answer_confidence: float | None = None
    """The answer confidence before the tier's calibrator."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    truncated: bool = False
    accepted: bool = False
    """A tier's answer passed its acceptance (set by the cascade). False until then, so a
    request that fails (an error status, no answer at all) is never recorded accepted."""
    escalations: list[str] = field(default_factory=list)
    human_queue: str | None = None
    degraded: bool = False
    budget_exceeded: tuple[str, ...] = ()
    budget_step: str | None = None
    """The most severe degrade-ladder step in force: alert, halveReasoning, degrade or
    reject (None: no Budget step)."""
    budget_steps: tuple[str, ...] = ()
    """Every step in force, ``budget-id:action@percent`` (window limits as
    ``budget-id/window:action@100``)."""
    budget_percent: int | None = None
    """Settled spend of the fullest window among the request's Budgets, in percent."""
    reasoning_halved: bool = False
    budget_refusal: dict[str, Any] | None = None
    """Why the ledger refused a reservation: the request's worst case and every window as
    the atomic reserve saw it (spent, reserved). In the log line only, never a header."""
    ledger_available: bool = True
    """False when the shared ledger did not answer and a failOpen Budget served the
    request on this replica's local count."""
    upstream_s: float = 0.0
    status: int = 200
    error: str | None = None
    metric_policy: str = "_unknown"
    extra_headers: dict[str, str] = field(default_factory=dict)
    """More ``x-slmfleet-<name>`` headers, by name: a split's parts, a rollout's arm."""
    extra: dict[str, Any] = field(default_factory=dict)
    """More fields of the summary (log line, response body), e.g. ``split``, ``rollout``."""
    route_scores: Mapping[str, float] | None = None
    """The classifier's score per specialist (None when it did not run)."""
    attempts: list[Attempt] = field(default_factory=list)
    """Every tier the request reached, in order (the decision log's ``attempts``)."""
    case_id: str | None = None
    """The review case the human tier filed (a split request: its parts', comma-joined)."""
    split_part: bool = False
    """This Decision is one part of a split request (``split_run``): its human tier
    answers with the holding message, since one part cannot turn the response into a
    202."""
    trace: Any = NOOP
    """The request's span (telemetry.tracing); cascade hops are its children."""

    def headers(self, *, streaming: bool = False) -> list[tuple[bytes, bytes]]:
        """The x-slmfleet-* headers. A stream's headers go out with its first token, so
        its token and cost totals are only in the final chunk and the log line."""
        h = [
            (b"x-slmfleet-request-id", self.request_id.encode()),
            (b"x-slmfleet-policy", self.policy.encode()),
            (b"x-slmfleet-route", self.route.encode()),
            (b"x-slmfleet-tier", self.tier.encode()),
            (b"x-slmfleet-target", self.target.encode()),
            (b"x-slmfleet-confidence", f"{self.confidence:.4f}".encode()),
            (b"x-slmfleet-truncated", b"true" if self.truncated else b"false"),
            (b"x-slmfleet-escalations", ",".join(self.escalations).encode()),
        ]
        if not streaming:
            h.append((b"x-slmfleet-tokens", str(self.total_tokens).encode()))
            h.append((b"x-slmfleet-cost-usd", f"{self.cost_usd:.8f}".encode()))
        if not self.accepted:
            h.append((b"x-slmfleet-accepted", b"false"))
        if self.human_queue is not None:
            h.append((b"x-slmfleet-human-review", self.human_queue.encode()))
        if self.case_id is not None:
            h.append((b"x-slmfleet-review-case", self.case_id.encode()))
        if self.degraded:
            h.append((b"x-slmfleet-degraded", b"true"))
        if self.budget_step is not None:
            h.append((b"x-slmfleet-budget-step", self.budget_step.encode()))
            h.append((b"x-slmfleet-budget-steps", ",".join(self.budget_steps).encode()))
        if self.budget_percent is not None:
            h.append((b"x-slmfleet-budget-percent", str(self.budget_percent).encode()))
        if self.reasoning_halved:
            h.append((b"x-slmfleet-reasoning-halved", b"true"))
        if not self.ledger_available:
            h.append((b"x-slmfleet-ledger", b"unavailable"))
        for name, value in self.extra_headers.items():
            h.append((b"x-slmfleet-" + name.encode(), value.encode()))
        return h

    @property
    def metric_tier(self) -> str:
        """The ``tier`` label of the request metrics: ``split`` for a split request (its
        ``tier`` lists every part's, a combination the config never names)."""
        return "split" if "split" in self.extra_headers else self.tier

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def summary(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "policy": self.policy,
            "route": self.route,
            "route_source": self.route_source,
            "classifier_stage": self.classifier_stage,
            "tier": self.tier,
            "target": self.target,
            "confidence": round(self.confidence, 4),
            "answer_confidence": self.answer_confidence,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": round(self.cost_usd, 10),
            "truncated": self.truncated,
            "accepted": self.accepted,
            "escalations": self.escalations,
            "human_review": self.human_queue,
            "review_case": self.case_id,
            "degraded": self.degraded,
            "budget_exceeded": list(self.budget_exceeded),
            "budget_step": self.budget_step,
            "budget_steps": list(self.budget_steps),
            "budget_percent": self.budget_percent,
            "reasoning_halved": self.reasoning_halved,
            "budget_refusal": self.budget_refusal,
            "ledger_available": self.ledger_available,
            **self.extra,
        }
