"""How a request that no tier served ends, and what spend did to it, pure: the error
the caller gets (429 with Retry-After for a refused Budget, 400 for a prompt longer than
the model's context, 503/504/502 for other upstream failures) and the ladder steps and
refusals written on its Decision (headers, log line). Shared by the engine, the split
runner and the rollouts."""

from __future__ import annotations

from . import metrics as m
from .accounting import SpendRefused
from .capacity import NO_REPLICA_RETRY_AFTER_S
from .decision import Decision
from .errors import RouterError, UpstreamError
from .snapshot import PolicyRuntime
from .spend import SpendVerdict

#: Ladder steps from least to most severe: the Decision shows the most severe in force.
SEVERITY = ("alert", "halveReasoning", "degrade", "reject")


def failure_error(
    policy: PolicyRuntime,
    out_of_time: bool,
    last_error: UpstreamError | None,
    rejected: SpendRefused | None,
) -> RouterError:
    """The error for a request no tier answered."""
    if last_error is not None and last_error.reason == "no_replica" and not out_of_time:
        return RouterError(
            503,
            f"service unavailable: {last_error.public_message}; retry later",
            type="server_error",
            code="no_replica",
            headers={"retry-after": str(NO_REPLICA_RETRY_AFTER_S)},
        )
    if (
        last_error is not None
        and last_error.reason == "context_length_exceeded"
        and not out_of_time
    ):  # the caller's to fix, as OpenAI answers it
        return RouterError(
            400,
            last_error.public_message,
            code="context_length_exceeded",
            param="messages",
        )
    if out_of_time or (last_error is not None and last_error.timeout):
        return RouterError(
            504,
            "upstream timeout: "
            + (last_error.public_message if last_error else "request deadline exceeded"),
            type="upstream_error",
            code="upstream_timeout",
        )
    if last_error is not None:
        return RouterError(
            502,
            f"upstream failure: {last_error.public_message}",
            type="upstream_error",
            code="upstream_error",
        )
    if rejected is not None:
        return budget_rejection(policy, rejected)
    return RouterError(
        502, "no cascade tier could serve the request", type="upstream_error", code="no_tier"
    )


def budget_rejection(policy: PolicyRuntime, refused: SpendRefused) -> RouterError:
    adm = refused.admission
    m.bound(m.BUDGET_REJECTIONS, policy.model_name, adm.reason or "limit").inc()
    m.bound(m.BUDGET_STEPS, policy.model_name, "reject").inc()
    retry = str(max(1, adm.retry_after_s))
    if adm.reason == "ledger_unavailable":
        return RouterError(
            429,
            "spend ledger unavailable and a Budget fails closed "
            f"({', '.join(adm.refused_by)}); retry later",
            type="rate_limit_error",
            code="budget_ledger_unavailable",
            headers={"retry-after": retry},
        )
    why = "exceeds a limit on its own" if adm.reason == "too_large" else "exceeded"
    return RouterError(
        429,
        f"spend budget {why} ({', '.join(adm.refused_by)}); retry later",
        type="rate_limit_error",
        code="budget_exceeded",
        headers={"retry-after": retry},
    )


def refused_by_request(refused: SpendRefused, policy: PolicyRuntime, routed: bool) -> bool:
    """Whether the refusal holds for the whole request: a Budget of the policy, or of
    the specialist routing chose, refused (a fixed tier's own Budget does not)."""
    if routed:
        return True
    own = {b.id for b in policy.budgets}
    return any(r.rsplit("/", 1)[0] in own or r in own for r in refused.admission.refused_by)


def note_ladder(d: Decision, spend: SpendVerdict) -> None:
    """The ladder steps in force, on the Decision (headers, log line)."""
    d.budget_exceeded = tuple(dict.fromkeys((*d.budget_exceeded, *spend.exceeded)))
    d.budget_steps = tuple(dict.fromkeys((*d.budget_steps, *spend.steps)))
    if spend.step is not None:
        d.budget_step = max(
            (s for s in (d.budget_step, spend.step) if s is not None), key=SEVERITY.index
        )
    if spend.steps or spend.percent:
        d.budget_percent = max(d.budget_percent or 0, spend.percent)


def note_refusal(d: Decision, refused: SpendRefused) -> None:
    adm = refused.admission
    d.budget_refusal = refused.detail()
    d.ledger_available = d.ledger_available and adm.ledger_available
    d.budget_step = "reject"
    d.budget_steps = tuple(
        dict.fromkeys((*d.budget_steps, *(f"{r}:reject" for r in adm.refused_by)))
    )
    d.budget_exceeded = tuple(dict.fromkeys((*d.budget_exceeded, *adm.refused_by)))
