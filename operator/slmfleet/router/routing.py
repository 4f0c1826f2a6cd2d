"""Route choice, pure: explicit rules, then the classifier, then cost among near-ties."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..api.routerconfig import RuleConfig as Rule
from .validators import compile_user_regex


@dataclass(frozen=True, slots=True)
class CompiledRule:
    name: str
    specialist: str
    keywords: re.Pattern[str] | None
    regex: Any  # an RE2 pattern (validators.compile_user_regex)

    def matches(self, text: str) -> bool:
        return bool(
            (self.keywords is not None and self.keywords.search(text))
            or (self.regex is not None and self.regex.search(text))
        )


def compile_rule(rule: Rule) -> CompiledRule:
    """Keywords become one case-insensitive whole-word alternation.

    Lookarounds instead of ``\\b`` so keywords that start or end with punctuation
    (``c++``, ``.net``) still match as whole words.
    """
    kw = None
    if rule.keywords:
        alts = "|".join(re.escape(k) for k in sorted(rule.keywords, key=len, reverse=True))
        kw = re.compile(rf"(?<!\w)(?:{alts})(?!\w)", re.IGNORECASE)
    rx = compile_user_regex(rule.regex) if rule.regex else None
    return CompiledRule(rule.name, rule.specialist, kw, rx)


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
    for rule in rules:
        c = candidates.get(rule.specialist)
        if c is not None and c.ready and rule.matches(text):
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
