"""Labelled outcomes: one logged routing decision joined to what really happened.

The decision store (docs/learning.md, "Outcome records") will implement
``OutcomeSource``; until then outcomes come from a JSONL file with the same fields, one
record a line. A record says what the router decided (policy, tier, route, routing and
answer confidence, the answer's label, cost) and what was true: feedback or a reviewer
said the answer was ``correct``/``incorrect``, and/or gave the ``true_label`` or the
``true_route`` (a specialist id, or ``out_of_domain``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

OUT_OF_DOMAIN = "out_of_domain"
"""``true_route`` of a request that belongs to none of the policy's specialists."""

MAX_TEXT = 8192
"""Routing texts longer than this are refused (the router routes on a bounded excerpt)."""


class OutcomeRecord(BaseModel):
    """One decision with its outcome. Unknown fields are ignored, so a decision-store
    export with more columns still reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    request_id: str = Field(min_length=1, max_length=256)
    policy: str = Field(min_length=1, max_length=253)
    """The policy's model name (or namespace/name id): outcomes are grouped by it."""
    time: datetime | None = None
    """When the request was decided; orders records for held-out replay (else file order)."""
    tier: str | None = Field(default=None, max_length=63)
    """Cascade tier whose answer the caller got."""
    route: str | None = Field(default=None, max_length=253)
    """Specialist id the classifier or a rule chose; None when nothing was routed."""
    route_source: str | None = Field(default=None, max_length=63)
    """classifier, cost, out_of_domain, rule:<name>, direct, only (rules, direct and
    single-specialist policies never asked the classifier: they teach routing nothing)."""
    best_route: str | None = Field(default=None, max_length=253)
    """The classifier's top specialist, also when routing escalated (route is then None)."""
    routing_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    answer_label: str | None = Field(default=None, max_length=253)
    """The answer's label (acceptance.label_of) for per-label thresholds."""
    answer_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    target: str | None = Field(default=None, max_length=300)
    """What produced the answer: a specialist id, external:<model>, human:<queue>."""
    cost_usd: float | None = Field(default=None, ge=0.0)
    outcome: Literal["correct", "incorrect"] | None = None
    """Feedback or review verdict on the answer."""
    true_label: str | None = Field(default=None, max_length=253)
    """The right label, when a reviewer or an eval file gives it."""
    true_route: str | None = Field(default=None, max_length=253)
    """The specialist id that should have answered, or ``out_of_domain``."""
    routing_text: str | None = Field(default=None, max_length=MAX_TEXT)
    """The text the router routed on, when the policy stores prompts."""
    routing_text_cut: bool = False
    """The decision log kept only the start of ``routing_text`` (its ``maxChars``): fine
    to replay a route on, not a whole request to learn from."""
    source: Literal["feedback", "review", "eval"] | None = None
    """Where the outcome came from."""

    # -- what the record tells -----------------------------------------------------------
    @property
    def answer_correct(self) -> bool | None:
        """Whether the answer was right: the explicit verdict, else label == true_label."""
        if self.outcome is not None:
            return self.outcome == "correct"
        if self.true_label is not None and self.answer_label is not None:
            return self.true_label.strip().lower() == self.answer_label.strip().lower()
        return None

    @property
    def out_of_domain(self) -> bool | None:
        if self.true_route is None:
            return None
        return self.true_route == OUT_OF_DOMAIN

    @property
    def known_route(self) -> str | None:
        """The route the request should have had: ``true_route``, or the chosen route when
        feedback said the answer was correct (a confirmed route)."""
        if self.true_route is not None:
            return self.true_route
        if self.outcome == "correct" and self.route is not None:
            return self.route
        return None

    @property
    def classified(self) -> bool:
        """Whether the classifier made this routing decision (not a rule, not direct)."""
        src = self.route_source or "classifier"
        return not (src.startswith("rule:") or src in ("direct", "only"))

    @property
    def best_correct(self) -> bool | None:
        """Whether the classifier's top specialist was the right one (what the routing
        confidence claims): False for an out-of-domain request, unknown when routing
        escalated an in-domain request without logging ``best_route``."""
        truth = self.known_route
        if truth is None:
            return None
        if truth == OUT_OF_DOMAIN:
            return False
        best = self.best_route or self.route
        return None if best is None else best == truth

    @property
    def routed_correctly(self) -> bool | None:
        """Whether routing was right (an out-of-domain request routed anywhere was not)."""
        truth = self.known_route
        if truth is None:
            return None
        return self.route is not None and self.route == truth


class OutcomeError(ValueError):
    """A malformed outcome file; the message names the line and the field."""


class OutcomeSource(Protocol):
    """Where labelled outcomes come from: a JSONL file now, the decision store later."""

    def outcomes(self, *, policy: str | None = None) -> Iterator[OutcomeRecord]:
        """Records (of ``policy`` only, when given) in decision order."""
        ...


def parse_line(line: str | bytes, where: str = "") -> OutcomeRecord:
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise OutcomeError(f"{where}: not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise OutcomeError(f"{where}: a record must be a JSON object")
    try:
        return OutcomeRecord.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(record)"
        raise OutcomeError(f"{where}: field {field}: {first['msg']}") from exc


class JsonlOutcomes:
    """Outcome records from a JSONL file (blank lines and ``#`` comments skipped)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def outcomes(self, *, policy: str | None = None) -> Iterator[OutcomeRecord]:
        with self.path.open("rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip() or line.lstrip().startswith(b"#"):
                    continue
                rec = parse_line(line, f"{self.path}:{n}")
                if policy is None or rec.policy == policy:
                    yield rec


def _ts(t: datetime) -> float:
    return (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).timestamp()


def in_order(records: Iterable[OutcomeRecord]) -> list[OutcomeRecord]:
    """Records by decision time. A record without a time takes the time of the record
    before it in the input (file order is decision order for a log); naive times are UTC."""
    recs = list(records)
    stamps: list[float] = []
    cur = float("-inf")
    for r in recs:
        cur = _ts(r.time) if r.time is not None else cur
        stamps.append(cur)
    return [recs[i] for i in sorted(range(len(recs)), key=lambda i: (stamps[i], i))]


def write_jsonl(path: str | Path, records: Iterable[OutcomeRecord]) -> None:
    with Path(path).open("wb") as f:
        for r in records:
            f.write(orjson.dumps(r.model_dump(mode="json", exclude_none=True)) + b"\n")
