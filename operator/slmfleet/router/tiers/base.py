"""What a cascade tier is given and what it returns; helpers every tier shares."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ...api.routerconfig import BudgetConfig
from ...telemetry.tracing import NOOP
from ..decision import Decision
from ..errors import UpstreamError
from ..protocol import ParsedRequest
from ..routing import RouteDecision
from ..snapshot import PolicyRuntime, Snapshot, TierRuntime, budgets_for
from ..spend import NO_STEP, SpendVerdict
from ..tracebudget import Caps, effective_caps

Emit = Callable[[str], Awaitable[None]]


@dataclass(slots=True)
class Outcome:
    text: str
    reasoning: str = ""
    finish_reason: str = "stop"
    emitted: bool = False
    """True when the text already went to the client live (streaming)."""
    status: int = 200
    """202: the human tier filed a case the caller polls (``body``, ``location``)."""
    body: dict[str, Any] | None = None
    location: str | None = None


@dataclass(slots=True)
class Answer:
    outcome: Outcome
    confidence: float | None = None
    """The model's own confidence in its answer, when it reports one."""


@dataclass(frozen=True, slots=True)
class RequestRun:
    """One request on its way through the cascade: what every step needs besides the
    route (the engine's, the rollout's, a split part's). A split part is the same run
    with its own request text and Decision (``dataclasses.replace``)."""

    snap: Snapshot
    policy: PolicyRuntime
    req: ParsedRequest
    d: Decision
    emit: Emit | None = None
    """Where answer text streams to the client live (None: not streamed)."""
    deadline: float | None = None
    """The request's deadline (engine clock), from maxLatencyMs and the caller."""
    started: float = 0.0
    """When the request started (engine clock): per-request budgets count from here."""
    degrade: bool = False
    """The budgets' degrade step is in force (no costly escalation, cheapest route)."""

    def tier_call(
        self,
        tier: TierRuntime,
        route: RouteDecision,
        emit: Emit | None,
        spend: SpendVerdict = NO_STEP,
    ) -> TierCall:
        """``tier``'s turn at this request (``emit``: set when its answer goes live)."""
        return TierCall(
            self.snap, self.policy, tier, route, self.req, self.d, emit, self.deadline,
            self.started, spend=spend,
        )  # fmt: skip


@dataclass(slots=True)
class TierCall:
    """One tier's turn at one request, as the engine hands it over."""

    snap: Snapshot
    policy: PolicyRuntime
    tier: TierRuntime
    route: RouteDecision
    req: ParsedRequest
    d: Decision
    emit: Emit | None
    """Set when this tier's answer streams to the client live."""
    deadline: float | None
    """The request's deadline (engine clock), from maxLatencyMs and the caller."""
    started: float
    """When the request started (engine clock): per-request budgets count from here."""
    spend: SpendVerdict = NO_STEP
    """The degrade-ladder steps in force for this tier's Budgets (halveReasoning here)."""
    span: Any = NOOP
    """This hop's span (telemetry.tracing): ``span.inject(headers)`` propagates the W3C
    trace context to an outgoing call."""

    @property
    def specialist(self) -> str | None:
        cfg = self.tier.cfg
        return self.route.specialist if cfg.routed else cfg.specialist

    def budgets(self, sid: str | None) -> tuple[BudgetConfig, ...]:
        return budgets_for(self.snap, self.policy, sid)

    def caps(self, sid: str | None) -> tuple[Caps, tuple[BudgetConfig, ...]]:
        budgets = self.budgets(sid)
        limits = [b.per_request for b in budgets if b.per_request is not None]
        return effective_caps(limits, self.req.max_tokens), budgets

    def timeout(self, caps: Caps, now: float) -> tuple[float, bool]:
        """(seconds this call may take, whether that is the tier's own ``timeoutMs``).

        The request's deadline, and a tighter maxLatencyMs of this tier's own specialist
        Budget (still counted from the request's start), shorten the tier's timeout; a
        call cut short by them says nothing about the endpoint's health.
        """
        deadline = self.deadline
        if caps.max_latency_ms is not None:
            tier_deadline = self.started + caps.max_latency_ms / 1000
            deadline = tier_deadline if deadline is None else min(deadline, tier_deadline)
        timeout = self.tier.cfg.timeout_ms / 1000
        if deadline is not None and deadline - now < timeout:
            timeout = deadline - now
            if timeout <= 0:
                raise UpstreamError("request deadline exceeded", timeout=True)
            return timeout, False
        return timeout, True


class Tier(Protocol):
    """A cascade tier adapter: specialist, external endpoint or human review."""

    async def call(self, c: TierCall) -> Answer: ...
