"""One request through a policy: spend check, routing, the cascade, the trace budget.

Decisions are delegated to the pure modules (routing, cascade, acceptance, tracebudget,
spend, breaker); this file sequences them around the upstream calls and records the
outcome in a Decision that becomes the response headers, the log line and the metrics.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from ..api.routerconfig import BudgetConfig, SpecialistConfig
from ..api.routerconfig import TierConfig as CascadeTier
from . import metrics as m
from .acceptance import evaluate
from .breaker import Breaker, BreakerConfig, allow, record
from .cascade import next_index, skip_reason, start_index
from .errors import RouterError, UpstreamError, unknown_model
from .protocol import ParsedRequest, estimate_tokens, routing_excerpt
from .routing import RouteDecision, choose_route
from .snapshot import PolicyRuntime, Snapshot, TierRuntime
from .spend import SpendLedger, SpendVerdict, cost_usd, verdict
from .tracebudget import Caps, continuation_prompt, effective_caps, new_state, step
from .upstream import ExternalClients, TritonPool

log = logging.getLogger("slmfleet.router")
cases = logging.getLogger("slmfleet.router.review")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _setup_case_log() -> None:
    """Human-review cases are the review queue (docs/router.md): one JSON line each on
    stderr, at INFO on a logger of their own that does not propagate, so --log-level
    (the root logger's level) never drops a case."""
    if not any(isinstance(h, _StderrHandler) for h in cases.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        h.setLevel(logging.INFO)
        cases.addHandler(h)
    cases.setLevel(logging.INFO)
    cases.propagate = False


_setup_case_log()

Emit = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class Decision:
    """Everything decided about one request; rendered as headers and one log line."""

    request_id: str
    policy: str = "-"
    route: str = "-"
    route_source: str = "-"
    tier: str = "-"
    target: str = "-"
    """What produced the answer: a specialist id, external:<model> or human:<queue>."""
    confidence: float = 0.0
    answer_confidence: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    truncated: bool = False
    accepted: bool = True
    escalations: list[str] = field(default_factory=list)
    human_queue: str | None = None
    degraded: bool = False
    budget_exceeded: tuple[str, ...] = ()
    upstream_s: float = 0.0
    status: int = 200
    error: str | None = None
    metric_policy: str = "_unknown"

    def headers(self, *, streaming: bool = False) -> list[tuple[bytes, bytes]]:
        """The x-slmfleet-* headers. A stream's headers go out with its first token, so
        its token and cost totals are only in the final chunk and the log line."""
        h = [
            (b"x-slmfleet-request-id", self.request_id.encode()),
            (b"x-slmfleet-policy", self.policy.encode()),
            (b"x-slmfleet-route", self.route.encode()),
            (b"x-slmfleet-tier", self.tier.encode()),
            (b"x-slmfleet-target", self.target.encode()),
            (b"x-slmfleet-confidence", f"{self.confidence:.4f}".encode()),
            (b"x-slmfleet-truncated", b"true" if self.truncated else b"false"),
            (b"x-slmfleet-escalations", ",".join(self.escalations).encode()),
        ]
        if not streaming:
            h.append((b"x-slmfleet-tokens", str(self.total_tokens).encode()))
            h.append((b"x-slmfleet-cost-usd", f"{self.cost_usd:.8f}".encode()))
        if not self.accepted:
            h.append((b"x-slmfleet-accepted", b"false"))
        if self.human_queue is not None:
            h.append((b"x-slmfleet-human-review", self.human_queue.encode()))
        if self.degraded:
            h.append((b"x-slmfleet-degraded", b"true"))
        return h

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def summary(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "policy": self.policy,
            "route": self.route,
            "route_source": self.route_source,
            "tier": self.tier,
            "target": self.target,
            "confidence": round(self.confidence, 4),
            "answer_confidence": self.answer_confidence,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cost_usd": round(self.cost_usd, 10),
            "truncated": self.truncated,
            "accepted": self.accepted,
            "escalations": self.escalations,
            "human_review": self.human_queue,
            "degraded": self.degraded,
            "budget_exceeded": list(self.budget_exceeded),
        }


@dataclass(slots=True)
class Outcome:
    text: str
    reasoning: str = ""
    finish_reason: str = "stop"
    emitted: bool = False
    """True when the text already went to the client live (streaming)."""


class Engine:
    """Runs requests against the current snapshot; owns the cross-request state
    (spend windows, circuit breakers) that must survive config reloads."""

    def __init__(
        self,
        pool: TritonPool,
        external: ExternalClients,
        *,
        ledger: SpendLedger | None = None,
        breaker_config: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool
        self.external = external
        self.ledger = ledger or SpendLedger()
        self.breaker_config = breaker_config or BreakerConfig()
        self.breakers: dict[str, Breaker] = {}
        self.clock = clock
        self.wallclock = wallclock

    # ---- spend ------------------------------------------------------------------------
    def _verdict(self, budgets: tuple[BudgetConfig, ...]) -> SpendVerdict:
        if not any(b.spend for b in budgets):
            return SpendVerdict()
        now = self.wallclock()
        return verdict(
            ((b.id, w, self.ledger.window(b.id, w)) for b in budgets for w in b.spend), now
        )

    def _charge(self, budgets: tuple[BudgetConfig, ...], amount: float) -> None:
        if amount <= 0:
            return
        now = self.wallclock()
        seen: set[str] = set()
        for b in budgets:
            if b.id in seen:  # each Budget is charged once, however it applies
                continue
            seen.add(b.id)
            for w in b.spend:
                win = self.ledger.window(b.id, w)
                win.add(now, amount)
                total = win.total(now)
                m.bound(m.SPEND, b.id, w.window).set(total)
                m.bound(m.BUDGET_EXCEEDED, b.id, w.window, w.action).set(
                    1 if total >= w.limit_usd else 0
                )

    @staticmethod
    def _budgets(
        snap: Snapshot, policy: PolicyRuntime, sid: str | None
    ) -> tuple[BudgetConfig, ...]:
        """The policy's Budgets plus those covering specialist ``sid`` (each once)."""
        budgets = policy.budgets
        if sid is not None:
            ids = {b.id for b in budgets}
            extra = tuple(b for b in snap.budgets_by_specialist.get(sid, ()) if b.id not in ids)
            budgets = budgets + extra
        return budgets

    def _reject(self, policy: PolicyRuntime, spend: SpendVerdict) -> RouterError:
        m.bound(m.BUDGET_REJECTIONS, policy.model_name).inc()
        return RouterError(
            429,
            f"spend budget exceeded ({', '.join(spend.exceeded)}); retry later",
            type="rate_limit_error",
            code="budget_exceeded",
            headers={"retry-after": str(max(1, spend.retry_after_s))},
        )

    @staticmethod
    def _note_exceeded(d: Decision, spend: SpendVerdict) -> None:
        d.budget_exceeded = tuple(dict.fromkeys((*d.budget_exceeded, *spend.exceeded)))

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
        d.policy = policy.model_name
        d.metric_policy = policy.model_name
        d.prompt_tokens = 0

        spend = self._verdict(policy.budgets)
        d.budget_exceeded = spend.exceeded
        if spend.reject:
            raise self._reject(policy, spend)
        degrade = spend.degrade

        route = self._route(snap, policy, req, degrade=degrade)
        if route.specialist is not None and not policy.direct:
            # The routed specialist's own Budgets count too (reject, or re-route cheaply).
            routed_spend = self._verdict(self._budgets(snap, policy, route.specialist))
            self._note_exceeded(d, routed_spend)
            if routed_spend.reject:
                raise self._reject(policy, routed_spend)
            if routed_spend.degrade and not degrade:
                degrade = True
                route = self._route(snap, policy, req, degrade=True)
        d.degraded = degrade
        d.route = route.specialist or "-"
        d.route_source = route.source
        d.confidence = route.confidence
        m.bound(m.ROUTING_CONFIDENCE, policy.model_name).observe(route.confidence)

        # maxLatencyMs is for the whole request (every tier), from its start.
        latency = self._caps(snap, policy, route.specialist, req)[0].max_latency_ms
        if latency is not None:
            budget_deadline = started + latency / 1000
            deadline = budget_deadline if deadline is None else min(deadline, budget_deadline)

        tiers = policy.tier_cfgs
        idx = start_index(tiers, policy.fallback, route.specialist is not None)
        if route.specialist is None:
            d.escalations.append(f"routing:{route.source}")
            m.bound(m.ESCALATIONS, policy.model_name, "routing", route.source).inc()
        cost_of = {sid: c.cost_per_mtok for sid, c in snap.candidates.items()}
        last: tuple[Outcome, str, str, bool, float | None] | None = None
        last_error: UpstreamError | None = None
        rejected: SpendVerdict | None = None
        out_of_time = False
        while idx is not None:
            tier = policy.tiers[idx]
            cfg = tier.cfg
            nxt = next_index(tiers, policy.fallback, idx, failed=False)
            if deadline is not None and self.clock() >= deadline:
                out_of_time = True  # the request's time is up: no more escalation
                self._escalate(d, policy, cfg.name, "timeout")
                break
            tier_degrade = degrade
            if cfg.human is None and cfg.external is None:
                sid = route.specialist if cfg.routed else cfg.specialist
                if sid is not None and sid != route.specialist:
                    tier_spend = self._verdict(self._budgets(snap, policy, sid))
                    self._note_exceeded(d, tier_spend)
                    if tier_spend.reject:
                        rejected = tier_spend
                        self._escalate(d, policy, cfg.name, "budget_exceeded")
                        idx = nxt
                        continue
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
            d.tier = cfg.name
            d.truncated = False
            live = (
                emit
                if (emit is not None and (nxt is None or not tier.accept.checks_answer))
                else None
            )
            try:
                out, answer_conf = await self._call_tier(
                    snap, policy, tier, route, req, d, live, deadline, started
                )
            except UpstreamError as exc:
                last_error = exc
                reason = exc.reason
                log.info("tier %s failed for %s: %s", cfg.name, d.request_id, exc)
                self._escalate(d, policy, cfg.name, reason)
                if d.status == -1:  # already streamed to the client: cannot fall back
                    raise
                if deadline is not None and self.clock() >= deadline:
                    out_of_time = True
                    break
                idx = next_index(tiers, policy.fallback, idx, failed=True)
                continue
            d.answer_confidence = answer_conf
            reasons = evaluate(
                tier.accept,
                routing_confidence=route.confidence,
                answer=out.text,
                answer_confidence=answer_conf,
            )
            if not reasons:
                d.accepted = True
                return out
            for r in reasons:
                self._escalate(d, policy, cfg.name, r)
            last = (out, d.tier, d.target, d.truncated, answer_conf)
            if out.emitted:
                d.accepted = False
                return out
            idx = nxt
        if last is not None:
            # The headers describe the answer returned, not the tier that failed after it.
            out, d.tier, d.target, d.truncated, d.answer_confidence = last
            d.accepted = False
            return out
        if out_of_time or (last_error is not None and last_error.timeout):
            raise RouterError(
                504,
                "upstream timeout: "
                + (last_error.public_message if last_error else "request deadline exceeded"),
                type="upstream_error",
                code="upstream_timeout",
            )
        if last_error is not None:
            raise RouterError(
                502,
                f"upstream failure: {last_error.public_message}",
                type="upstream_error",
                code="upstream_error",
            )
        if rejected is not None:
            raise self._reject(policy, rejected)
        raise RouterError(
            502, "no cascade tier could serve the request", type="upstream_error", code="no_tier"
        )

    def _escalate(self, d: Decision, policy: PolicyRuntime, tier: str, reason: str) -> None:
        d.escalations.append(f"{tier}:{reason}")
        m.bound(m.ESCALATIONS, policy.model_name, tier, reason).inc()

    def _route(
        self, snap: Snapshot, policy: PolicyRuntime, req: ParsedRequest, *, degrade: bool
    ) -> RouteDecision:
        if policy.direct:
            return RouteDecision(policy.specialists[0], 1.0, "direct")
        candidates = {sid: snap.candidates[sid] for sid in policy.specialists}
        clf = policy.classifier
        text = routing_excerpt(req.routing_text)  # bounded: see protocol.routing_excerpt
        scores = (lambda: dict(clf.predict(text).scores)) if clf is not None else None
        r = policy.routing
        return choose_route(
            text,
            rules=policy.rules,
            scores=scores,
            candidates=candidates,
            min_confidence=r.semantic.min_confidence,
            cost_aware=r.cost_aware.enabled,
            tolerance=r.cost_aware.tolerance,
            degrade=degrade,
        )

    def _caps(
        self, snap: Snapshot, policy: PolicyRuntime, sid: str | None, req: ParsedRequest
    ) -> tuple[Caps, tuple[BudgetConfig, ...]]:
        budgets = self._budgets(snap, policy, sid)
        limits = [b.per_request for b in budgets if b.per_request is not None]
        return effective_caps(limits, req.max_tokens), budgets

    async def _call_tier(
        self,
        snap: Snapshot,
        policy: PolicyRuntime,
        tier: TierRuntime,
        route: RouteDecision,
        req: ParsedRequest,
        d: Decision,
        emit: Emit | None,
        deadline: float | None,
        started: float | None = None,
    ) -> tuple[Outcome, float | None]:
        cfg: CascadeTier = tier.cfg
        if cfg.human is not None:
            d.human_queue = cfg.human.queue
            d.target = f"human:{cfg.human.queue}"
            m.bound(m.HUMAN_REVIEWS, policy.model_name, cfg.human.queue).inc()
            cases.warning(
                orjson.dumps(
                    {
                        "event": "human_review",
                        "request_id": d.request_id,
                        "policy": policy.model_name,
                        "queue": cfg.human.queue,
                        "escalations": d.escalations,
                        "messages": list(req.messages),
                    }
                ).decode()
            )
            return Outcome(cfg.human.message), None
        sid = route.specialist if cfg.routed else cfg.specialist
        caps, budgets = self._caps(snap, policy, sid, req)
        now = self.clock()
        # ``deadline`` is the request's (run() derives it from maxLatencyMs at its start);
        # a tier's own specialist Budget may be tighter, still counted from that start.
        if caps.max_latency_ms is not None:
            tier_deadline = (now if started is None else started) + caps.max_latency_ms / 1000
            deadline = tier_deadline if deadline is None else min(deadline, tier_deadline)
        timeout = cfg.timeout_ms / 1000
        own_timeout = True
        if deadline is not None and deadline - now < timeout:
            timeout = deadline - now
            own_timeout = False
            if timeout <= 0:
                raise UpstreamError("request deadline exceeded", timeout=True)
        if cfg.external is not None:
            d.target = f"external:{cfg.external.model}"
            return await self._external(policy, cfg, req, d, caps, budgets, timeout), None
        assert sid is not None
        spec = snap.specialists.get(sid)
        if spec is None:
            raise UpstreamError(f"unknown specialist {sid}")
        if not spec.ready:
            raise UpstreamError(f"specialist {sid} is not ready", reason="unready")
        d.target = sid
        return await self._specialist(
            policy, cfg, spec, req, d, caps, budgets, timeout, emit, own_timeout=own_timeout
        )

    async def _external(self, policy, cfg, req, d, caps, budgets, timeout) -> Outcome:
        ext = cfg.external
        t0 = self.clock()
        try:
            ans = await self.external.chat(
                ext,
                list(req.messages),
                max_tokens=caps.max_output_tokens,
                sampling=req.sampling,
                timeout_s=timeout,
                request_id=d.request_id,
            )
        finally:
            dt = self.clock() - t0
            d.upstream_s += dt
            m.bound(m.UPSTREAM, policy.model_name, "external", cfg.name).observe(dt)
        pt = ans.prompt_tokens if ans.prompt_tokens is not None else estimate_tokens(req.prompt)
        ct = (
            ans.completion_tokens
            if ans.completion_tokens is not None
            else estimate_tokens(ans.text)
        )
        self._account(
            policy,
            "external",
            d,
            budgets,
            pt,
            ct,
            0,
            cost_usd(pt, ct, ext.input_per_million_usd, ext.output_per_million_usd),
        )
        return Outcome(ans.text, finish_reason=ans.finish_reason)

    def _account(
        self,
        policy: PolicyRuntime,
        target: str,
        d: Decision,
        budgets: tuple[BudgetConfig, ...],
        pt: int,
        ct: int,
        rt: int,
        cost: float,
    ) -> None:
        d.prompt_tokens += pt
        d.completion_tokens += ct
        d.reasoning_tokens += rt
        d.cost_usd += cost
        name = policy.model_name
        m.bound(m.TOKENS, name, target, "input").inc(pt)
        m.bound(m.TOKENS, name, target, "output").inc(ct)
        if rt:
            m.bound(m.TOKENS, name, target, "reasoning").inc(rt)
        if cost:
            m.bound(m.COST, name, target).inc(cost)
        self._charge(budgets, cost)

    async def _specialist(
        self,
        policy: PolicyRuntime,
        cfg: CascadeTier,
        spec: SpecialistConfig,
        req: ParsedRequest,
        d: Decision,
        caps: Caps,
        budgets: tuple[BudgetConfig, ...],
        timeout: float,
        emit: Emit | None,
        *,
        own_timeout: bool = True,
    ) -> tuple[Outcome, float | None]:
        endpoint = spec.endpoint
        now = self.clock()
        ok, b = allow(self.breakers.get(endpoint, Breaker()), now, self.breaker_config)
        self.breakers[endpoint] = b
        if not ok:
            raise UpstreamError(f"circuit open for {endpoint}", reason="circuit_open")
        markers = spec.reasoning
        st = new_state(
            markers.start_marker if markers else None, markers.end_marker if markers else None
        )
        rcap = caps.reasoning_cap if markers else None
        ocap = caps.max_output_tokens
        sampling = dict(req.sampling)
        if ocap is not None:
            sampling["max_tokens"] = ocap
        conf: float | None = None
        emitted = False
        action = "continue"
        fault = False
        ok = succeeded = False
        t0 = self.clock()
        prompt_tokens = estimate_tokens(req.prompt)
        answer_st = st
        # Nothing to cancel in Triton (no live client, no reasoning cut): the pool's
        # shared stream, when it has one, saves opening a gRPC stream per request.
        open_stream = self.pool.stream
        if emit is None and rcap is None:
            open_stream = getattr(self.pool, "shared_stream", open_stream)
        try:
            gen = open_stream(
                endpoint,
                spec.triton_model,
                req.prompt,
                sampling,
                timeout_s=timeout,
                request_id=d.request_id,
            )
            try:
                async for piece in gen:
                    if piece.confidence is not None:
                        conf = piece.confidence
                    st, s = step(st, piece.text, reasoning_cap=rcap, output_cap=ocap)
                    if s.answer_delta and emit is not None:
                        emitted = True
                        await emit(s.answer_delta)
                    if s.action != "continue":
                        action = s.action
                        break
            finally:
                await gen.aclose()
            answer_st = st
            if action == "cut":
                d.truncated = True
                m.bound(m.TRUNCATIONS, policy.model_name, spec.id).inc()
                used = st.reasoning_tokens + st.answer_tokens
                budget = caps.answer_tokens
                if ocap is not None:
                    budget = max(1, min(budget, ocap - used))
                prompt2 = continuation_prompt(req.prompt, st)
                prompt_tokens += estimate_tokens(prompt2)
                answer_st = new_state(None, None, answering=True)
                remaining = timeout - (self.clock() - t0)
                if remaining <= 0:
                    raise UpstreamError("deadline exceeded before the answer", timeout=True)
                gen = self.pool.stream(
                    endpoint,
                    spec.triton_model,
                    prompt2,
                    {**req.sampling, "max_tokens": budget},
                    timeout_s=remaining,
                    request_id=d.request_id,
                )
                action = "continue"
                try:
                    async for piece in gen:
                        if piece.confidence is not None:
                            conf = piece.confidence
                        answer_st, s = step(
                            answer_st, piece.text, reasoning_cap=None, output_cap=budget
                        )
                        if s.answer_delta and emit is not None:
                            emitted = True
                            await emit(s.answer_delta)
                        if s.action != "continue":
                            action = s.action
                            break
                finally:
                    await gen.aclose()
            ok = succeeded = True
        except UpstreamError as exc:
            # A deadline shortened by maxLatencyMs says nothing about the endpoint.
            fault = (exc.timeout and own_timeout) or exc.retryable or "UNAVAILABLE" in str(exc)
            # The endpoint answered (e.g. a model error): healthy, as before.
            ok = not fault and not exc.timeout
            if emitted:
                d.status = -1  # the client already has part of this answer
            raise
        finally:
            dt = self.clock() - t0
            d.upstream_s += dt
            m.bound(m.UPSTREAM, policy.model_name, spec.id, cfg.name).observe(dt)
            cur = self.breakers.get(endpoint, Breaker())
            if ok or fault:
                nb = record(cur, not fault, self.clock(), self.breaker_config)
            else:
                # Neither proof of health nor an endpoint fault (client gone, cancelled,
                # a budget-shortened deadline): only free a half-open probe.
                nb = replace(cur, probing=False)
            self.breakers[endpoint] = nb
            m.bound(m.CIRCUIT_OPEN, endpoint).set(1 if nb.state == "open" else 0)
            # Charge what was generated, also when the call failed, timed out or the
            # client went away (then only if the model produced anything).
            rt = st.reasoning_tokens
            ct = rt + st.answer_tokens + (answer_st.answer_tokens if answer_st is not st else 0)
            if succeeded or ct > 0:
                cost = cost_usd(
                    prompt_tokens,
                    ct,
                    spec.cost.input_per_million_usd,
                    spec.cost.output_per_million_usd,
                )
                self._account(policy, spec.id, d, budgets, prompt_tokens, ct, rt, cost)
        finish = "length" if action == "length" or (ocap is not None and ct >= ocap) else "stop"
        answer = answer_st.answer if answer_st is not st else st.answer
        return Outcome(answer, st.reasoning.strip(), finish, emitted), conf
