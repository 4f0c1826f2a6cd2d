"""The specialist tier: a Triton model, under the trace budget and a circuit breaker.

One generation streams through the shared loop; when the model is still thinking at its
reasoning cap the stream is cancelled, the thought closed with the end marker and sent
back for a short answer (a second, answer-only generation).

Spend: the call's worst case (``plan``) is reserved before it and held there by the
``max_tokens`` sent; the backend's own token counts are asked for on every request and
settled after it, whatever happened. Tokens generated before a failure, a deadline or
the client leaving are charged (with the prompt, when the model generated anything:
the answer-only generation's prompt only when it generated, or the backend counted it);
the rest of the reservation is released. The call's deadline is taken again after the
reservation, whose round trips it includes.

Answer confidence: the model's ``confidence`` output, or, for a vLLM or TensorRT-LLM
specialist whose tier has answer-confidence thresholds, the confidence derived from
the cumulative log-probs the codec asked for (``router/logprobs.py``; the rule is in
docs/learning.md). The engine then calibrates it (``router/calibration.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ...budget.amounts import Amount
from ...budget.tokens import ByteBound, TokenCounter
from .. import metrics as m
from ..accounting import Accounting, record_usage
from ..backends import Codecs
from ..breaker import Breaker, BreakerConfig, admitted_probe, allow, record, released
from ..capacity import overflow, wait_seconds
from ..errors import UpstreamError
from ..logprobs import answer_confidence, wants_logprobs
from ..tracebudget import continuation_prompt, new_state
from .base import Answer, Outcome, TierCall
from .plan import (
    ContextExceeded,
    actual,
    bounded_sampling,
    continuation_bound,
    input_tokens,
    output_tokens,
    specialist_plan,
)
from .stream import Progress, consume


class SpecialistTier:
    def __init__(
        self,
        pool: Any,
        accounting: Accounting,
        breakers: dict[str, Breaker],
        breaker_config: BreakerConfig,
        clock: Callable[[], float] = time.monotonic,
        shared_max_tokens: int = 0,
        codecs: Codecs | None = None,
        counter: TokenCounter | None = None,
    ) -> None:
        self.pool = pool
        self.codecs = codecs or Codecs()
        """The request/response codec per specialist, by its backend (see backends)."""
        self.counter: TokenCounter = counter or ByteBound()
        """Counts tokens where the backend reports none (see ``plan.counted``)."""
        self.shared_max_tokens = shared_max_tokens
        self.accounting = accounting
        self.breakers = breakers
        """Per endpoint: the specialist as a whole (the pool also ejects single Pods)."""
        self.breaker_config = breaker_config
        self.clock = clock

    def overflow(self, c: TierCall, *, has_next: bool) -> str | None:
        """Why the request skips this specialist for the next tier now (scaled to zero,
        or cost-capped and full, as the policy allows), or None; see capacity.py."""
        spec = c.snap.specialists.get(c.specialist or "")
        if spec is None or not (spec.scaled_to_zero or spec.ready):
            return None  # unknown or unready: call() says so
        cap = c.policy.capacity
        may = cap.when_scaled_to_zero == "cascade" or (
            spec.cost_capped and cap.when_cost_capped == "cascade"
        )
        if not (has_next and may):
            return None  # the default (wait, queue) costs the hot path nothing
        replicas, in_flight = self.pool.load(spec.endpoint, spec.triton_model)
        reason = overflow(
            spec, c.policy.capacity, replicas=replicas, in_flight=in_flight, has_next=has_next
        )
        if reason is not None and reason != "cost_capped":
            m.bound(m.NO_REPLICA, spec.id).inc()  # demand that starts it
        return reason

    async def call(self, c: TierCall) -> Answer:
        sid = c.specialist
        caps, budgets = c.caps(sid)
        timeout, own_timeout = c.timeout(caps, self.clock())
        assert sid is not None
        spec = c.snap.specialists.get(sid)
        if spec is None:
            raise UpstreamError(f"unknown specialist {sid}")
        if not spec.ready and not spec.scaled_to_zero:
            raise UpstreamError(f"specialist {sid} is not ready", reason="unready")
        d, req, policy = c.d, c.req, c.policy.model_name
        d.target = sid
        # Answer confidence from log-probs, for a vLLM / TensorRT-LLM model a threshold reads
        logprobs = wants_logprobs(c.tier.accept, spec.backend)
        codec = await self.codecs.for_specialist(spec, logprobs=logprobs)
        endpoint = spec.endpoint
        markers = spec.reasoning
        first = Progress(
            new_state(
                markers.start_marker if markers else None, markers.end_marker if markers else None
            )
        )
        answer: Progress | None = None
        prices = (spec.cost.input_per_million_usd, spec.cost.output_per_million_usd)
        try:
            plan = specialist_plan(
                req.prompt,
                caps,
                reasons=markers is not None,
                halve_reasoning=c.spend.halve_reasoning,
                context_length=spec.context_length,
                prices=prices,
                counter=self.counter,
            )
        except ContextExceeded as exc:  # another tier may have the room; else a 400
            raise UpstreamError(
                str(exc), reason="context_length_exceeded", public=str(exc)
            ) from None
        rcap, ocap = plan.reasoning_cap, plan.output_cap
        d.reasoning_halved = d.reasoning_halved or plan.reasoning_halved
        sampling = bounded_sampling(req.sampling, ocap)
        hold = await self.accounting.reserve(
            budgets, plan.worst, ttl_s=timeout, request_id=d.request_id
        )
        d.ledger_available = d.ledger_available and not hold.local  # served on a local count
        try:  # the time left after the codec and the reservation (its round trips)
            timeout, own_timeout = c.timeout(caps, self.clock())
        except UpstreamError:
            await self.accounting.settle(hold, Amount())
            raise
        before = self.breakers.get(endpoint, Breaker())
        ok, b = allow(before, self.clock(), self.breaker_config)
        probe = admitted_probe(before, b)
        self.breakers[endpoint] = b
        if not ok:
            await self.accounting.settle(hold, Amount())
            raise UpstreamError(f"circuit open for {endpoint}", reason="circuit_open")
        prompt2 = ""
        budget = 0  # the answer-only generation's max_tokens
        fault = ok = succeeded = False
        t0 = self.clock()
        inflight = m.bound(m.INFLIGHT, spec.id)
        inflight.inc()
        try:
            # Triton cannot cancel one request on a shared stream: only for short,
            # capped answers that neither stream to a client nor may be cut for
            # reasoning, when the settings allow it (see Settings).
            shared = (
                c.emit is None
                and rcap is None
                and (
                    self.shared_max_tokens < 0  # every non-streamed request: never cancelled
                    or (caps.max_output_tokens is not None and ocap <= self.shared_max_tokens)
                )
            )
            gen = self.pool.stream(
                endpoint,
                spec.triton_model,
                req.prompt,
                sampling,
                timeout_s=timeout,
                request_id=d.request_id,
                shared=shared,
                specialist=spec.id,
                codec=codec,
                counts=True,
                wait_s=wait_seconds(c.policy.capacity),
            )
            await consume(gen, first, reasoning_cap=rcap, output_cap=ocap, emit=c.emit)
            if first.action == "cut":
                d.truncated = True
                m.bound(m.TRUNCATIONS, policy, spec.id).inc()
                budget = max(1, min(caps.answer_tokens, ocap - first.generated))
                remaining = timeout - (self.clock() - t0)
                if remaining <= 0:  # no second call: nothing of it to charge
                    raise UpstreamError("deadline exceeded before the answer", timeout=True)
                prompt2 = continuation_prompt(req.prompt, first.state)
                answer = Progress(
                    new_state(None, None, answering=True), confidence=first.confidence
                )
                gen = self.pool.stream(
                    endpoint,
                    spec.triton_model,
                    prompt2,
                    bounded_sampling(req.sampling, budget),
                    timeout_s=remaining,
                    request_id=d.request_id,
                    specialist=spec.id,
                    codec=codec,
                    counts=True,
                )
                await consume(gen, answer, reasoning_cap=None, output_cap=budget, emit=c.emit)
            ok = succeeded = True
        except UpstreamError as exc:
            # A deadline shortened by maxLatencyMs says nothing about the endpoint.
            fault = (exc.timeout and own_timeout) or exc.retryable or "UNAVAILABLE" in str(exc)
            # The endpoint answered (e.g. a model error): healthy, as before. No replica to
            # answer at all says nothing about its health.
            ok = not fault and not exc.timeout and exc.reason != "no_replica"
            if exc.reason == "no_replica":
                m.bound(m.NO_REPLICA, spec.id).inc()
            if first.emitted or (answer is not None and answer.emitted):
                d.status = -1  # the client already has part of this answer
            raise
        finally:
            inflight.dec()
            dt = self.clock() - t0
            d.upstream_s += dt
            m.bound(m.UPSTREAM, policy, spec.id, c.tier.cfg.name).observe(dt)
            cur = self.breakers.get(endpoint, Breaker())
            if ok or fault:
                nb = record(cur, not fault, self.clock(), self.breaker_config)
            else:
                # Neither proof of health nor an endpoint fault (client gone, cancelled,
                # a budget-shortened deadline): only free the half-open probe, if this
                # call was it (an older request's end must not let a second probe in).
                nb = released(cur, probe)
            self.breakers[endpoint] = nb
            m.bound(m.CIRCUIT_OPEN, endpoint).set(1 if nb.state == "open" else 0)
            pt, ct, rt = self._tokens(req.prompt, prompt2, first, answer, plan, succeeded)
            spent = Amount()
            if succeeded or ct > 0:
                spent = actual(pt, ct, prices)
                record_usage(d, policy, spec.id, pt, ct, rt, spent.usd)
            await self.accounting.settle(hold, spent)
        final = answer if answer is not None else first
        # "length" when the last generation stopped at its own cap: the budget's output
        # cap, or the max_tokens the backend held it to (it stops there: no piece past
        # the cap ever arrives to tell).
        if answer is not None:
            cut = answer.action == "length" or answer_tokens(answer) >= budget
        else:
            cut = first.action == "length" or ct >= ocap
        finish = "length" if cut else "stop"
        emitted = first.emitted or (answer is not None and answer.emitted)
        conf = final.confidence
        if logprobs and final.steps:
            derived = answer_confidence(final.steps, labels=spec.domain.labels)
            conf = conf if derived is None else round(derived, 6)
        return Answer(
            Outcome(final.state.answer, first.state.reasoning.strip(), finish, emitted), conf
        )

    def _tokens(
        self,
        prompt: str,
        prompt2: str,
        first: Progress,
        answer: Progress | None,
        plan: Any,
        succeeded: bool,
    ) -> tuple[int, int, int]:
        """(input, output, reasoning) tokens of the call: the backend's counts, else the
        tokenizer's within the reservation's bounds (see ``plan.counted``). The answer-only
        generation's prompt counts when it generated anything (or the backend counted
        it, or it succeeded): one that failed before its first token costs nothing."""
        cnt = self.counter
        pt = input_tokens(first.input_tokens, prompt, cnt, cap=plan.input_bound)
        ct = output_tokens(
            first.output_tokens, first.state.raw, cnt, deltas=first.generated, cap=plan.output_cap
        )
        if answer is not None:
            cap2 = max(0, plan.output_cap - first.generated)
            if succeeded or answer.generated > 0 or answer.input_tokens is not None:
                pt += input_tokens(answer.input_tokens, prompt2, cnt, cap=continuation_bound(plan))
            ct += output_tokens(
                answer.output_tokens, answer.state.raw, cnt, deltas=answer.generated, cap=cap2
            )
        rt = min(first.state.reasoning_tokens, ct)
        return pt, ct, rt


def answer_tokens(p: Progress) -> int:
    """Tokens one generation produced: the backend's count, else its deltas."""
    return p.output_tokens if p.output_tokens is not None else p.generated
