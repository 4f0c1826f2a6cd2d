"""Budget: per-request caps, spend windows, a degrade ladder and fail modes.

Windows are rolling (``15m``, ``1h``, ``7d``: the last N minutes/hours/days) or
calendar-aligned (``hour``, ``day``, ``week``, ``month`` in a time zone). Each window
limits USD, tokens or both. The arithmetic lives in ``slmfleet.budget.windows``; the
API server refuses malformed windows, negative limits, unknown time zones, ladder
steps out of order and budgets scoped to nothing, naming the field.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from .base import Condition, KubeModel, cel, list_map

CALENDAR_UNITS = ("hour", "day", "week", "month")
ROLLING_PATTERN = r"^[1-9][0-9]{0,3}(m|h|d)$"
WINDOW_PATTERN = r"^([1-9][0-9]{0,3}(m|h|d)|hour|day|week|month)$"
_WINDOW_SECONDS = {"m": 60, "h": 3600, "d": 86400}
#: Longest stretch a calendar unit can cover (a month of 31 days; a 25-hour day).
_CALENDAR_MAX_SECONDS = {"hour": 7200, "day": 90000, "week": 608400, "month": 2682000}
#: Longest rolling window: a year (the ledger's buckets and key TTLs are sized for it).
MAX_ROLLING_SECONDS = 366 * 86400
ROLLING_MESSAGE = "a rolling window is at most a year (366d, 8784h)"
#: The same bound on the API server: the pattern alone lets 9999d through.
ROLLING_RULE = (
    "!self.window.matches('^[0-9]+[mhd]$') || "
    "int(self.window.substring(0, size(self.window) - 1)) * "
    "(self.window.endsWith('d') ? 86400 : self.window.endsWith('h') ? 3600 : 60) "
    f"<= {MAX_ROLLING_SECONDS}"
)

FailMode = Literal["failOpen", "failClosed"]
WindowAction = Literal["degrade", "reject", "alert"]
LadderAction = Literal["alert", "halveReasoning", "degrade", "reject"]
#: Severity order of the ladder's actions (later is more severe).
LADDER_ORDER: tuple[str, ...] = ("alert", "halveReasoning", "degrade", "reject")
MAX_LADDER_STEPS = 4


def is_calendar(window: str) -> bool:
    return window in CALENDAR_UNITS


def check_window(window: str) -> str:
    """A window the runtime supports: a calendar unit or a rolling window of at most a
    year (``windows.Window`` refuses longer ones at every operation)."""
    if not is_calendar(window) and window_seconds(window) > MAX_ROLLING_SECONDS:
        raise ValueError(f"window {window}: {ROLLING_MESSAGE}")
    return window


def window_seconds(window: str) -> int:
    """'15m' -> 900. A calendar unit gives its longest length (a month: 31 days), so code
    that only knows rolling windows over-counts a calendar window, never under-counts."""
    if window in _CALENDAR_MAX_SECONDS:
        return _CALENDAR_MAX_SECONDS[window]
    m = re.fullmatch(ROLLING_PATTERN, window)
    if not m:
        raise ValueError(f"malformed spend window {window!r}")
    return int(window[:-1]) * _WINDOW_SECONDS[window[-1]]


# CEL has no zone database of its own, but its timestamp functions take an IANA zone
# name and fail on an unknown one: the rule errors, and the API server refuses the
# object naming the field.
_TZ_RULE = "timestamp('2000-01-01T00:00:00Z').getHours(self) >= 0"

PolicyName = Annotated[str, Field(min_length=1, max_length=253)]
SpecialistName = Annotated[
    str, Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
]


class BudgetScope(KubeModel):
    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "(has(self.policies) && size(self.policies) > 0) || "
                    "(has(self.specialists) && size(self.specialists) > 0)",
                    "appliesTo must name at least one policy or specialist "
                    "(omit appliesTo to cover the whole namespace)",
                    ".policies",
                ),
            ]
        }
    }

    policies: list[PolicyName] = Field(default_factory=list, max_length=1000)
    """RouterPolicies (by name or model name) the budget applies to."""
    specialists: list[SpecialistName] = Field(default_factory=list, max_length=1000)
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
    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.limitUsd) || has(self.limitTokens)",
                    "a window needs limitUsd, limitTokens or both",
                    ".limitUsd",
                ),
                cel(
                    "!has(self.timeZone) || self.window in ['hour', 'day', 'week', 'month']",
                    "timeZone applies to calendar windows (hour, day, week, month) only",
                    ".timeZone",
                ),
                cel(ROLLING_RULE, ROLLING_MESSAGE, ".window"),
            ]
        }
    }

    window: Annotated[str, AfterValidator(check_window)] = Field(
        pattern=WINDOW_PATTERN, max_length=8
    )
    """Rolling: the last N minutes, hours or days (15m, 1h, 7d), at most a year (366d).
    Calendar-aligned: hour, day, week (from Monday) or month, in timeZone."""
    time_zone: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9_+/-]+$",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(_TZ_RULE, "timeZone must be an IANA time zone name, e.g. Europe/Berlin")
            ]
        },
    )
    """IANA time zone a calendar window is aligned in (default UTC), e.g. Europe/Berlin:
    a day there starts at local midnight and lasts 23 or 25 hours on DST changes."""
    limit_usd: float | None = Field(default=None, gt=0, le=1e6)
    """Spend allowed within the window, in USD."""
    limit_tokens: int | None = Field(default=None, ge=1, le=10**15)
    """Tokens allowed within the window (input plus output, reasoning included)."""
    action: WindowAction = "alert"
    """What happens once this window reaches its limit: degrade (cheapest route, no
    costly escalation), reject (HTTP 429 with Retry-After) or alert (metrics and status
    only). The ladder adds steps before the limit."""

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class LadderStep(KubeModel):
    at_percent: int = Field(ge=1, le=100)
    """Spend, in percent of a window's limit, from which the step applies (the fullest
    window of the Budget counts)."""
    action: LadderAction
    """alert (metrics, status and log only), halveReasoning (reasoning caps halved),
    degrade (no escalation to costly tiers, cheapest eligible specialist) or reject
    (HTTP 429 with Retry-After until the window frees)."""


def _ladder_rules() -> list[dict[str, str]]:
    pairs = " && ".join(
        f"(size(self) < {i + 2} || self[{i}].atPercent < self[{i + 1}].atPercent)"
        for i in range(MAX_LADDER_STEPS - 1)
    )
    return [cel(pairs, "ladder steps must be listed by strictly increasing atPercent")]


class BudgetSpec(KubeModel):
    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.perRequest) || (has(self.spend) && size(self.spend) > 0)",
                    "a budget needs perRequest limits or spend windows",
                    ".spend",
                ),
                cel(
                    "!has(self.ladder) || size(self.ladder) == 0 || "
                    "(has(self.spend) && size(self.spend) > 0)",
                    "a ladder needs spend windows to measure against",
                    ".ladder",
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
    """Spend limits, one per window (rolling or calendar); each in USD, tokens or both."""
    ladder: list[LadderStep] = Field(
        default_factory=list,
        max_length=MAX_LADDER_STEPS,
        json_schema_extra={**list_map("action"), "x-kubernetes-validations": _ladder_rules()},
    )
    """Steps taken as spend grows, by percent of the fullest window's limit, e.g. 70:
    halveReasoning, 85: degrade, 100: reject. Steps accumulate."""
    fail_mode: FailMode = "failOpen"
    """When the shared ledger (Redis) is unreachable: failOpen serves, counts locally
    against the last spend seen and reconciles later; failClosed rejects with 429."""


class WindowStatus(KubeModel):
    window: str
    """The spend window."""
    spent_usd: float = 0.0
    """Settled spend within the window, in USD."""
    reserved_usd: float = 0.0
    """Worst-case cost of requests in flight, in USD."""
    limit_usd: float | None = None
    """The window's USD limit."""
    spent_tokens: int = 0
    """Settled tokens within the window."""
    reserved_tokens: int = 0
    """Worst-case tokens of requests in flight."""
    limit_tokens: int | None = None
    """The window's token limit."""
    percent: int = 0
    """Settled spend in percent of the limit (the fuller unit)."""
    resets_at: str | None = None
    """When a calendar window starts afresh; for a rolling window over its limit, when
    enough spend ages out to be under it again (RFC 3339)."""


class BudgetStatus(KubeModel):
    observed_generation: int | None = None
    """The metadata.generation the operator last reconciled."""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=list_map("type"))
    """Ready once accepted; Exceeded while a limit is reached or requests are refused;
    Degraded while a ladder step applies; LedgerAvailable while the shared ledger answers."""
    state: Literal["Ok", "Degraded", "Exceeded", "Unknown"] | None = None
    """Ok; Degraded while a ladder step short of rejection applies; Exceeded while a
    window is at its limit or requests are rejected; Unknown when the ledger is unreadable."""
    step: str | None = None
    """The most severe ladder step (or window action) in force, if any."""
    percent: int | None = None
    """Settled spend of the fullest window, in percent of its limit."""
    spend: list[WindowStatus] = Field(default_factory=list)
    """Spend per window."""
    policies: list[str] = Field(default_factory=list)
    """Policies the budget currently applies to."""


class Budget(KubeModel):
    """Limits on reasoning, output, latency and money."""

    api_version: Literal["slmfleet.io/v1alpha1"] = "slmfleet.io/v1alpha1"
    kind: Literal["Budget"] = "Budget"
    spec: BudgetSpec
    status: BudgetStatus | None = None
