"""One cascade hop as telemetry sees it: its ``Attempt`` on the Decision and its span.

The engine opens a ``Hop`` before a tier is called and closes it with what happened
(``failed`` or ``answered``); tiers that are not called are recorded with ``skipped``.
The tokens, cost and truncation of the hop are what the tier added to the Decision
while it ran, so the adapters stay unaware of this bookkeeping. The span is the request
span's child (a no-op unless tracing is on); the external tier injects its W3C context
into the outgoing call (``TierCall.span``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..api.routerconfig import TierConfig
from .acceptance import CompiledAcceptance
from .decision import Attempt, Decision


def tier_kind(cfg: TierConfig) -> str:
    return "human" if cfg.human is not None else "external" if cfg.external else "specialist"


def planned_target(cfg: TierConfig, routed: str | None) -> str:
    """What the tier will call, before it is called (the hop span's name)."""
    if cfg.human is not None:
        return cfg.human.queue
    if cfg.external is not None:
        return cfg.external.model
    return (routed if cfg.routed else cfg.specialist) or "-"


def skipped(d: Decision, tier: str, reason: str) -> None:
    """A tier that was not called (routing confidence, budget, deadline, domain)."""
    last = d.attempts[-1] if d.attempts else None
    if last is not None and last.tier == tier and last.outcome == "skipped":
        last.reasons += (reason,)
    else:
        d.attempts.append(Attempt(tier, "skipped", (reason,)))


def validator_results(acc: CompiledAcceptance, reasons: tuple[str, ...]) -> dict[str, bool] | None:
    """Every validator of the tier by name: passed or not (None: the tier has none)."""
    if not acc.validators:
        return None
    return {v.name: f"validator:{v.name}" not in reasons for v in acc.validators}


class Hop:
    """A tier call in progress: ``failed`` or ``answered`` closes it (once). The span's
    operation (chat, text_completion) is the request span's."""

    __slots__ = ("_before", "_open", "_t0", "attempt", "clock", "d", "span")

    def __init__(
        self,
        d: Decision,
        cfg: TierConfig,
        routed: str | None,
        clock: Callable[[], float],
        *,
        max_tokens: int | None = None,
    ) -> None:
        self.d = d
        self.clock = clock
        kind = tier_kind(cfg)
        self.attempt = Attempt(cfg.name, "failed")
        target = planned_target(cfg, routed)
        model = None if kind == "human" else target
        self.span: Any = d.trace.hop(
            cfg.name, target=target, kind=kind, model=model, max_tokens=max_tokens
        )
        self._before = (d.prompt_tokens, d.completion_tokens, d.reasoning_tokens, d.cost_usd)
        self._t0 = clock()
        self._open = True
        d.attempts.append(self.attempt)

    def _close(self, outcome: str, reasons: tuple[str, ...]) -> Attempt:
        a, d = self.attempt, self.d
        a.outcome = outcome
        a.reasons = reasons
        a.target = None if d.target == "-" else d.target
        a.latency_s = self.clock() - self._t0
        pt, ct, rt, cost = self._before
        a.prompt_tokens = d.prompt_tokens - pt
        a.completion_tokens = d.completion_tokens - ct
        a.reasoning_tokens = d.reasoning_tokens - rt
        a.cost_usd = d.cost_usd - cost
        a.truncated = d.truncated
        if self._open:
            self._open = False
            self.span.usage(
                input_tokens=a.prompt_tokens,
                output_tokens=a.completion_tokens,
                reasoning_tokens=a.reasoning_tokens or None,
                cost_usd=a.cost_usd,
                truncated=a.truncated,
            )
            if a.target is not None:
                self.span.set("gen_ai.response.model", a.target)
        return a

    def failed(self, reason: str, error: BaseException | None = None) -> None:
        """The call raised (error, timeout, open circuit, client gone): the span ends."""
        if not self._open:
            return
        self._close("failed", (reason,))
        self.span.escalated([reason])
        self.span.failed(error if error is not None else reason)
        self.span.end()

    def answered(
        self,
        reasons: tuple[str, ...],
        acc: CompiledAcceptance,
        *,
        confidence: float | None,
        text: str | None,
        finish_reason: str,
    ) -> None:
        """The tier answered; ``reasons`` (empty: accepted) say why it did not stand."""
        if not self._open:
            return
        a = self._close("rejected" if reasons else "accepted", reasons)
        a.answer_confidence = confidence
        a.validators = validator_results(acc, reasons)
        a.answer = text
        self.span.usage(finish_reason=finish_reason)
        if reasons:
            self.span.escalated(list(reasons))
        else:
            self.span.set("slmfleet.outcome", "accepted")
        self.span.end()


def returned(d: Decision, tier: str) -> None:
    """No tier passed: the rejected answer of ``tier`` is the one returned."""
    for a in reversed(d.attempts):
        if a.tier == tier and a.outcome == "rejected":
            a.outcome = "returned"
            return
