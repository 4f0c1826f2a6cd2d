"""Multi-domain query splitting, pure: segment a request, decide whether it splits.

A request such as "my order arrived damaged and I also need to change my password"
spans two specialists. With ``routing.split`` on, the router:

1. cuts the routing text at sentence ends, semicolons, new lines and clause
   connectors (``and``, ``but``, ``plus``, each with an optional comma before and an
   optional ``also`` after; ``, also``); pieces shorter than ``MIN_PART_WORDS`` words
   are glued back to their neighbour, so "rock and roll" or "dollars and euros" stay
   whole (``segment``); a text with one piece costs one regular-expression scan;
2. routes every piece like a request of its own (rules, then the classifier), then
   ``plan_split``: pieces that route below ``minConfidence`` join the piece before them
   (the first one joins the next), neighbours routed to the same specialist merge, and
   the request splits only when two or more parts route confidently to different
   specialists.

``MIN_PART_WORDS`` and the default part confidence (the policy's own
``semantic.minConfidence``) were chosen on pairs of CLINC150 *train* queries (val
untouched), as was leaving out a pre-filter on the whole request's scores (it cost
recall and saved little: few single requests have several pieces at all); see
``benchmarks/query_split.py`` and its results.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .routing import RouteDecision

#: Words a piece needs to stand alone (shorter ones join a neighbour).
MIN_PART_WORDS = 2
#: Requests longer than this are not split (documents, not multi-part questions).
MAX_SPLIT_CHARS = 1000

_BOUNDARY = re.compile(
    r"(?<=[.?!])\s+|\s*;\s*|\s*\n+\s*|,?\s+(?:and|but|plus)\s+(?:also\s+)?|,\s*also\s+",
    re.IGNORECASE,
)
_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of the routing text: ``text[start:end]`` of the original, stripped."""

    start: int
    end: int
    text: str


def _words(text: str) -> int:
    return len(_WORD.findall(text))


def _span(text: str, a: Segment, b: Segment) -> Segment:
    return Segment(a.start, b.end, text[a.start : b.end].strip())


def segment(text: str, *, max_parts: int = 4, min_words: int = MIN_PART_WORDS) -> list[Segment]:
    """The pieces of ``text`` (one piece when there is nothing to cut)."""
    if len(text) > MAX_SPLIT_CHARS:
        return [Segment(0, len(text), text)]
    pieces: list[Segment] = []
    pos = 0
    for m in _BOUNDARY.finditer(text):
        if m.start() > pos:
            pieces.append(Segment(pos, m.start(), text[pos : m.start()]))
        pos = m.end()
    if pos < len(text):
        pieces.append(Segment(pos, len(text), text[pos:]))
    pieces = [p for p in pieces if p.text.strip()]
    if len(pieces) < 2:
        return [Segment(0, len(text), text.strip())]
    merged: list[Segment] = []
    for p in pieces:
        if merged and (_words(p.text) < min_words or _words(merged[-1].text) < min_words):
            merged[-1] = _span(text, merged[-1], p)
        else:
            merged.append(Segment(p.start, p.end, p.text.strip()))
    if len(merged) > 1 and _words(merged[-1].text) < min_words:
        merged[-2:] = [_span(text, merged[-2], merged[-1])]
    if len(merged) > max_parts:  # the tail becomes the last part
        merged[max_parts - 1 :] = [_span(text, merged[max_parts - 1], merged[-1])]
    return merged


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a split request and where it goes."""

    segment: Segment
    route: RouteDecision


def plan_split(
    text: str,
    segments: Sequence[Segment],
    routes: Sequence[RouteDecision],
    min_confidence: float,
) -> list[Part] | None:
    """The parts to answer separately, in order, or None when the request stays whole."""
    if len(segments) < 2 or len(segments) != len(routes):
        return None
    sure = [r.specialist is not None and r.confidence >= min_confidence for r in routes]
    if sum(sure) < 2:
        return None
    groups: list[list[int]] = []
    pending: list[int] = []  # unsure pieces before the first sure one
    for i, ok in enumerate(sure):
        if not ok:
            if groups:
                groups[-1].append(i)
            else:
                pending.append(i)
            continue
        if groups and routes[groups[-1][0]].specialist == routes[i].specialist:
            groups[-1].append(i)
        else:
            groups.append([*pending, i])
            pending = []
    if len({routes[next(j for j in g if sure[j])].specialist for g in groups}) < 2:
        return None
    parts = []
    for g in groups:
        lead = max((j for j in g if sure[j]), key=lambda j: routes[j].confidence)
        parts.append(Part(_span(text, segments[g[0]], segments[g[-1]]), routes[lead]))
    return parts
