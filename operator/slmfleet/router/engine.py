"""One request through a policy: admission (spend), routing, then the cascade.

A short sequencer: the decisions are pure functions (routing, cascade, acceptance,
spend verdicts, trace budgets) and each tier's I/O is an adapter in ``tiers``; this
file puts them in order and records the outcome in the request's Decision.

Spend: the degrade ladder (``accounting.verdict``) shapes the request before routing
(cheapest route, no costly tiers, halved reasoning); each tier reserves its worst case
and is refused atomically by the ledger (``SpendRefused``): a Budget of the policy, or
of the routed specialist, ends the cascade at once (the last answer if an earlier tier
produced one, else 429 with Retry-After); a Budget of another tier's specialist only
sends the request on to the next tier.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from ..budget.tokens import TokenCounter
from . import metrics as m
from .acceptance import evaluate
from .accounting import Accounting, LedgerAccounting, SpendRefused
from .backends import Codecs
from .breaker import Breaker, BreakerConfig
from .calibration import answer_confidence as calibrated_answer
from .calibration import calibrated_scores
from .cascade import next_index, skip_reason, start_index
from .classifying import ClassifierService
from .decision import Decision
from .errors import UpstreamError, unknown_model
from .external import ExternalClients
from .hops import Hop, returned, skipped
from .protocol import ParsedRequest, routing_excerpt
from .rollouts import Rollouts
from .routing import Candidate, RouteDecision, match_rule
from .snapshot import PolicyRuntime, Snapshot, budgets_for
from .split_run import SplitRunner
from .tiers import Emit, ExternalTier, HumanTier, Outcome, RequestRun, SpecialistTier, Tier
from .tracebudget import effective_caps
from .verdicts import (
    budget_rejection,
    failure_error,
    note_ladder,
    note_refusal,
    refused_by_request,
)

log = logging.getLogger("slmfleet.router")

__all__ = ["Decision", "Emit", "Engine", "Outcome"]


class Engine:
    """Runs requests against the current snapshot; owns the cross-request state
    (accounting, circuit breakers, the classifier worker) that survives reloads."""

    def __init__(
        self,
        pool: Any,
        external: ExternalClients,
        *,
        accounting: Accounting | None = None,
        breaker_config: BreakerConfig | None = None,
        classifier: ClassifierService | None = None,
        review: Any = None,
        shared_stream_max_tokens: int = 0,
        clock: Callable[[], float] = time.monotonic,
        counter: TokenCounter | None = None,
        codecs: Codecs | None = None,
    ) -> None:
        self.pool = pool
        self.accounting: Accounting = accounting or LedgerAccounting()
        self.breakers: dict[str, Breaker] = {}
        self.classifier = classifier or ClassifierService()
        self.clock = clock
        bc = breaker_config or BreakerConfig()
        self.specialist_tier = SpecialistTier(
            pool,
            self.accounting,
            self.breakers,
            bc,
            clock,
            shared_stream_max_tokens,
            codecs=codecs,
            counter=counter,
        )
        self.external_tier: Tier = ExternalTier(external, self.accounting, clock, counter)
        # The review queue (telemetry.review.ReviewService) the human tier files to.
        self.human_tier: Tier = HumanTier(review, clock)
        self.split = SplitRunner(self)
        self.rollouts = Rollouts(self, clock)

    def close(self) -> None:
        self.classifier.close()
        self.rollouts.close()

    async def aclose(self) -> None:
        """Close the classifier, cancel the shadow calls and wait for them to end (their
        settles start as they unwind), finish the settles in flight, close the ledger."""
        self.close()
        await self.rollouts.wait_closed()
        await self.accounting.close()

    # ---- request ----------------------------------------------------------------------
    async def run(
        self,
        snap: Snapshot,
        req: ParsedRequest,
        d: Decision,
        emit: Emit | None = None,
        *,
        deadline: float | None = None,
    ) -> Outcome:
        policy = snap.policies.get(req.model)
        if policy is None:
            raise unknown_model(req.model)
        started = self.clock()
        d.policy = d.metric_policy = policy.model_name
        d.prompt_tokens = 0
        route, degrade = await self._admit_and_route(snap, policy, req, d)
        # maxLatencyMs is for the whole request (every tier), from its start.
        budgets = budgets_for(snap, policy, route.specialist)
        limits = [b.per_request for b in budgets if b.per_request is not None]
        latency = effective_caps(limits, req.max_tokens).max_latency_ms
        if latency is not None:
            budget_deadline = started + latency / 1000
            deadline = budget_deadline if deadline is None else min(deadline, budget_deadline)
        run = RequestRun(snap, policy, req, d, emit, deadline, started, degrade)
        if policy.routing.split.enabled and not policy.direct:  # multi-domain requests
            parts = await self.split.plan(snap, policy, req, route, degrade)
            if parts is not None:
                return await self.split.answer(run, parts)
        # The cascade, with a canary or shadow rollout of the routed specialist applied.
        return await self.rollouts.cascade(run, route)

    async def route_scores(
        self, policy: PolicyRuntime, text: str, candidates: Mapping[str, Candidate]
    ) -> tuple[dict[str, float] | None, str, float | None]:
        """The classifier's calibrated scores for ``text`` (None when a rule decides or
        the policy has none), the stage that decided, and the raw top score."""
        if policy.classifier is None or match_rule(text, policy.rules, candidates) is not None:
            return None, "-", None
        scores, stage = await self.classifier.scores(policy.model_name, policy.classifier, text)
        raw = max(scores.values(), default=0.0)
        return calibrated_scores(policy.calibration, scores), stage, raw

    async def _admit_and_route(
        self, snap: Snapshot, policy: PolicyRuntime, req: ParsedRequest, d: Decision
    ) -> tuple[RouteDecision, bool]:
        spend = self.accounting.verdict(policy.budgets)
        note_ladder(d, spend)
        degrade = spend.degrade
        if policy.direct:
            route = RouteDecision(policy.specialists[0], 1.0, "direct")
        else:
            text = routing_excerpt(req.routing_text)  # bounded: see protocol.routing_excerpt
            candidates = {sid: snap.candidates[sid] for sid in policy.specialists}
            scores, stage, raw = await self.route_scores(policy, text, candidates)
            if scores is not None:
                d.classifier_stage, d.raw_confidence = stage, raw

            def route_for(degrade: bool) -> RouteDecision:
                return policy.route(text, candidates, scores, degrade=degrade)

            route = route_for(degrade)
            if route.specialist is not None:
                # The routed specialist's own Budgets count too (reject, or re-route cheaply).
                routed = self.accounting.verdict(budgets_for(snap, policy, route.specialist))
                note_ladder(d, routed)
                if routed.degrade and not degrade:
                    degrade = True
                    route = route_for(True)
        d.degraded = degrade
        for step in ("alert", "halveReasoning", "degrade"):  # a reject counts in _reject
            if any(s.split(":")[-1].startswith(step + "@") for s in d.budget_steps):
                m.bound(m.BUDGET_STEPS, policy.model_name, step).inc()
        d.route = route.specialist or "-"
        d.route_source = route.source
        d.confidence = route.confidence
        d.route_scores = route.scores or None
        m.bound(m.ROUTING_CONFIDENCE, policy.model_name).observe(route.confidence)
        return route, degrade

    async def _cascade(
        self,
        run: RequestRun,
        route: RouteDecision,
        *,
        stand_in: Callable[[], RouteDecision] | None = None,
    ) -> Outcome:
        """The policy's tiers in order for ``run`` routed to ``route``: skip, call, judge
        the answer, escalate; the first accepted answer (else the last one) is returned.

        A refused reservation is recorded as the tier's escalation (``budget_exceeded``)
        before anything else. A refusal that holds for the whole request (a Budget of the
        policy or of the routed specialist, or a fail-closed Budget without its ledger)
        stops the cascade: the answer already generated and paid for is returned (not
        accepted), as when time runs out; a 429 only when there is none. ``stand_in``:
        ``route`` puts a canary's candidate in the routed specialist's place; when a Budget
        that is not the policy's refuses the candidate, it is called once for the route to
        run the routed tier on instead (the incumbent's), so the candidate's own Budgets
        never refuse a request the incumbent has room for."""
        snap, policy, req, d = run.snap, run.policy, run.req, run.d
        deadline = run.deadline
        tiers = policy.tier_cfgs
        idx = start_index(tiers, policy.fallback, route.specialist is not None)
        if route.specialist is None:
            d.escalations.append(f"routing:{route.source}")
            m.bound(m.ESCALATIONS, policy.model_name, "routing", route.source).inc()
        cost_of = {sid: c.cost_per_mtok for sid, c in snap.candidates.items()}
        last: tuple[Outcome, str, str, bool, float | None, float | None] | None = None
        last_error: UpstreamError | None = None
        rejected: SpendRefused | None = None
        out_of_time = False
        while idx is not None:
            tier = policy.tiers[idx]
            cfg = tier.cfg
            nxt = next_index(tiers, policy.fallback, idx, failed=False)
            if deadline is not None and self.clock() >= deadline:
                out_of_time = True  # the request's time is up: no more escalation
                self._escalate(d, policy, cfg.name, "timeout")
                break
            tier_degrade = run.degrade
            sid = (
                None
                if (cfg.human or cfg.external)
                else (route.specialist if cfg.routed else cfg.specialist)
            )
            tier_spend = self.accounting.verdict(budgets_for(snap, policy, sid))
            if sid is not None and sid != route.specialist:
                note_ladder(d, tier_spend)
                if tier_spend.degrade:
                    tier_degrade = d.degraded = True
            reason = skip_reason(
                cfg, routed_specialist=route.specialist, degrade=tier_degrade, cost_of=cost_of
            )
            if reason is None and nxt is not None:
                # Routing confidence is known before the call: don't pay for a doomed answer.
                mrc = tier.accept.min_routing_confidence
                if mrc is not None and route.confidence < mrc:
                    reason = "low_routing_confidence"
            if reason is not None:
                self._escalate(d, policy, cfg.name, reason)
                idx = nxt
                continue
            live = run.emit if (nxt is None or not tier.accept.checks_answer) else None
            call = run.tier_call(tier, route, live, tier_spend)
            if sid is not None:
                # Scaled to zero, or cost-capped and full: cascade now where the policy says.
                reason = self.specialist_tier.overflow(call, has_next=nxt is not None)
                if reason is not None:
                    self._escalate(d, policy, cfg.name, reason)
                    idx = nxt
                    continue
            d.tier = cfg.name
            d.truncated = False
            adapter: Tier = (
                self.human_tier
                if cfg.human is not None
                else self.external_tier
                if cfg.external is not None
                else self.specialist_tier
            )
            if d.escalations:  # once per request per tier, whatever the reasons
                m.bound(m.ESCALATED, policy.model_name, cfg.name).inc()
            hop = Hop(d, cfg, route.specialist, self.clock, max_tokens=req.max_tokens)
            call = replace(call, span=hop.span)
            try:
                answer = await adapter.call(call)
            except SpendRefused as exc:
                hop.failed("budget_exceeded", exc)
                hop.attempt.outcome = "skipped"  # not called: its reservation was refused
                note_refusal(d, exc)
                self._escalate(d, policy, cfg.name, "budget_exceeded", called=True)
                routed_here = sid is not None and sid == route.specialist
                if (
                    stand_in is not None
                    and cfg.routed
                    and routed_here
                    and not refused_by_request(exc, policy, False)
                ):
                    route, stand_in = stand_in(), None  # the same tier again, on the incumbent
                    continue
                if exc.admission.reason == "ledger_unavailable" or refused_by_request(
                    exc, policy, routed_here
                ):
                    if last is None:
                        raise budget_rejection(policy, exc) from None
                    break  # no more tiers; the answer already paid for is returned
                rejected = exc
                idx = nxt
                continue
            except UpstreamError as exc:
                hop.failed(exc.reason, exc)
                last_error = exc
                log.info("tier %s failed for %s: %s", cfg.name, d.request_id, exc)
                self._escalate(d, policy, cfg.name, exc.reason, called=True)
                if d.status == -1:  # already streamed to the client: cannot fall back
                    raise
                if deadline is not None and self.clock() >= deadline:
                    out_of_time = True
                    break
                idx = next_index(tiers, policy.fallback, idx, failed=True)
                continue
            except BaseException as exc:  # cancelled, client gone: the hop ends with it
                hop.failed(type(exc).__name__, exc)
                raise
            out, d.raw_answer_confidence = answer.outcome, answer.confidence
            answer_conf = calibrated_answer(
                policy.calibration, cfg.name, out.text, answer.confidence
            )
            d.answer_confidence = answer_conf
            # A 202 (a review case to poll) has no answer to judge yet.
            reasons = (
                ()
                if out.status == 202
                else evaluate(
                    tier.accept,
                    routing_confidence=route.confidence,
                    answer=out.text,
                    answer_confidence=answer_conf,
                )
            )
            hop.answered(
                reasons,
                tier.accept,
                confidence=answer_conf,
                text=out.text,
                finish_reason=out.finish_reason,
            )
            if not reasons:
                d.accepted = True
                return out
            for r in reasons:
                self._escalate(d, policy, cfg.name, r, called=True)
            last = (out, d.tier, d.target, d.truncated, answer_conf, d.raw_answer_confidence)
            if out.emitted:
                d.accepted = False
                returned(d, cfg.name)
                return out
            idx = nxt
        if last is not None:
            # The headers describe the answer returned, not the tier that failed after it.
            out, d.tier, d.target, d.truncated, d.answer_confidence, d.raw_answer_confidence = last
            d.accepted = False
            returned(d, d.tier)
            return out
        raise failure_error(policy, out_of_time, last_error, rejected)

    @staticmethod
    def _escalate(
        d: Decision, policy: PolicyRuntime, tier: str, reason: str, *, called: bool = False
    ) -> None:
        """Why the cascade moved past ``tier``; a tier that was not ``called`` is
        recorded as a skipped attempt (a called one's Hop recorded it)."""
        d.escalations.append(f"{tier}:{reason}")
        m.bound(m.ESCALATIONS, policy.model_name, tier, reason).inc()
        if not called:
            skipped(d, tier, reason)
