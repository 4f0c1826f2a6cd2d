"""Answering a split request: route the pieces, answer the parts concurrently, merge.

The decisions are ``splitting``'s pure functions; this is the I/O around them. Each
part is a request of its own through the policy's cascade (its own Decision, request
id ``<id>.<n>``, tiers, acceptance and escalations), with the request's deadline and
budgets. The answers are joined in order, separated by a blank line; a streamed request
gets them once every part is done (the headers must describe all of them). When one
part fails the others are cancelled and the request fails as that part did. The
request's Decision records every part: ``x-slmfleet-route``, ``-tier`` and ``-target``
list them in order, ``-split`` is the number of parts, escalations and the decision
log's attempts are prefixed ``part<n>/``, the parts' review cases are comma-joined, and
the ``split`` field of the body and log line holds one record per part. A part's human
tier answers with the holding message (never a 202: the other parts answer too), so
the case id is in the text, the headers and the record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .decision import Decision
from .protocol import ParsedRequest, chat_prompt
from .routing import RouteDecision
from .snapshot import PolicyRuntime, Snapshot, budgets_for
from .splitting import Part, plan_split, segment
from .tiers import Outcome, RequestRun
from .verdicts import SEVERITY, note_ladder

if TYPE_CHECKING:
    from .engine import Engine

SEPARATOR = "\n\n"


def part_request(req: ParsedRequest, text: str) -> ParsedRequest:
    """``req`` with its last user message (or prompt) replaced by one part's text."""
    if req.kind != "chat":
        return replace(
            req, prompt=text, routing_text=text, messages=({"role": "user", "content": text},)
        )
    msgs = [dict(m) for m in req.messages]
    last = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=len(msgs) - 1)
    msgs[last] = {"role": "user", "content": text}
    return replace(req, prompt=chat_prompt(msgs), routing_text=text, messages=tuple(msgs))


def min_part_confidence(policy: PolicyRuntime) -> float:
    """``split.minConfidence``, by default the policy's ``semantic.minConfidence``."""
    r = policy.routing
    own = r.split.min_confidence
    return r.semantic.min_confidence if own is None else own


class SplitRunner:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def route(
        self, snap: Snapshot, policy: PolicyRuntime, text: str, degrade: bool
    ) -> RouteDecision:
        """One piece routed as a request of its own: rules, then the classifier."""
        candidates = {sid: snap.candidates[sid] for sid in policy.specialists}
        scores, _stage, _raw = await self.engine.route_scores(policy, text, candidates)
        return policy.route(text, candidates, scores, degrade=degrade)

    async def plan(
        self,
        snap: Snapshot,
        policy: PolicyRuntime,
        req: ParsedRequest,
        route: RouteDecision,
        degrade: bool,
    ) -> list[Part] | None:
        cfg = policy.routing.split
        text = req.routing_text
        segments = segment(text, max_parts=cfg.max_parts)
        if len(segments) < 2:
            return None
        routes = await asyncio.gather(
            *(self.route(snap, policy, s.text, degrade) for s in segments)
        )
        return plan_split(text, segments, routes, min_part_confidence(policy))

    async def answer(self, run: RequestRun, parts: list[Part]) -> Outcome:
        """Each part through the cascade as a request of its own (concurrently, a child
        Decision each, nothing streamed), folded into one answer in the parts' order."""
        eng = self.engine
        snap, policy, d, emit = run.snap, run.policy, run.d, run.emit
        children = []
        for i in range(len(parts)):
            c = Decision(f"{d.request_id}.{i + 1}", split_part=True)
            c.policy, c.metric_policy = d.policy, d.metric_policy
            children.append(c)
        runs = []
        for p, c in zip(parts, children, strict=True):
            verdict = eng.accounting.verdict(budgets_for(snap, policy, p.route.specialist))
            note_ladder(d, verdict)  # a refusal comes from the part's own reservation
            c.route, c.route_source, c.confidence = (
                p.route.specialist or "-",
                p.route.source,
                p.route.confidence,
            )
            part = replace(
                run,
                req=part_request(run.req, p.segment.text),
                d=c,
                emit=None,
                degrade=run.degrade or verdict.degrade,
            )
            runs.append(eng.rollouts.cascade(part, p.route))
        tasks = [asyncio.ensure_future(r) for r in runs]
        try:
            outs: list[Outcome] = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            fold(d, parts, children)
            raise
        fold(d, parts, children)
        texts = [o.text for o in outs]
        if emit is not None:
            for i, t in enumerate(texts):
                await emit((SEPARATOR if i else "") + t)
        reasoning = SEPARATOR.join(o.reasoning for o in outs if o.reasoning)
        finish = "length" if any(o.finish_reason == "length" for o in outs) else "stop"
        return Outcome(SEPARATOR.join(texts), reasoning, finish, emit is not None and any(texts))


def fold(d: Decision, parts: list[Part], children: list[Decision]) -> None:
    """Record every part in the request's Decision (see the module docstring): a fact
    any part's answer carries (a review case, a local ledger count, halved reasoning, a
    ladder step or refusal) holds for the response that carries them all."""
    d.route = ",".join(c.route for c in children)
    d.route_source = "split"
    d.confidence = min(p.route.confidence for p in parts)
    d.tier = ",".join(c.tier for c in children)
    d.target = ",".join(c.target for c in children)
    d.prompt_tokens = sum(c.prompt_tokens for c in children)
    d.completion_tokens = sum(c.completion_tokens for c in children)
    d.reasoning_tokens = sum(c.reasoning_tokens for c in children)
    d.cost_usd = sum(c.cost_usd for c in children)
    d.truncated = any(c.truncated for c in children)
    d.accepted = all(c.accepted for c in children)
    d.escalations = [f"part{i + 1}/{e}" for i, c in enumerate(children) for e in c.escalations]
    d.attempts = [
        *d.attempts,
        *(
            replace(a, tier=f"part{i + 1}/{a.tier}")
            for i, c in enumerate(children)
            for a in c.attempts
        ),
    ]
    d.human_queue = _joined(c.human_queue for c in children) or d.human_queue
    d.case_id = _joined(c.case_id for c in children) or d.case_id
    d.degraded = d.degraded or any(c.degraded for c in children)
    d.reasoning_halved = d.reasoning_halved or any(c.reasoning_halved for c in children)
    d.ledger_available = d.ledger_available and all(c.ledger_available for c in children)
    d.budget_refusal = d.budget_refusal or next(
        (c.budget_refusal for c in children if c.budget_refusal is not None), None
    )
    for c in children:
        d.budget_exceeded = tuple(dict.fromkeys((*d.budget_exceeded, *c.budget_exceeded)))
        d.budget_steps = tuple(dict.fromkeys((*d.budget_steps, *c.budget_steps)))
        if c.budget_step is not None:
            d.budget_step = max(
                (s for s in (d.budget_step, c.budget_step) if s is not None), key=SEVERITY.index
            )
        if c.budget_percent is not None:
            d.budget_percent = max(d.budget_percent or 0, c.budget_percent)
    d.upstream_s = max((c.upstream_s for c in children), default=0.0)  # concurrent parts
    confs = [c.answer_confidence for c in children if c.answer_confidence is not None]
    d.answer_confidence = min(confs) if confs else None
    if any(c.status == -1 for c in children):
        d.status = -1
    d.extra_headers["split"] = str(len(parts))
    d.extra["split"] = [
        _part_record(i, p, c) for i, (p, c) in enumerate(zip(parts, children, strict=True))
    ]


def _part_record(i: int, p: Part, c: Decision) -> dict[str, Any]:
    return {
        "part": i + 1,
        "chars": [p.segment.start, p.segment.end],
        "route": c.route,
        "route_source": p.route.source,
        "confidence": round(p.route.confidence, 4),
        "tier": c.tier,
        "target": c.target,
        "accepted": c.accepted,
        "answer_confidence": c.answer_confidence,
        "escalations": list(c.escalations),
        "human_review": c.human_queue,
        "review_case": c.case_id,
        "tokens": c.total_tokens,
        "cost_usd": round(c.cost_usd, 10),
        "rollout": c.extra.get("rollout"),
    }


def _joined(values: Iterable[str | None]) -> str | None:
    """The distinct values, in order, comma-joined (None: there are none)."""
    return ",".join(dict.fromkeys(v for v in values if v)) or None
