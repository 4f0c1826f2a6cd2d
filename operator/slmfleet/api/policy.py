"""RouterPolicy: one virtual model name, routed across specialists with a cascade."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from .base import Condition, KubeModel, LabelSelector, SecretKeyRef, cel, list_map
from .learning import Calibration, LearningSpec, LearningStatus, ThresholdProposal
from .names import DnsLabel, Identifier, ModelName, SpecialistName
from .regex import Re2Pattern
from .rollout import Rollout
from .schemacheck import check_schema
from .specialist import Example, Keyword

Confidence = Field(ge=0.0, le=1.0)
#: Base URL of an external tier: http(s), a host (name, IPv4 or [IPv6]) with an optional
#: port, a path; no credentials in the URL (``user:pass@``), no query, no fragment.
BASE_URL_PATTERN = (
    r"^https?://([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?"
    r"(/[-A-Za-z0-9._~%!$&'()*+,;=:@/]*)?$"
)
#: A per-label threshold map: label -> confidence.
LabelThresholds = dict[
    Annotated[str, Field(min_length=1, max_length=63)], Annotated[float, Field(ge=0.0, le=1.0)]
]


class SpecialistSelection(KubeModel):
    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "(has(self.names) && size(self.names) > 0) || has(self.selector)",
                    "set names or selector",
                    ".names",
                )
            ]
        }
    }

    names: list[SpecialistName] = Field(default_factory=list, max_length=1000)
    """SLMSpecialists of this namespace, by name."""
    selector: LabelSelector | None = None
    """SLMSpecialists of this namespace, by label."""


class Rule(KubeModel):
    """An explicit route, tried before the classifier, in order."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "(has(self.keywords) && size(self.keywords) > 0) || has(self.regex)",
                    "a rule needs keywords or regex",
                    ".keywords",
                )
            ]
        }
    }

    name: Identifier
    """Rule name, shown in the decision headers."""
    keywords: list[Keyword] = Field(default_factory=list, max_length=256)
    """Matches when any keyword occurs as a whole word (case-insensitive)."""
    regex: Re2Pattern | None = None
    """Matches when this RE2 regular expression finds a match (linear-time matching: no
    lookaround, no backreferences)."""
    specialist: SpecialistName
    """Specialist (of this namespace) that receives matching requests."""


class SemanticRouting(KubeModel):
    enabled: bool = True
    """Route by similarity to each specialist's domain (description, keywords, examples)."""
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    """Below this routing confidence the request is out of domain and goes to fallback."""
    out_of_domain_examples: list[Example] = Field(default_factory=list, max_length=2000)
    """Requests that belong to none of the specialists (off-topic traffic seen in
    production): the classifier learns them as a class of their own, which lowers the
    confidence of look-alikes so they go to fallback."""


class CostAwareRouting(KubeModel):
    enabled: bool = False
    """Among specialists nearly as confident as the best, choose the cheapest."""
    tolerance: float = Field(default=0.05, ge=0.0, le=1.0)
    """How far below the best confidence a cheaper specialist may be."""


class SplitRouting(KubeModel):
    enabled: bool = False
    """Split a request that spans several domains ("my parcel arrived damaged and I need
    to change my password") into parts, each answered by the specialist it routes to,
    concurrently, the answers merged in order. Opt-in."""
    min_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Routing confidence a part needs (default: semantic.minConfidence): the request
    splits only when two or more parts reach it for different specialists."""
    max_parts: int = Field(default=4, ge=2, le=8)
    """Most parts one request is split into (the rest stays with the last part)."""


class RoutingSpec(KubeModel):
    rules: list[Rule] = Field(default_factory=list, max_length=256)
    """Explicit rules, first match wins."""
    semantic: SemanticRouting = Field(default_factory=SemanticRouting)
    """The learned classifier."""
    cost_aware: CostAwareRouting = Field(default_factory=CostAwareRouting)
    """Cost-aware choice among eligible specialists."""
    split: SplitRouting = Field(default_factory=SplitRouting)
    """Multi-domain query splitting (off by default)."""


class Validator(KubeModel):
    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.jsonSchema) != has(self.regex)",
                    "set exactly one of jsonSchema or regex",
                    ".regex",
                )
            ]
        }
    }

    name: Identifier
    """Validator name, reported as the escalation reason when it fails."""
    json_schema: Annotated[dict[str, Any] | None, AfterValidator(check_schema)] = Field(
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "maxProperties": 64},
    )
    """The answer must be JSON valid against this JSON Schema (Draft 2020-12; `$ref` only
    as a local JSON pointer, not recursive, expanding to at most 4,096 objects; patterns
    in RE2 syntax, at most 32 KiB)."""
    regex: Re2Pattern | None = None
    """The answer must fully match this RE2 regular expression."""


class Acceptance(KubeModel):
    """When a tier's answer is accepted; otherwise the next tier runs."""

    min_routing_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Routing confidence the request must have reached."""
    min_answer_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Answer confidence the model must report (when it reports one)."""
    label_thresholds: LabelThresholds = Field(default_factory=dict, max_length=256)
    """Per-label answer-confidence thresholds, e.g. {refund: 0.97, greeting: 0.8}."""
    validators: list[Validator] = Field(default_factory=list, max_length=16)
    """Deterministic checks the answer must pass."""


class ExternalEndpoint(KubeModel):
    base_url: str = Field(pattern=BASE_URL_PATTERN, max_length=2048)
    """Base URL of an OpenAI-compatible API, e.g. https://api.example.com/v1 (no
    credentials, query or fragment; the router's egress allow-list decides whether it
    may be reached)."""
    model: str = Field(min_length=1, max_length=253, pattern=r"^[^\s\x00-\x1f\x7f]+$")
    """Model name to request there."""
    api_key: SecretKeyRef | None = None
    """Secret (of this namespace) holding the API key, sent as a Bearer token."""
    input_per_million_usd: float = Field(default=0.0, ge=0)
    """Price per million input tokens, in USD."""
    output_per_million_usd: float = Field(default=0.0, ge=0)
    """Price per million output tokens, in USD."""


#: The holding message's default; ``{case_id}`` is replaced by the filed case's id.
HOLDING_MESSAGE = "Your request was sent to a human reviewer (case {case_id})."


class HumanReview(KubeModel):
    queue: Identifier = "default"
    """Review queue the case is filed to."""
    message: str = Field(default=HOLDING_MESSAGE, max_length=1024)
    """Answer returned to the caller while the case waits (mode hold, and wait when no
    reviewer answered in time); `{case_id}` is replaced by the case's id."""
    mode: Literal["hold", "async", "wait"] = "hold"
    """How the caller is answered once the case is filed (durably, before any answer):
    hold: 200 with the message; async: 202 with the case URL to poll (GET
    /v1/cases/{id}; a streamed request gets the message instead); wait: held up to
    waitSeconds for a reviewer's answer, then onTimeout."""
    wait_seconds: int = Field(default=30, ge=1, le=600)
    """With mode wait: how long the caller is held for a reviewer (at most the tier's
    timeoutMs, and the router's SLMFLEET_REVIEW_MAX_WAIT_S)."""
    on_timeout: Literal["hold", "async"] = "hold"
    """With mode wait: the answer when no reviewer resolved the case in time."""


class CascadeTier(KubeModel):
    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "[self.routed, has(self.specialist), has(self.external), has(self.human)]"
                    ".filter(x, x).size() == 1",
                    "set exactly one of routed, specialist, external or human",
                    ".routed",
                ),
                cel(
                    "!has(self.human) || !has(self.human.mode) || self.human.mode != 'wait' || "
                    "(has(self.human.waitSeconds) ? self.human.waitSeconds : 30) * 1000 <= "
                    "(has(self.timeoutMs) ? self.timeoutMs : 30000)",
                    "human.waitSeconds must fit in the tier's timeoutMs",
                    ".human.waitSeconds",
                ),
            ]
        }
    }

    name: DnsLabel
    """Tier name, shown in the decision headers."""
    routed: bool = False
    """This tier is the specialist chosen by routing."""
    specialist: SpecialistName | None = None
    """A fixed specialist of this namespace, usually a larger one."""
    external: ExternalEndpoint | None = None
    """An external OpenAI-compatible endpoint."""
    human: HumanReview | None = None
    """Human review: the last resort."""
    accept: Acceptance = Field(default_factory=Acceptance)
    """When this tier's answer is accepted."""
    timeout_ms: int = Field(default=30000, ge=1, le=600000)
    """Deadline of one call to this tier."""


class DecisionLogSpec(KubeModel):
    """What the decision log keeps of this policy's prompts and answers (the router's
    SLMFLEET_DECISION_CONTENT when the policy says nothing)."""

    content: Literal["off", "hashed", "full"] = "off"
    """off: neither is kept; hashed: a keyed SHA-256 and the length (repeats can be
    joined without keeping the text); full: the text, cut at maxChars."""
    max_chars: int = Field(default=4096, ge=0, le=1_000_000)
    """With content full, longer texts are cut to this many characters (and marked so)."""


class FallbackSpec(KubeModel):
    on_unknown_domain: DnsLabel | None = None
    """Tier that takes out-of-domain requests (default: the tier after the routed one)."""
    on_error: DnsLabel | None = None
    """Tier that takes requests whose tier failed or timed out (default: the next tier)."""


class CapacitySpec(KubeModel):
    """What the router does with a request whose specialist cannot take it now: one
    scaled to zero (see docs/autoscaling.md), or one whose cost cap binds while its
    replicas are full."""

    when_scaled_to_zero: Literal["wait", "cascade"] = "wait"
    """wait: hold the request while the autoscaler starts a replica, then serve it (at
    most maxWaitSeconds; then HTTP 503 with Retry-After); cascade: send it to the next
    cascade tier at once (its demand still wakes the specialist). A tier with no tier
    after it always waits."""
    max_wait_seconds: int = Field(default=30, ge=1, le=600)
    """Longest a request waits for a replica (also bounded by the tier's timeoutMs)."""
    when_cost_capped: Literal["queue", "cascade"] = "queue"
    """When the specialist's cost cap binds (its Scaling condition says CostCapped) and
    each of its replicas already has slo.targetInFlight requests in flight from this
    router: queue behind them, or cascade the overflow to the next tier (which may cost
    more per token: hence opt-in)."""


def _default_cascade() -> list[CascadeTier]:
    return [CascadeTier(name="routed", routed=True)]


class RouterPolicySpec(KubeModel):
    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "!has(self.fallback) || !has(self.fallback.onUnknownDomain) || "
                    "(has(self.cascade) && "
                    "self.cascade.exists(t, t.name == self.fallback.onUnknownDomain))",
                    "fallback.onUnknownDomain must name a cascade tier",
                    ".fallback.onUnknownDomain",
                ),
                cel(
                    "!has(self.fallback) || !has(self.fallback.onError) || "
                    "(has(self.cascade) && "
                    "self.cascade.exists(t, t.name == self.fallback.onError))",
                    "fallback.onError must name a cascade tier",
                    ".fallback.onError",
                ),
                cel(
                    "!has(self.calibration) || !has(self.calibration.tiers) || "
                    "self.calibration.tiers.all(k, has(self.cascade) && "
                    "self.cascade.exists(t, t.name == k))",
                    "calibration.tiers must name cascade tiers",
                    ".calibration.tiers",
                ),
            ]
        }
    }

    model_name: ModelName | None = None
    """Name clients pass as `model`; defaults to metadata.name. Unique across the fleet:
    the oldest policy keeps a contested name, later ones are Ready=False with
    ModelNameConflict. Never contains `/` (`namespace/name` addresses a specialist)."""
    specialists: SpecialistSelection
    """The specialists this policy routes across."""
    routing: RoutingSpec = Field(default_factory=RoutingSpec)
    """How a request picks its specialist."""
    cascade: list[CascadeTier] = Field(
        default_factory=_default_cascade,
        min_length=1,
        max_length=8,
        json_schema_extra=list_map("name"),
    )
    """Ordered tiers; a request escalates down the list until a tier's answer is accepted."""
    fallback: FallbackSpec | None = None
    """Where out-of-domain and failed requests go."""
    rollouts: list[Rollout] = Field(
        default_factory=list, max_length=16, json_schema_extra=list_map("specialist")
    )
    """Canary and shadow rollouts of candidate specialists, one per incumbent."""
    decision_log: DecisionLogSpec | None = None
    """What the decision log keeps of prompts and answers (default: the router's
    setting, off unless its operator says otherwise)."""
    capacity: CapacitySpec = Field(default_factory=CapacitySpec)
    """What happens to a request whose specialist is scaled to zero or at its cost cap."""
    calibration: Calibration | None = None
    """Calibrators the router applies to routing and answer confidences; thresholds are
    on the calibrated scale (proposed by slmfleet learn, see docs/learning.md)."""
    learning: LearningSpec | None = None
    """The operator's learning loop: proposes thresholds in status, never applies them."""


class ResolvedTarget(KubeModel):
    name: str
    """Specialist name."""
    endpoint: str | None = None
    """Its gRPC endpoint."""
    ready: bool = False
    """Whether it is Ready."""
    scaled_to_zero: bool | None = None
    """True while no replica runs by design (min 0, idle): a request starts one."""


class RouterPolicyStatus(KubeModel):
    observed_generation: int | None = None
    """The metadata.generation the operator last reconciled."""
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=list_map("type"))
    """Ready when every target resolves and is Ready."""
    model_name: str | None = None
    """The model name served for this policy."""
    resolved_targets: list[ResolvedTarget] = Field(default_factory=list)
    """Specialists the policy routes across."""
    threshold_proposals: list[ThresholdProposal] = Field(default_factory=list, max_length=256)
    """Thresholds learned from outcomes, proposed for review."""
    learning: LearningStatus | None = None
    """The last learning run: learned-example counts and replay metrics."""


class RouterPolicy(KubeModel):
    """A virtual model: routing, cascade and fallback across specialists."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "has(self.spec.modelName) || size(self.metadata.name) <= 128",
                    "a RouterPolicy whose metadata.name is longer than 128 characters needs "
                    "spec.modelName",
                )
            ]
        }
    }

    api_version: Literal["slmfleet.io/v1alpha1"] = "slmfleet.io/v1alpha1"
    kind: Literal["RouterPolicy"] = "RouterPolicy"
    spec: RouterPolicySpec
    status: RouterPolicyStatus | None = None
