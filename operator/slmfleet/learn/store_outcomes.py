"""``OutcomeSource`` over the decision store (SQLite or PostgreSQL, ``telemetry.store``).

The store's labelled rows (``Store.labelled``: resolved review cases and feedback, each
joined to its logged decision) become ``OutcomeRecord`` s; ``outcome_of`` is the pure
mapping and ``merged`` joins the feedback and the review of one request:

* the decision gives policy, time, tier, route and source, the classifier's top
  specialist when routing escalated (the highest of ``route.scores``), target, cost and
  the **raw** confidences (``route.raw_confidence`` / ``raw_answer_confidence`` when the
  policy had calibrators, else the values compared): the next calibrator is fitted on
  what the classifier and the model said, not on a previous calibrator's output;
* with ``decisionLog.content: full`` the answer's label (``label_of``) and the routing
  text come from the stored texts; otherwise they are unknown (no per-label outcome
  from a bare rating, no learned examples);
* feedback: ``rating`` > 0 is ``correct`` (which also confirms the route), < 0
  ``incorrect``, 0 says nothing; its ``label`` is the true label, and the label
  ``out_of_domain`` marks a request that belongs to no specialist;
* a resolved review case: its ``label`` is the true label (``out_of_domain`` as above);
  a reviewer's label wins over a client's.

A row whose decision was pruned (retention) or never logged has nothing to learn from
and is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ..router.acceptance import label_of
from .outcomes import MAX_TEXT, OUT_OF_DOMAIN, OutcomeRecord, in_order


def _text(value: Any) -> str | None:
    if isinstance(value, Mapping) and isinstance(value.get("text"), str) and value["text"]:
        return value["text"]
    return None


def _conf(value: Any) -> float | None:
    return min(max(float(value), 0.0), 1.0) if isinstance(value, int | float) else None


def outcome_of(row: Mapping[str, Any]) -> OutcomeRecord | None:
    """One labelled row (``LabelledExample.as_dict()`` plus ``decision``: the record) as
    an outcome; None when its decision is gone or it says nothing."""
    d = row.get("decision")
    if not isinstance(d, Mapping):
        return None
    route = d.get("route") or {}
    chosen = route.get("specialist")
    scores = route.get("scores") or {}
    best = max(scores, key=lambda k: (scores[k], k)) if scores else None
    answer = _text(d.get("answer"))
    label = (row.get("correct_label") or "").strip() or None
    rating = row.get("rating")
    verdict = None
    if isinstance(rating, int | float) and rating != 0:
        verdict = "correct" if rating > 0 else "incorrect"
    off_topic = label is not None and label.lower() == OUT_OF_DOMAIN
    routing = d.get("routing_text")
    text = _text(routing)
    raw_route = route.get("raw_confidence", route.get("confidence"))
    raw_answer = d.get("raw_answer_confidence", d.get("answer_confidence"))
    t = d.get("time")
    return OutcomeRecord(
        request_id=str(row.get("request_id") or d.get("request_id")),
        policy=str(d.get("policy") or row.get("policy")),
        time=datetime.fromtimestamp(float(t), UTC) if isinstance(t, int | float) else None,
        tier=d.get("tier"),
        route=chosen,
        route_source=route.get("source"),
        best_route=best if chosen is None else None,
        routing_confidence=_conf(raw_route),
        answer_label=(label_of(answer) or None) if answer else None,
        answer_confidence=_conf(raw_answer),
        target=d.get("target"),
        cost_usd=_cost(d.get("cost_usd")),
        outcome=verdict,
        true_label=None if off_topic else label,
        true_route=OUT_OF_DOMAIN if off_topic else None,
        routing_text=text[:MAX_TEXT] if text else None,
        routing_text_cut=bool(text)
        and (len(text) > MAX_TEXT or (isinstance(routing, Mapping) and routing.get("cut") is True)),
        source=row.get("source") if row.get("source") in ("feedback", "review") else None,
    )


def _cost(value: Any) -> float | None:
    return max(float(value), 0.0) if isinstance(value, int | float) else None


def merged(a: OutcomeRecord, b: OutcomeRecord) -> OutcomeRecord:
    """One request's two outcomes as one: ``b`` (a review) fills and overrides the
    labels, the verdict is kept from whichever has one (``b`` first)."""
    return a.model_copy(
        update={
            "outcome": b.outcome or a.outcome,
            "true_label": b.true_label or a.true_label,
            "true_route": b.true_route or a.true_route,
            "source": b.source or a.source,
        }
    )


def outcomes_of(rows: Iterable[Mapping[str, Any]]) -> list[OutcomeRecord]:
    """Rows as outcomes, one per request (feedback merged with its review), in decision
    order."""
    by_id: dict[str, OutcomeRecord] = {}
    for row in sorted(rows, key=lambda r: r.get("source") == "review"):  # reviews last
        rec = outcome_of(row)
        if rec is None:
            continue
        prev = by_id.get(rec.request_id)
        by_id[rec.request_id] = rec if prev is None else merged(prev, rec)
    return in_order(r for r in by_id.values() if r.outcome or r.true_label or r.true_route)


class StoreOutcomes:
    """``OutcomeSource`` over a decision store URL (``sqlite:///path.db`` or
    ``postgresql://...``): at most ``limit`` rows of each kind (resolved cases,
    feedback). For given policies, their newest rows, selected in SQL: a window shared
    by every policy let one tenant's feedback volume push the others' outcomes out
    (TooFewOutcomes for good). Without, the oldest rows of every policy."""

    def __init__(self, url: str, *, password_file: str | None = None, limit: int = 100_000) -> None:
        self.url, self.password_file, self.limit = url, password_file, limit

    def rows(self, policies: Sequence[str] | None = None) -> list[dict[str, Any]]:
        from ..telemetry.store import open_store

        store = open_store(self.url, password_file=self.password_file, executor_threads=1)
        try:
            if policies is None:
                examples = store.labelled(0.0, self.limit)
            else:
                examples = store.labelled(0.0, self.limit, policies=policies, newest=True)
        finally:
            store.close()
        return [e.as_dict() | {"decision": e.decision} for e in examples]

    def outcomes(
        self, *, policy: str | None = None, policies: Sequence[str] | None = None
    ) -> Iterator[OutcomeRecord]:
        """Outcomes of ``policy`` (one name) or of ``policies`` (a policy's names: its
        model name and its id), or of every policy."""
        names = policies if policies is not None else ([policy] if policy is not None else None)
        for rec in outcomes_of(self.rows(names)):
            if names is None or rec.policy in names:
                yield rec
