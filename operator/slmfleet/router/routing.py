"""Route choice, pure: explicit rules, then the classifier, then cost among near-ties."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api.routerconfig import RuleConfig as Rule
from .keywords import KeywordIndex
from .validators import compile_user_regex


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    specialist: str
    keywords: tuple[str, ...]
    """Case-insensitive, whole words (see keywords); matched through the policy's
    :class:`RuleSet`, which indexes every rule's keywords together."""
    regex: Any  # an RE2 pattern (validators.compile_user_regex)

    def matches(self, text: str) -> bool:
        return self.matches_keywords(text) or self.matches_regex(text)

    def matches_keywords(self, text: str) -> bool:
        """This rule alone (builds an index: for rules outside a RuleSet)."""
        return bool(self.keywords) and bool(KeywordIndex((0, k) for k in self.keywords).hits(text))

    def matches_regex(self, text: str) -> bool:
        return self.regex is not None and self.regex.search(text) is not None


def compile_rule(rule: Rule) -> CompiledRule:
    rx = compile_user_regex(rule.regex) if rule.regex else None
    return CompiledRule(rule.name, rule.specialist, tuple(rule.keywords), rx)


class RuleSet(tuple[CompiledRule, ...]):
    """A policy's rules in order, with every rule's keywords in one index.

    Matching rule by rule cost a pass over the text per rule; the index takes one pass
    for all of them. The last text's keyword hits are kept: the engine asks whether a
    rule decides (to skip the classifier) and then routes, with the same text.
    """

    def __new__(cls, rules: Sequence[CompiledRule]) -> RuleSet:
        return super().__new__(cls, rules)

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.index = KeywordIndex((i, k) for i, r in enumerate(rules) for k in r.keywords)
        self._last: tuple[str, frozenset[int]] | None = None

    def keyword_hits(self, text: str) -> frozenset[int]:
        """The indices of the rules with a keyword in ``text``."""
        last = self._last
        if last is not None and (text is last[0] or text == last[0]):
            return last[1]
        hits = frozenset(self.index.hits(text))
        self._last = (text, hits)
        return hits


def compile_rules(rules: Sequence[Rule]) -> RuleSet:
    return RuleSet([compile_rule(r) for r in rules])


@dataclass(frozen=True, slots=True)
class Candidate:
    """What routing needs to know about a specialist."""

    ready: bool
    cost_per_mtok: float  # input + output price per million tokens


@dataclass(frozen=True, slots=True)
class RouteDecision:
    specialist: str | None
    """None: out of domain (or nothing ready) -> the fallback tier."""
    confidence: float
    source: str
    """rule:<name> | classifier | cost | only | direct | out_of_domain | unready."""
    scores: Mapping[str, float] = field(default_factory=dict)


def match_rule(
    text: str, rules: Sequence[CompiledRule], candidates: Mapping[str, Candidate]
) -> RouteDecision | None:
    """The first rule that matches ``text`` and names a ready specialist, as a route."""
    if not isinstance(rules, RuleSet):
        rules = RuleSet(rules)
    hits = rules.keyword_hits(text)
    for i, rule in enumerate(rules):
        c = candidates.get(rule.specialist)
        if c is None or not c.ready:
            continue
        if i in hits or rule.matches_regex(text):
            return RouteDecision(rule.specialist, 1.0, f"rule:{rule.name}")
    return None


def choose_route(
    text: str,
    *,
    rules: Sequence[CompiledRule],
    scores: Mapping[str, float] | Callable[[], Mapping[str, float]] | None,
    candidates: Mapping[str, Candidate],
    min_confidence: float,
    cost_aware: bool = False,
    tolerance: float = 0.0,
    degrade: bool = False,
) -> RouteDecision:
    """Pick the specialist for ``text``.

    ``scores`` is the classifier's output, or a callable computing it (so a matching
    rule saves the classifier call), or None when semantic routing is off.
    Unready specialists are skipped everywhere. Cost-aware choice (or degrade mode,
    which widens it to every in-domain specialist) picks the cheapest specialist whose
    confidence is within ``tolerance`` of the best.
    """
    hit = match_rule(text, rules, candidates)
    if hit is not None:
        return hit
    if callable(scores):
        scores = scores()
    if scores is None:
        ready = [sid for sid, c in candidates.items() if c.ready]
        if len(candidates) == 1 and ready:
            return RouteDecision(ready[0], 1.0, "only")
        return RouteDecision(None, 0.0, "out_of_domain")
    best_any = max(scores.values(), default=0.0)
    eligible = {
        sid: s
        for sid, s in scores.items()
        if s >= min_confidence and sid in candidates and candidates[sid].ready
    }
    if not eligible:
        in_domain_unready = any(
            s >= min_confidence and sid in candidates for sid, s in scores.items()
        )
        source = "unready" if in_domain_unready else "out_of_domain"
        return RouteDecision(None, best_any, source, scores)
    best_sid = max(eligible, key=lambda sid: (eligible[sid], sid))
    best = eligible[best_sid]
    if not (cost_aware or degrade):
        return RouteDecision(best_sid, best, "classifier", scores)
    floor = min_confidence if degrade else best - tolerance
    near = [sid for sid, s in eligible.items() if s >= floor]
    cheapest = min(near, key=lambda sid: (candidates[sid].cost_per_mtok, -eligible[sid], sid))
    source = "classifier" if cheapest == best_sid else "cost"
    return RouteDecision(cheapest, eligible[cheapest], source, scores)
