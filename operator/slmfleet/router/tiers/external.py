"""The external tier: an OpenAI-compatible endpoint (a larger hosted model)."""

from __future__ import annotations

import time
from collections.abc import Callable

from .. import metrics as m
from ..accounting import Accounting, record_usage
from ..external import ExternalClients
from ..protocol import estimate_tokens
from ..spend import cost_usd
from .base import Answer, Outcome, TierCall
from .stream import Progress, consume, one_piece, verbatim

#: Output tokens held for an external call that names no max_tokens (the worst case
#: is the endpoint's own limit, which the router does not know).
WORST_CASE_OUTPUT_TOKENS = 4096


class ExternalTier:
    def __init__(
        self,
        clients: ExternalClients,
        accounting: Accounting,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clients = clients
        self.accounting = accounting
        self.clock = clock

    async def call(self, c: TierCall) -> Answer:
        cfg = c.tier.cfg
        ext = cfg.external
        assert ext is not None
        caps, budgets = c.caps(None)
        timeout, _own = c.timeout(caps, self.clock())
        d, req, policy = c.d, c.req, c.policy.model_name
        d.target = f"external:{ext.model}"
        prices = (ext.input_per_million_usd, ext.output_per_million_usd)
        worst = caps.max_output_tokens or WORST_CASE_OUTPUT_TOKENS
        hold = self.accounting.reserve(
            budgets, cost_usd(estimate_tokens(req.prompt), worst, *prices)
        )
        cost = 0.0
        trace: dict[str, str] = {}
        c.span.inject(trace)  # the endpoint continues this hop's trace (W3C traceparent)
        t0 = self.clock()
        try:
            try:
                ans = await self.clients.chat(
                    ext,
                    list(req.messages),
                    max_tokens=caps.max_output_tokens,
                    sampling=req.sampling,
                    timeout_s=timeout,
                    request_id=d.request_id,
                    trace_headers=trace,
                )
            finally:
                dt = self.clock() - t0
                d.upstream_s += dt
                m.bound(m.UPSTREAM, policy, "external", cfg.name).observe(dt)
            pt = ans.prompt_tokens if ans.prompt_tokens is not None else estimate_tokens(req.prompt)
            ct = (
                ans.completion_tokens
                if ans.completion_tokens is not None
                else estimate_tokens(ans.text)
            )
            cost = cost_usd(pt, ct, *prices)
            record_usage(d, policy, "external", pt, ct, 0, cost)
        finally:
            self.accounting.settle(hold, cost)
        p = await consume(
            one_piece(ans.text),
            Progress(verbatim()),
            reasoning_cap=None,
            output_cap=None,
            emit=c.emit,
        )
        return Answer(Outcome(p.state.answer, finish_reason=ans.finish_reason, emitted=p.emitted))
