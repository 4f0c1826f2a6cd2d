"""Validation of what clients and reviewers send: pure functions raising HttpError with
the offending field named. Bounds on every string keep the store's rows small."""

from __future__ import annotations

import math
import re
from typing import Any

from ..store import CaseFilter, FeedbackInput
from .common import HttpError

MAX_FEEDBACK_BYTES = 64 * 1024
MAX_REVIEW_BYTES = 256 * 1024
LABEL_MAX = 256
ANSWER_MAX = 32 * 1024
OUTCOME_MAX = 8 * 1024
NOTE_MAX = 4 * 1024
REQUEST_ID_MAX = 256
_CASE_ID = re.compile(r"^[0-9a-f]{32}$")
_QUEUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_STATES = ("open", "claimed", "resolved", "unresolved", "any")


def _text(data: dict[str, Any], key: str, limit: int, *, required: bool = False) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise HttpError(400, f"{key} is required", param=key, code="invalid_request")
        return None
    if not isinstance(value, str):
        raise HttpError(400, f"{key} must be a string", param=key, code="invalid_request")
    if len(value) > limit:
        raise HttpError(400, f"{key} exceeds {limit} characters", param=key, code="invalid_request")
    if required and not value.strip():
        raise HttpError(400, f"{key} must not be empty", param=key, code="invalid_request")
    return value


def _only(data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    extra = sorted(set(data) - set(allowed))
    if extra:
        raise HttpError(400, f"unknown field {extra[0]}", param=extra[0], code="invalid_request")


def feedback(data: dict[str, Any], *, source: str = "client") -> FeedbackInput:
    """``{request_id, rating?, label?, answer?, outcome?}`` with at least one of the
    four; rating is a number from -1 (bad) to 1 (good)."""
    _only(data, ("request_id", "rating", "label", "answer", "outcome"))
    rid = _text(data, "request_id", REQUEST_ID_MAX, required=True)
    rating = data.get("rating")
    if rating is not None:
        if isinstance(rating, bool) or not isinstance(rating, int | float):
            raise HttpError(400, "rating must be a number", param="rating", code="invalid_request")
        if not (math.isfinite(rating) and -1.0 <= rating <= 1.0):
            raise HttpError(
                400, "rating must be between -1 and 1", param="rating", code="invalid_request"
            )
        rating = float(rating)
    fb = FeedbackInput(
        request_id=rid or "",
        rating=rating,
        label=_text(data, "label", LABEL_MAX),
        answer=_text(data, "answer", ANSWER_MAX),
        outcome=_text(data, "outcome", OUTCOME_MAX),
        source=source,
    )
    if fb.rating is None and fb.label is None and fb.answer is None and fb.outcome is None:
        raise HttpError(
            400, "give a rating, label, answer or outcome", param="rating", code="invalid_request"
        )
    return fb


def case_id(raw: str) -> str:
    if not _CASE_ID.match(raw):
        raise HttpError(404, "no such case", code="case_not_found")
    return raw


def queue_name(raw: Any, param: str = "queue") -> str:
    if not isinstance(raw, str) or not _QUEUE.match(raw):
        raise HttpError(400, f"{param} is not a queue name", param=param, code="invalid_request")
    return raw


def _float(q: dict[str, str], key: str) -> float | None:
    if key not in q:
        return None
    try:
        value = float(q[key])
    except ValueError:
        raise HttpError(400, f"{key} must be a number", param=key) from None
    if not math.isfinite(value):
        raise HttpError(400, f"{key} must be finite", param=key)
    return value


def case_filter(q: dict[str, str], queues: tuple[str, ...] | None) -> CaseFilter:
    """Query parameters of ``GET /v1/review/cases``: queue (comma list), state, policy,
    request_id, claimed_by, created_after, created_before, limit, after (cursor).
    Values are bound as SQL parameters; names are checked here."""
    state = q.get("state", "unresolved")
    if state not in _STATES:
        raise HttpError(400, f"state must be one of {', '.join(_STATES)}", param="state")
    try:
        limit = int(q.get("limit", "50"))
    except ValueError:
        raise HttpError(400, "limit must be an integer", param="limit") from None
    if not 1 <= limit <= 200:
        raise HttpError(400, "limit must be between 1 and 200", param="limit")
    after = None
    if "after" in q:
        ts, _, cid = q["after"].partition(":")
        try:
            after = (float(ts), case_id(cid))
        except (ValueError, HttpError):
            raise HttpError(
                400, "after is not a cursor from a previous page", param="after"
            ) from None
    for key in ("policy", "request_id", "claimed_by"):
        if key in q and len(q[key]) > 256:
            raise HttpError(400, f"{key} is too long", param=key)
    return CaseFilter(
        queues=queues,
        state=state,  # type: ignore[arg-type]
        policy=q.get("policy"),
        request_id=q.get("request_id"),
        claimed_by=q.get("claimed_by"),
        created_after=_float(q, "created_after"),
        created_before=_float(q, "created_before"),
        limit=limit,
        after=after,
    )


def wanted_queues(q: dict[str, str]) -> list[str] | None:
    if "queue" not in q:
        return None
    return [queue_name(x) for x in q["queue"].split(",") if x]


def resolution(data: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """``{answer?, label?, note?}``: an answer and/or a label."""
    _only(data, ("answer", "label", "note"))
    answer = _text(data, "answer", ANSWER_MAX)
    label = _text(data, "label", LABEL_MAX)
    note = _text(data, "note", NOTE_MAX)
    if not (answer and answer.strip()) and not (label and label.strip()):
        raise HttpError(400, "give an answer or a label", param="answer", code="invalid_request")
    return answer or None, (label.strip() if label else None) or None, note or None


def lease(data: dict[str, Any]) -> float | None:
    _only(data, ("lease_seconds",))
    value = data.get("lease_seconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise HttpError(400, "lease_seconds must be a number", param="lease_seconds")
    return float(value)


def escalation(data: dict[str, Any]) -> tuple[str, str | None]:
    _only(data, ("queue", "note"))
    return queue_name(data.get("queue")), _text(data, "note", NOTE_MAX)
