"""RouterPolicy: one virtual model name, routed across specialists with a cascade."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .base import Condition, KubeModel, LabelSelector, SecretKeyRef, cel, list_map

Confidence = Field(ge=0.0, le=1.0)


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

    names: list[str] = Field(default_factory=list, max_length=1000)
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

    name: str = Field(min_length=1, max_length=63)
    """Rule name, shown in the decision headers."""
    keywords: list[str] = Field(default_factory=list, max_length=256)
    """Matches when any keyword occurs as a whole word (case-insensitive)."""
    regex: str | None = Field(default=None, max_length=1024)
    """Matches when this regular expression (Python syntax) finds a match."""
    specialist: str = Field(min_length=1, max_length=253)
    """Specialist that receives matching requests."""


class SemanticRouting(KubeModel):
    enabled: bool = True
    """Route by similarity to each specialist's domain (description, keywords, examples)."""
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    """Below this routing confidence the request is out of domain and goes to fallback."""
    out_of_domain_examples: list[str] = Field(default_factory=list, max_length=5000)
    """Requests that belong to none of the specialists (off-topic traffic seen in
    production): the classifier learns them as a class of their own, which lowers the
    confidence of look-alikes so they go to fallback."""


class CostAwareRouting(KubeModel):
    enabled: bool = False
    """Among specialists nearly as confident as the best, choose the cheapest."""
    tolerance: float = Field(default=0.05, ge=0.0, le=1.0)
    """How far below the best confidence a cheaper specialist may be."""


class RoutingSpec(KubeModel):
    rules: list[Rule] = Field(default_factory=list, max_length=256)
    """Explicit rules, first match wins."""
    semantic: SemanticRouting = Field(default_factory=SemanticRouting)
    """The learned classifier."""
    cost_aware: CostAwareRouting = Field(default_factory=CostAwareRouting)
    """Cost-aware choice among eligible specialists."""


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

    name: str = Field(min_length=1, max_length=63)
    """Validator name, reported as the escalation reason when it fails."""
    json_schema: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """The answer must be JSON valid against this JSON Schema."""
    regex: str | None = Field(default=None, max_length=1024)
    """The answer must fully match this regular expression."""


class Acceptance(KubeModel):
    """When a tier's answer is accepted; otherwise the next tier runs."""

    min_routing_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Routing confidence the request must have reached."""
    min_answer_confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Answer confidence the model must report (when it reports one)."""
    label_thresholds: dict[str, float] = Field(default_factory=dict)
    """Per-label answer-confidence thresholds, e.g. {refund: 0.97, greeting: 0.8}."""
    validators: list[Validator] = Field(default_factory=list, max_length=16)
    """Deterministic checks the answer must pass."""


class ExternalEndpoint(KubeModel):
    base_url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2048)
    """Base URL of an OpenAI-compatible API, e.g. https://api.example.com/v1."""
    model: str = Field(min_length=1, max_length=253)
    """Model name to request there."""
    api_key: SecretKeyRef | None = None
    """Secret key holding the API key."""
    input_per_million_usd: float = Field(default=0.0, ge=0)
    """Price per million input tokens, in USD."""
    output_per_million_usd: float = Field(default=0.0, ge=0)
    """Price per million output tokens, in USD."""


class HumanReview(KubeModel):
    queue: str = Field(default="default", min_length=1, max_length=63)
    """Review queue the case is filed to."""
    message: str = Field(default="Your request was sent to a human reviewer.", max_length=1024)
    """Answer returned to the caller meanwhile."""


class CascadeTier(KubeModel):
    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "[self.routed, has(self.specialist), has(self.external), has(self.human)]"
                    ".filter(x, x).size() == 1",
                    "set exactly one of routed, specialist, external or human",
                    ".routed",
                )
            ]
        }
    }

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Tier name, shown in the decision headers."""
    routed: bool = False
    """This tier is the specialist chosen by routing."""
    specialist: str | None = Field(default=None, max_length=253)
    """A fixed specialist, usually a larger one."""
    external: ExternalEndpoint | None = None
    """An external OpenAI-compatible endpoint."""
    human: HumanReview | None = None
    """Human review: the last resort."""
    accept: Acceptance = Field(default_factory=Acceptance)
    """When this tier's answer is accepted."""
    timeout_ms: int = Field(default=30000, ge=1, le=600000)
    """Deadline of one call to this tier."""


class FallbackSpec(KubeModel):
    on_unknown_domain: str | None = Field(default=None, max_length=63)
    """Tier that takes out-of-domain requests (default: the tier after the routed one)."""
    on_error: str | None = Field(default=None, max_length=63)
    """Tier that takes requests whose tier failed or timed out (default: the next tier)."""


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
            ]
        }
    }

    model_name: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$"
    )
    """Name clients pass as `model`; defaults to metadata.name."""
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


class ResolvedTarget(KubeModel):
    name: str
    """Specialist name."""
    endpoint: str | None = None
    """Its gRPC endpoint."""
    ready: bool = False
    """Whether it is Ready."""


class ThresholdProposal(KubeModel):
    """A threshold the observed outcomes support, with its evidence (``slmfleet learn``)."""

    tier: str | None = Field(default=None, max_length=63)
    """Cascade tier (absent for the routing threshold)."""
    label: str | None = Field(default=None, max_length=253)
    """Label, for a per-label threshold."""
    path: str | None = Field(default=None, max_length=512)
    """The spec field the proposal sets, e.g. spec.routing.semantic.minConfidence."""
    current: float | None = None
    """Threshold in the spec."""
    proposed: float
    """Threshold the observed outcomes suggest."""
    samples: int = 0
    """Outcomes the proposal is based on."""
    target: str | None = Field(default=None, max_length=256)
    """The stated risk it meets, e.g. error rate among accepted <= 3%."""
    bound: float | None = None
    """Clopper-Pearson bound at the proposed threshold: upper for an error rate, lower
    for an out-of-domain recall."""
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    """Probability with which the target holds."""
    escalation_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    """Fraction of the tier's traffic it escalates."""
    cost_per_thousand_usd: float | None = Field(default=None, ge=0.0)
    """Expected escalation cost per 1,000 requests."""
    evidence: str | None = Field(default=None, max_length=512)
    """Where the evidence is (the revision's PNG and report)."""


class ReplaySummary(KubeModel):
    """A configuration replayed on held-out logged traffic."""

    threshold: float
    """Routing threshold replayed."""
    requests: int = 0
    """Held-out requests replayed."""
    escalation_rate: float = 0.0
    """Fraction escalated by routing."""
    in_scope_accuracy: float = 0.0
    """In-domain requests routed right and not escalated."""
    out_of_domain_recall: float | None = None
    """Out-of-domain requests escalated."""
    cost_per_thousand_usd: float | None = None
    """Observed cost per 1,000 requests at the replayed routes."""


class LearningStatus(KubeModel):
    """What the last learning run found and proposes (applied only by a human or GitOps)."""

    proposed_at: str | None = Field(default=None, max_length=64)
    """RFC 3339 time of the run."""
    outcomes: int = 0
    """Labelled outcomes read."""
    learned_examples: int = 0
    """New domain examples proposed (over all specialists)."""
    learned_out_of_domain_examples: int = 0
    """New out-of-domain examples proposed."""
    current: ReplaySummary | None = None
    """The policy as it is, replayed."""
    proposed: ReplaySummary | None = None
    """The revision, replayed on the same requests."""
    refusals: list[str] = Field(default_factory=list, max_length=64)
    """Targets no threshold could be proposed for yet, and why."""


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

    api_version: Literal["slmfleet.io/v1alpha1"] = "slmfleet.io/v1alpha1"
    kind: Literal["RouterPolicy"] = "RouterPolicy"
    spec: RouterPolicySpec
    status: RouterPolicyStatus | None = None
