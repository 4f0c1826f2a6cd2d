"""What the decision store holds and the errors it raises, shared by every backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


class StoreError(Exception):
    """The store failed the operation."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or cannot write now (down, locked, disk full): the
    operation may succeed later. ``full`` says the store ran out of space."""

    def __init__(self, message: str, *, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


@dataclass(frozen=True, slots=True)
class FeedbackInput:
    """One piece of feedback on a decision; at least one field besides the id is set."""

    request_id: str
    rating: float | None = None
    """-1 (bad) .. 1 (good)."""
    label: str | None = None
    """The correct label."""
    answer: str | None = None
    """The correct answer."""
    outcome: str | None = None
    """Free text: what happened afterwards."""
    source: str = "client"


@dataclass(frozen=True, slots=True)
class FeedbackRow:
    request_id: str
    rating: float | None
    label: str | None
    answer: str | None
    outcome: str | None
    source: str
    created_at: float
    updated_at: float
    created: bool
    """True when this call stored the first feedback for the request."""

    def public(self) -> dict[str, Any]:
        return {
            "object": "feedback",
            "request_id": self.request_id,
            "rating": self.rating,
            "label": self.label,
            "answer": self.answer,
            "outcome": self.outcome,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class CaseFilter:
    """A listing of review cases; every field is a bound parameter, never SQL text."""

    queues: tuple[str, ...] | None = None
    """None: every queue (only for callers that may see them all)."""
    state: Literal["open", "claimed", "resolved", "unresolved", "any"] = "unresolved"
    policy: str | None = None
    request_id: str | None = None
    claimed_by: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    limit: int = 50
    after: tuple[float, str] | None = None
    """Cursor: (created_at, id) of the last case of the previous page."""


@dataclass(frozen=True, slots=True)
class QueueStat:
    queue: str
    open: int
    claimed: int
    oldest_created_at: float | None
    breached: int


@dataclass(frozen=True, slots=True)
class LabelledExample:
    """One outcome joined to its decision: the rows a calibration tool reads.

    Format ``slmfleet.labelled/v1`` (JSON lines from ``slmfleet review export``):
    source is ``review`` (a reviewer's resolution) or ``feedback`` (a client's);
    ``predicted`` is what the router answered (the returned tier's answer label is
    not stored; its answer confidence and routing confidence are).
    """

    source: str
    request_id: str
    at: float
    policy: str
    by: str
    correct_label: str | None
    correct_answer: str | None
    rating: float | None
    outcome: str | None
    case_id: str | None
    queue: str | None
    decision: dict[str, Any] | None
    """The decision record (schema v1) or None when it was pruned or never logged."""

    def as_dict(self) -> dict[str, Any]:
        d = self.decision or {}
        route = d.get("route") or {}
        return {
            "format": "slmfleet.labelled/v1",
            "source": self.source,
            "request_id": self.request_id,
            "at": self.at,
            "policy": self.policy,
            "by": self.by,
            "correct_label": self.correct_label,
            "correct_answer": self.correct_answer,
            "rating": self.rating,
            "outcome": self.outcome,
            "case_id": self.case_id,
            "queue": self.queue,
            "route": route.get("specialist"),
            "route_source": route.get("source"),
            "routing_confidence": route.get("confidence"),
            "route_scores": route.get("scores"),
            "tier": d.get("tier"),
            "target": d.get("target"),
            "accepted": d.get("accepted"),
            "answer_confidence": d.get("answer_confidence"),
            "attempts": d.get("attempts"),
            "truncated": d.get("truncated"),
            "decision_time": d.get("time"),
        }
