"""Re-learned routing: confirmed outcomes become examples, the classifier is refitted and
judged by replay on held-out traffic against the current configuration.

1. ``split`` orders outcomes by time and holds the newest ``held_out`` fraction back:
   replay scores only those, so the revision is judged on traffic it never learned from.
2. ``candidates``: from the older part, every record with a routing text and a known
   route (a reviewer's or an eval file's ``true_route``, or feedback saying a routed
   answer was correct) becomes an example of that specialist; ``out_of_domain`` ones
   become out-of-domain examples. Texts already known are skipped; so are texts longer
   than the API allows an example (not trimmed: a cut text is a request nobody sent).
   Additions are bounded per run and by the API's bound on the list; where a bound
   binds, the newest candidates are the ones kept (traffic drifts).
3. ``cross_fitted``: the routing threshold of the refitted classifier must come from
   confidences it did not learn from, so the older part is cut into folds, each scored
   by a classifier fitted without that fold's candidates; the recommender then picks
   ``minConfidence`` from those out-of-fold confidences.
4. ``relearn`` fits the final classifier on everything older and replays both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from ..api.policy import SemanticRouting
from ..api.routerconfig import DomainConfig
from ..api.specialist import DomainSpec
from ..router.classify import domain_texts
from .outcomes import OutcomeRecord, in_order
from .replay import ReplayResult, observed_costs, replay, replayable

Fit = Callable[[Mapping[str, DomainConfig], Sequence[str]], object]
"""``fit(domains, negatives)`` -> a classifier with ``predict_many(texts)``."""

MAX_NEW_PER_DOMAIN = 1000
MAX_NEW_NEGATIVES = 1000


def api_bounds(model: type[BaseModel], field_name: str) -> tuple[int, int]:
    """(most items, most characters an item) the API allows in a list of texts, read from
    the model's JSON schema: the schema the CRD is generated from, so a revision within
    these bounds is one the API server accepts, and no number is copied here."""
    prop = model.model_json_schema(by_alias=False)["properties"][field_name]
    return int(prop["maxItems"]), int(prop["items"]["maxLength"])


MAX_EXAMPLES, MAX_EXAMPLE_CHARS = api_bounds(DomainSpec, "examples")
"""An SLMSpecialist's ``spec.domain.examples``: most items, most characters each."""
MAX_NEGATIVES, MAX_NEGATIVE_CHARS = api_bounds(SemanticRouting, "out_of_domain_examples")
"""A RouterPolicy's ``spec.routing.semantic.outOfDomainExamples``: the same, for it."""


def split(
    records: Sequence[OutcomeRecord], held_out: float = 0.2
) -> tuple[list[OutcomeRecord], list[OutcomeRecord]]:
    """(older, newest ``held_out`` fraction) by decision time."""
    if not 0.0 < held_out < 1.0:
        raise ValueError("held_out must be in (0, 1)")
    recs = in_order(records)
    cut = len(recs) - max(1, round(held_out * len(recs))) if recs else 0
    return recs[:cut], recs[cut:]


@dataclass
class Candidates:
    examples: dict[str, list[str]] = field(default_factory=dict)
    """Specialist id -> new example texts, in decision order."""
    negatives: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.examples.values())


def candidates(
    records: Sequence[OutcomeRecord],
    domains: Mapping[str, DomainConfig],
    negatives: Sequence[str] = (),
    *,
    max_per_domain: int = MAX_NEW_PER_DOMAIN,
    max_negatives: int = MAX_NEW_NEGATIVES,
) -> Candidates:
    """New examples from ``records``, each list in decision order, every one within the
    API's bounds (``MAX_EXAMPLES`` items, ``MAX_EXAMPLE_CHARS`` characters; the same for
    out-of-domain examples) so the revision written from them is accepted as it is.

    Records are read newest first, so where a bound binds the newest candidates are kept
    and the older ones skipped ("bound reached"); the examples already there are never
    displaced (someone chose them). The room a specialist has counts every example the
    router knows of it, ``examplesFrom`` lines included: more than the inline list the
    bound applies to, so never too much.
    """
    known = {t for d in domains.values() for t in domain_texts(d)} | {n.strip() for n in negatives}
    out = Candidates()

    def skip(why: str) -> None:
        out.skipped[why] = out.skipped.get(why, 0) + 1

    for r in reversed(in_order(records)):
        text = (r.routing_text or "").strip()
        truth = r.known_route
        limit = MAX_NEGATIVE_CHARS if r.out_of_domain else MAX_EXAMPLE_CHARS
        if not text:
            skip("no routing text")
        elif truth is None:
            skip("route not known")
        elif not r.classified and r.true_route is None:
            skip("confirmed only a rule's route")
        elif r.routing_text_cut:
            skip("routing text cut by the decision log")
        elif text in known:
            skip("already an example")
        elif len(text) > limit:
            skip(f"longer than the API's {limit} characters")
        elif r.out_of_domain:
            room = min(max_negatives, MAX_NEGATIVES - len(negatives))
            if len(out.negatives) >= room:
                skip("bound reached")
                continue
            out.negatives.append(text)
            known.add(text)
        elif truth in domains:
            have = out.examples.setdefault(truth, [])
            if len(have) >= min(max_per_domain, MAX_EXAMPLES - len(domains[truth].examples)):
                skip("bound reached")
                continue
            have.append(text)
            known.add(text)
        else:
            skip("route is not one of the policy's specialists")
    out.negatives.reverse()  # back to decision order
    for have in out.examples.values():
        have.reverse()
    return out


def extended(domains: Mapping[str, DomainConfig], cands: Candidates) -> dict[str, DomainConfig]:
    return {
        sid: d.model_copy(update={"examples": [*d.examples, *cands.examples.get(sid, [])]})
        for sid, d in domains.items()
    }


def scored(clf: object, records: Sequence[OutcomeRecord]) -> list[dict[str, float]]:
    preds = clf.predict_many([r.routing_text or "" for r in records])  # type: ignore[attr-defined]
    return [dict(p.scores) for p in preds]


def cross_fitted(
    records: Sequence[OutcomeRecord],
    domains: Mapping[str, DomainConfig],
    negatives: Sequence[str],
    fit: Fit,
    *,
    folds: int = 5,
) -> list[OutcomeRecord]:
    """The older records with routing confidence and route replaced by out-of-fold
    predictions of a classifier fitted with the other folds' candidates."""
    rows = replayable(records)
    out: list[OutcomeRecord] = []
    for f in range(min(folds, len(rows))):
        hold = rows[f::folds]
        rest = [r for i, r in enumerate(rows) if i % folds != f]
        c = candidates(rest, domains, negatives)
        clf = fit(extended(domains, c), [*negatives, *c.negatives])
        preds = clf.predict_many([r.routing_text or "" for r in hold])  # type: ignore[attr-defined]
        out += [
            r.model_copy(
                update={
                    "routing_confidence": p.confidence,
                    "route": p.best,
                    "route_source": "classifier",
                }
            )
            for r, p in zip(hold, preds, strict=True)
        ]
    return out


@dataclass
class Relearned:
    candidates: Candidates
    domains: dict[str, DomainConfig]
    negatives: list[str]
    classifier: object
    current: ReplayResult
    proposed: ReplayResult
    learned_from: int
    held_out: int


def relearn(
    older: Sequence[OutcomeRecord],
    newest: Sequence[OutcomeRecord],
    domains: Mapping[str, DomainConfig],
    negatives: Sequence[str],
    fit: Fit,
    *,
    current_threshold: float,
    proposed_threshold: float,
    current_classifier: object | None = None,
    escalation_cost: float | None = None,
) -> Relearned:
    """Fit on current examples + candidates from ``older``; replay ``newest`` with the
    current classifier at ``current_threshold`` and the refitted one at
    ``proposed_threshold``."""
    c = candidates(older, domains, negatives)
    new_domains = extended(domains, c)
    new_negatives = [*negatives, *c.negatives]
    clf = fit(new_domains, new_negatives)
    cur = current_classifier if current_classifier is not None else fit(domains, negatives)
    held = replayable(newest)
    costs = observed_costs([*older, *newest])
    ids = list(domains)
    before = replay(
        "current",
        held,
        scored(cur, held),
        current_threshold,
        specialists=ids,
        costs=costs,
        escalation_cost=escalation_cost,
    )
    after = replay(
        "proposed",
        held,
        scored(clf, held),
        proposed_threshold,
        specialists=ids,
        costs=costs,
        escalation_cost=escalation_cost,
    )
    return Relearned(c, new_domains, new_negatives, clf, before, after, len(older), len(held))
