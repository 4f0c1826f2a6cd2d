"""The external tier: an OpenAI-compatible endpoint (a larger hosted model).

Spend: the call's worst case (its input bound and output cap, sent as ``max_tokens``
whenever a spend window or an output cap applies) is reserved before it and the
``usage`` the endpoint returns is settled after it (reasoning tokens apart, from
``completion_tokens_details``); without usage the router's tokenizer counts. A call
whose outcome is unknown (a timeout, or the client leaving while it runs) is charged
its worst case, and recorded so (the Decision, the token and cost metrics): the
endpoint may well have generated, and billed, the whole answer. A call the endpoint
refused (an HTTP error) or that never reached it (no connection made in time) costs
nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ...budget.amounts import Amount
from ...budget.tokens import ByteBound, TokenCounter
from .. import metrics as m
from ..accounting import Accounting, record_usage
from ..errors import UpstreamError
from ..external import ExternalAnswer, ExternalClients
from .base import Answer, Outcome, TierCall
from .plan import actual, external_plan, input_tokens, message_bound, output_tokens
from .stream import Progress, consume, one_piece, verbatim


class ExternalTier:
    def __init__(
        self,
        clients: ExternalClients,
        accounting: Accounting,
        clock: Callable[[], float] = time.monotonic,
        counter: TokenCounter | None = None,
    ) -> None:
        self.clients = clients
        self.accounting = accounting
        self.clock = clock
        self.counter: TokenCounter = counter or ByteBound()

    async def call(self, c: TierCall) -> Answer:
        cfg = c.tier.cfg
        ext = cfg.external
        assert ext is not None
        caps, budgets = c.caps(None)
        timeout, _own = c.timeout(caps, self.clock())
        d, req, policy = c.d, c.req, c.policy.model_name
        d.target = f"external:{ext.model}"
        prices = (ext.input_per_million_usd, ext.output_per_million_usd)
        plan = external_plan(req.messages, caps, prices)
        hold = await self.accounting.reserve(
            budgets, plan.worst, ttl_s=timeout, request_id=d.request_id
        )
        d.ledger_available = d.ledger_available and not hold.local  # served on a local count
        try:  # the time left after the reservation (its round trips, an earlier settle)
            timeout, _own = c.timeout(caps, self.clock())
        except UpstreamError:
            await self.accounting.settle(hold, Amount())
            raise
        spent = plan.worst  # until the endpoint says otherwise (see the module docstring)
        unknown = True  # the outcome: charged its worst case, recorded as such
        trace: dict[str, str] = {}
        c.span.inject(trace)  # the endpoint continues this hop's trace (W3C traceparent)
        t0 = self.clock()
        try:
            try:
                # The reserved cap bounds the call whenever a spend window holds it;
                # without caps or windows the endpoint's own default applies.
                held = bool(hold.budgets) or caps.max_output_tokens is not None
                ans = await self.clients.chat(
                    ext,
                    list(req.messages),
                    max_tokens=plan.output_cap if held else None,
                    sampling=req.sampling,
                    timeout_s=timeout,
                    request_id=d.request_id,
                    trace_headers=trace,
                )
            except UpstreamError as exc:
                if not exc.timeout:  # refused, or never sent: nothing generated
                    spent, unknown = Amount(), False
                raise
            finally:
                dt = self.clock() - t0
                d.upstream_s += dt
                m.bound(m.UPSTREAM, policy, "external", cfg.name).observe(dt)
            pt, ct, rt = self._tokens(c, ans, plan.output_cap)
            spent = actual(pt, ct, prices)
            record_usage(d, policy, "external", pt, ct, rt, spent.usd)
            unknown = False
        finally:
            if unknown:  # a timeout or the client leaving: the record says what is charged
                bound = message_bound(req.messages)
                record_usage(d, policy, "external", bound, plan.output_cap, 0, spent.usd)
            await self.accounting.settle(hold, spent)
        p = await consume(
            one_piece(ans.text),
            Progress(verbatim()),
            reasoning_cap=None,
            output_cap=None,
            emit=c.emit,
        )
        return Answer(Outcome(p.state.answer, finish_reason=ans.finish_reason, emitted=p.emitted))

    def _tokens(self, c: TierCall, ans: ExternalAnswer, output_cap: int) -> tuple[int, int, int]:
        bound = message_bound(c.req.messages)
        text = "\n".join(msg.get("content", "") for msg in c.req.messages)
        pt = input_tokens(ans.prompt_tokens, text, self.counter, cap=bound)
        # An answer that arrives whole is one delta: without a tokenizer, its byte bound.
        deltas = 0 if self.counter.exact else min(output_cap, len(ans.text.encode()))
        ct = output_tokens(
            ans.completion_tokens, ans.text, self.counter, deltas=deltas, cap=output_cap
        )
        rt = min(ans.reasoning_tokens or 0, ct)
        return pt, ct, rt
