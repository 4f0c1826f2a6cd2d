"""Budget: per-request caps and spend windows for policies, specialists or a namespace."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from .base import Condition, KubeModel, cel, list_map

WINDOW_PATTERN = r"^[1-9][0-9]*(m|h|d)$"
_WINDOW_SECONDS = {"m": 60, "h": 3600, "d": 86400}


def window_seconds(window: str) -> int:
    """'15m' -> 900; the CRD pattern guarantees the shape."""
    m = re.fullmatch(WINDOW_PATTERN, window)
    if not m:
        raise ValueError(f"malformed spend window {window!r}")
    return int(window[:-1]) * _WINDOW_SECONDS[window[-1]]


class BudgetScope(KubeModel):
    policies: list[str] = Field(default_factory=list, max_length=1000)
    """RouterPolicies (by name) the budget applies to."""
    specialists: list[str] = Field(default_factory=list, max_length=1000)
    """SLMSpecialists (by name) the budget applies to."""


class PerRequestLimits(KubeModel):
    max_reasoning_tokens: int | None = Field(default=None, ge=0, le=1_000_000)
    """Reasoning (trace) tokens a model may spend before its thinking is cut short."""
    max_output_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    """Output tokens per request, reasoning included."""
    max_latency_ms: int | None = Field(default=None, ge=1, le=3_600_000)
    """Wall-clock deadline per request."""
    answer_tokens: int = Field(default=64, ge=1, le=4096)
    """Answer budget of the short second generation after a cut."""


class SpendWindow(KubeModel):
    window: str = Field(pattern=WINDOW_PATTERN, max_length=8)
    """Rolling window length: minutes, hours or days, e.g. 15m, 1h, 1d."""
    limit_usd: float = Field(gt=0)
    """Spend allowed within the window, in USD."""
    action: Literal["degrade", "reject", "alert"] = "alert"
    """What happens once exceeded: degrade (cheapest route, no costly escalation),
    reject (HTTP 429 with Retry-After) or alert (metrics and status only)."""


class BudgetSpec(KubeModel):
    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.perRequest) || (has(self.spend) && size(self.spend) > 0)",
                    "a budget needs perRequest limits or spend windows",
                    ".spend",
                ),
            ]
        }
    }

    applies_to: BudgetScope | None = None
    """What the budget covers; every policy and specialist of the namespace when unset."""
    per_request: PerRequestLimits | None = None
    """Caps on each request; a request may ask for less, never more."""
    spend: list[SpendWindow] = Field(
        default_factory=list, max_length=8, json_schema_extra=list_map("window")
    )
    """Spend limits over rolling windows, one per window length."""


class WindowSpend(KubeModel):
    window: str
    """The spend window."""
    spent_usd: float = 0.0
    """Spend within the window, in USD."""
    limit_usd: float
    """The window's limit, in USD."""
    exceeded: bool = False
    """Whether the limit is exceeded."""


class BudgetStatus(KubeModel):
    observed_generation: int | None = None
    """The metadata.generation the operator last reconciled."""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=list_map("type"))
    """Ready once accepted; Exceeded while any window is over its limit."""
    state: Literal["Active", "Exceeded"] | None = None
    """Active, or Exceeded while any window is over its limit."""
    spend: list[WindowSpend] = Field(default_factory=list)
    """Spend per window."""
    policies: list[str] = Field(default_factory=list)
    """Policies the budget currently applies to."""


class Budget(KubeModel):
    """Limits on reasoning, output, latency and money."""

    api_version: Literal["slmfleet.io/v1alpha1"] = "slmfleet.io/v1alpha1"
    kind: Literal["Budget"] = "Budget"
    spec: BudgetSpec
    status: BudgetStatus | None = None
