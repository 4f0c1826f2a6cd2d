"""The router configuration: what the operator renders and the router serves.

The router protocol has its own types: the CRD classes describe what users write in
one API version, these describe what the router is told, already resolved (names
became ``namespace/name`` ids, Secret references carry their namespace). A new CRD
version can change its classes without changing what a running router accepts, and
the router never sees a field it does not serve.

The user-supplied parts keep their guards here too (RE2 patterns, bounded JSON
Schemas, names), so a configuration the operator did not write, or one written by an
older operator, is refused object by object (see ``fragments``), never half-served.
"""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from .base import KubeModel
from .budget import (
    CALENDAR_UNITS,
    WINDOW_PATTERN,
    FailMode,
    LadderAction,
    WindowAction,
    check_window,
)
from .learning import Calibration
from .names import ConfigKey, DnsLabel, DnsSubdomain, Identifier, ModelName, ObjectId
from .policy import BASE_URL_PATTERN, HOLDING_MESSAGE, LabelThresholds
from .regex import Re2Pattern
from .schemacheck import check_schema
from .specialist import Backend

CONFIG_KEY = "router.json"


class CostConfig(KubeModel):
    """What the router charges a call with (the Budgets' spend). A replica's hourly
    price (the CRD's ``cost.replicaHourUsd``) is the autoscaler's, not sent here."""

    input_per_million_usd: float = Field(default=0.0, ge=0)
    """Price per million input tokens, in USD."""
    output_per_million_usd: float = Field(default=0.0, ge=0)
    """Price per million output tokens, in USD."""

    @model_validator(mode="before")
    @classmethod
    def _drop_replica_price(cls, data: Any) -> Any:
        """Fragments an older operator wrote (until it renders them again) carry
        ``replicaHourUsd``: accepted and dropped, so an upgrade loses no specialist."""
        if isinstance(data, dict) and "replicaHourUsd" in data:
            data = {k: v for k, v in data.items() if k != "replicaHourUsd"}
        return data


class ReasoningConfig(KubeModel):
    start_marker: str = Field(default="<think>", min_length=1, max_length=64)
    """Text that opens the reasoning section."""
    end_marker: str = Field(default="</think>", min_length=1, max_length=64)
    """Text that closes the reasoning section."""


class DomainConfig(KubeModel):
    description: str = ""
    """What the specialist handles."""
    keywords: list[str] = Field(default_factory=list)
    """Words that suggest the domain."""
    examples: list[str] = Field(default_factory=list)
    """Example requests, inline and from the ConfigMap, merged."""
    labels: list[str] = Field(default_factory=list)
    """Output labels the model answers with."""


class SpecialistConfig(KubeModel):
    id: ObjectId
    """namespace/name of the SLMSpecialist."""
    endpoint: str = Field(min_length=1, max_length=512)
    """Triton gRPC endpoint, host:port. In a cluster, the specialist's headless Service
    (``<service>.<namespace>.svc:<port>``): the router balances over the Pods its
    EndpointSlices list."""
    replicas: list[str] = Field(default_factory=list, max_length=1000)
    """Triton gRPC endpoints (host:port) of the specialist's replicas when they are known
    without discovery (the local fleet lists its own servers); requests are balanced over
    them. Empty: the Pods behind ``endpoint``."""
    triton_model: str = Field(min_length=1, max_length=253)
    """Model name inside Triton."""
    lora_name: str | None = Field(default=None, min_length=1, max_length=253)
    """A LoRA adapter on ``triton_model`` (a vLLM base): sent as ``lora_name`` in the
    request's ``sampling_parameters``, as Triton's vLLM backend reads it."""
    backend: Backend
    """Triton backend: selects the codec (request and response tensors, see
    ``router.triton.codecs``)."""
    artifact: str | None = Field(default=None, max_length=2048)
    """The model artifact's URI, for backends whose requests the router prepares from
    it: an onnxruntime classifier's tokenizer.json (and config.json labels)."""
    ready: bool = False
    """Whether the specialist reported Ready; unready targets are skipped."""
    scaled_to_zero: bool = False
    """No replica runs by design (min 0 and idle, or starting from zero): not Ready, yet
    routable; a request for it waits for a replica or cascades, as its policy's
    ``capacity`` says. Never sent to zero Pods."""
    cost_capped: bool = False
    """The autoscaler's cost cap binds: no more replicas will come for the overflow."""
    target_in_flight: int = Field(default=8, ge=1, le=10000)
    """Requests one replica takes at once (slo.targetInFlight): full replicas at the cost
    cap overflow to the next tier when the policy allows."""
    domain: DomainConfig = Field(default_factory=DomainConfig)
    """The specialist's territory."""
    cost: CostConfig = Field(default_factory=CostConfig)
    """Prices for cost-aware routing and spend."""
    reasoning: ReasoningConfig | None = None
    """Reasoning markers, when the model thinks before answering."""
    context_length: int = 4096
    """Context length in tokens."""


class RuleConfig(KubeModel):
    name: Identifier
    """Rule name, shown in the decision headers."""
    keywords: list[str] = Field(default_factory=list)
    """Whole-word, case-insensitive keywords."""
    regex: Re2Pattern | None = None
    """An RE2 pattern searched in the request text."""
    specialist: ObjectId
    """Specialist id that receives matching requests."""


class SemanticConfig(KubeModel):
    enabled: bool = True
    """Route by similarity to each specialist's domain."""
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    """Below this routing confidence the request is out of domain."""
    out_of_domain_examples: list[str] = Field(default_factory=list)
    """Off-topic requests the classifier learns as a class of their own."""


class CostAwareConfig(KubeModel):
    enabled: bool = False
    """Among specialists nearly as confident as the best, choose the cheapest."""
    tolerance: float = Field(default=0.05, ge=0.0, le=1.0)
    """How far below the best confidence a cheaper specialist may be."""


class SplitConfig(KubeModel):
    enabled: bool = False
    """Split requests that span several domains into parts (see router.splitting)."""
    min_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Routing confidence each part needs (None: semantic.min_confidence)."""
    max_parts: int = Field(default=4, ge=2, le=8)
    """Most parts per request."""


class RoutingConfig(KubeModel):
    rules: list[RuleConfig] = Field(default_factory=list)
    """Explicit rules, first match wins."""
    semantic: SemanticConfig = Field(default_factory=SemanticConfig)
    """The learned classifier."""
    cost_aware: CostAwareConfig = Field(default_factory=CostAwareConfig)
    """Cost-aware choice among eligible specialists."""
    split: SplitConfig = Field(default_factory=SplitConfig)
    """Multi-domain query splitting."""


class ValidatorConfig(KubeModel):
    name: Identifier
    """Validator name, reported as the escalation reason when it fails."""
    json_schema: Annotated[dict[str, Any] | None, AfterValidator(check_schema)] = None
    """The answer must be JSON valid against this (bounded, local-only) JSON Schema."""
    regex: Re2Pattern | None = None
    """The answer must fully match this RE2 pattern."""


class AcceptanceConfig(KubeModel):
    min_routing_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Routing confidence the request must have reached."""
    min_answer_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Answer confidence the model must report (when it reports one)."""
    label_thresholds: LabelThresholds = Field(default_factory=dict)
    """Per-label answer-confidence thresholds."""
    validators: list[ValidatorConfig] = Field(default_factory=list)
    """Deterministic checks the answer must pass."""


class SecretRefConfig(KubeModel):
    """A Secret key, with the namespace it must be read from (the policy's own)."""

    namespace: DnsLabel
    """Namespace of the Secret: always the namespace of the object holding the reference."""
    name: DnsSubdomain
    """Name of the Secret."""
    key: ConfigKey
    """Key inside the Secret."""


class ExternalConfig(KubeModel):
    base_url: str = Field(pattern=BASE_URL_PATTERN, max_length=2048)
    """Base URL of an OpenAI-compatible API."""
    model: str = Field(min_length=1, max_length=253)
    """Model name to request there."""
    api_key: SecretRefConfig | None = None
    """Where the API key is read from."""
    input_per_million_usd: float = Field(default=0.0, ge=0)
    """Price per million input tokens, in USD."""
    output_per_million_usd: float = Field(default=0.0, ge=0)
    """Price per million output tokens, in USD."""


class HumanConfig(KubeModel):
    queue: Identifier = "default"
    """Review queue the case is filed to."""
    message: str = Field(default=HOLDING_MESSAGE, max_length=1024)
    """Answer returned while the case waits; ``{case_id}`` is replaced by its id."""
    mode: Literal["hold", "async", "wait"] = "hold"
    """hold: 200 with the message; async: 202 with the case URL; wait: up to waitSeconds
    for a reviewer's answer, then onTimeout."""
    wait_seconds: int = Field(default=30, ge=1, le=600)
    """With mode wait: how long the caller is held for a reviewer."""
    on_timeout: Literal["hold", "async"] = "hold"
    """With mode wait: the answer when no reviewer resolved the case in time."""


class DecisionLogConfig(KubeModel):
    content: Literal["off", "hashed", "full"] = "off"
    """What the decision log keeps of prompts and answers: off, hashed or full."""
    max_chars: int = Field(default=4096, ge=0, le=1_000_000)
    """With content full, longer texts are cut to this many characters."""


class TierConfig(KubeModel):
    name: DnsLabel
    """Tier name, shown in the decision headers."""
    routed: bool = False
    """This tier is the specialist chosen by routing."""
    specialist: ObjectId | None = None
    """A fixed specialist id."""
    external: ExternalConfig | None = None
    """An external OpenAI-compatible endpoint."""
    human: HumanConfig | None = None
    """Human review."""
    accept: AcceptanceConfig = Field(default_factory=AcceptanceConfig)
    """When this tier's answer is accepted."""
    timeout_ms: int = Field(default=30000, ge=1, le=600000)
    """Deadline of one call to this tier."""

    @model_validator(mode="after")
    def _wait_fits(self) -> TierConfig:
        h = self.human
        if h is not None and h.mode == "wait" and h.wait_seconds * 1000 > self.timeout_ms:
            raise ValueError("human.waitSeconds must fit in the tier's timeoutMs")
        return self


class FallbackConfig(KubeModel):
    on_unknown_domain: DnsLabel | None = None
    """Tier that takes out-of-domain requests."""
    on_error: DnsLabel | None = None
    """Tier that takes requests whose tier failed or timed out."""


class RollbackConfig(KubeModel):
    enabled: bool = True
    """Roll a canary back automatically."""
    margin: float = Field(default=0.05, ge=0.0, le=1.0)
    """How much higher the candidate's bad-outcome rate may be."""
    min_samples: int = Field(default=50, ge=10, le=1_000_000)
    """Requests each arm needs before the test."""
    confidence: float = Field(default=0.95, ge=0.5, le=0.9999)
    """Confidence of the one-sided test."""


class RolloutConfig(KubeModel):
    specialist: ObjectId
    """Incumbent specialist id."""
    candidate: ObjectId
    """Candidate specialist id."""
    mode: Literal["canary", "shadow"] = "canary"
    """canary: the candidate answers a share; shadow: it gets a copy of a share."""
    percent: float = Field(ge=0.0, le=100.0)
    """Share of the incumbent's requests, in percent."""
    rollback: RollbackConfig = Field(default_factory=RollbackConfig)
    """Automatic rollback of a canary."""


class CapacityConfig(KubeModel):
    when_scaled_to_zero: Literal["wait", "cascade"] = "wait"
    """wait for a replica (at most max_wait_seconds) or cascade to the next tier."""
    max_wait_seconds: int = Field(default=30, ge=1, le=600)
    """Longest a request waits for a replica."""
    when_cost_capped: Literal["queue", "cascade"] = "queue"
    """queue at a cost-capped specialist whose replicas are full, or cascade."""


class PolicyConfig(KubeModel):
    model_name: ModelName
    """Name clients pass as `model`."""
    id: ObjectId
    """namespace/name of the RouterPolicy."""
    specialists: list[ObjectId]
    """Specialist ids routed across (resolved; may include unready ones)."""
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    """Rules (specialists as ids), semantic and cost-aware routing."""
    cascade: list[TierConfig] = Field(min_length=1)
    """Tiers, specialist tiers as ids."""
    fallback: FallbackConfig | None = None
    """Out-of-domain and error fallbacks."""
    capacity: CapacityConfig = Field(default_factory=CapacityConfig)
    """What happens to a request whose specialist is scaled to zero or at its cost cap."""
    budgets: list[ObjectId] = Field(default_factory=list)
    """Ids of the Budgets that apply."""
    rollouts: list[RolloutConfig] = Field(default_factory=list)
    """Canary and shadow rollouts (specialists as ids), one per incumbent."""
    decision_log: DecisionLogConfig | None = None
    """What the decision log keeps of prompts and answers (None: the router's default)."""
    calibration: Calibration | None = None
    """Calibrators of routing and answer confidences (None: raw confidences)."""


class PerRequestConfig(KubeModel):
    max_reasoning_tokens: int | None = Field(default=None, ge=0, le=1_000_000)
    """Reasoning (trace) tokens before the model's thinking is cut short."""
    max_output_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    """Output tokens per request, reasoning included."""
    max_latency_ms: int | None = Field(default=None, ge=1, le=3_600_000)
    """Wall-clock deadline per request."""
    answer_tokens: int = Field(default=64, ge=1, le=4096)
    """Answer budget of the short second generation after a cut."""


class SpendWindowConfig(KubeModel):
    """One spend window, as the ledger enforces it (see ``slmfleet.budget.windows``)."""

    window: Annotated[str, AfterValidator(check_window)] = Field(
        pattern=WINDOW_PATTERN, max_length=8
    )
    """Rolling (15m, 1h, 7d; at most a year) or calendar-aligned (hour, day, week, month)."""
    time_zone: str | None = Field(default=None, max_length=64)
    """IANA zone of a calendar window (UTC when unset)."""
    limit_usd: float | None = Field(default=None, gt=0, le=1e6)
    """USD allowed within the window."""
    limit_tokens: int | None = Field(default=None, ge=1, le=10**15)
    """Tokens allowed within the window (input plus output)."""
    action: WindowAction = "alert"
    """What happens at 100% of this window: degrade, reject or alert."""

    @model_validator(mode="after")
    def _coherent(self) -> SpendWindowConfig:
        if self.limit_usd is None and self.limit_tokens is None:
            raise ValueError(f"window {self.window}: needs limitUsd, limitTokens or both")
        if self.time_zone is not None:
            if self.window not in CALENDAR_UNITS:
                raise ValueError(f"window {self.window}: timeZone is for calendar windows")
            try:
                zoneinfo.ZoneInfo(self.time_zone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {self.time_zone!r}") from exc
        return self


class LadderStepConfig(KubeModel):
    at_percent: int = Field(ge=1, le=100)
    """Percent of the fullest window's limit from which the step applies."""
    action: LadderAction
    """alert, halveReasoning, degrade or reject."""


def _ladder_in_order(steps: list[LadderStepConfig]) -> list[LadderStepConfig]:
    percents = [s.at_percent for s in steps]
    if percents != sorted(set(percents)):
        raise ValueError("ladder steps must be listed by strictly increasing atPercent")
    return steps


class BudgetConfig(KubeModel):
    id: str
    """namespace/name of the Budget."""
    per_request: PerRequestConfig | None = None
    """Caps on each request."""
    spend: list[SpendWindowConfig] = Field(default_factory=list, max_length=8)
    """Spend windows (one per ``window``)."""
    ladder: Annotated[list[LadderStepConfig], AfterValidator(_ladder_in_order)] = Field(
        default_factory=list, max_length=4
    )
    """Steps taken as spend grows, by percent of the fullest window's limit."""
    fail_mode: FailMode = "failOpen"
    """What a request meets while the shared ledger is unreachable."""
    policies: list[str] = Field(default_factory=list)
    """Model names of the policies it covers: for status and display only; the router
    attaches a Budget to a policy by the policy's own ``budgets`` ids."""
    specialists: list[str] = Field(default_factory=list)
    """Ids of the specialists it covers."""

    @model_validator(mode="after")
    def _unique_windows(self) -> BudgetConfig:
        windows = [w.window for w in self.spend]
        if len(windows) != len(set(windows)):
            raise ValueError(f"budget {self.id}: a window is listed twice: {windows}")
        return self


class RouterConfig(KubeModel):
    """Everything the router serves, rendered by the operator."""

    version: Literal[1] = 1
    policies: list[PolicyConfig] = Field(default_factory=list)
    specialists: list[SpecialistConfig] = Field(default_factory=list)
    budgets: list[BudgetConfig] = Field(default_factory=list)

    def specialist(self, sid: str) -> SpecialistConfig | None:
        return next((s for s in self.specialists if s.id == sid), None)
