"""The learning loop's API: calibrators the router applies, and the risk users state.

``RouterPolicy.spec.calibration`` holds fitted calibrators (``slmfleet learn`` proposes
them in its revision; a person commits or ``--apply`` s them). The router maps every
routing confidence through ``routing`` and every answer confidence of a tier through
the tier's calibrator for the answer's label (else the tier's ``default``), so
``x-slmfleet-confidence`` and answer confidences are calibrated probabilities and every
threshold of the policy is compared on that calibrated scale.

``RouterPolicy.spec.learning`` turns the operator's learning loop on for the policy
(off by default): the risk it may propose thresholds for and how often it runs. The
operator only ever *proposes* (``status.thresholdProposals``, ``status.learning``: the
status models at the end of this module).
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import Field, model_serializer, model_validator

from .base import KubeModel, cel

LabelKey = Annotated[str, Field(min_length=1, max_length=63)]
TierKey = Annotated[str, Field(min_length=1, max_length=63)]


class CalibratorConfig(KubeModel):
    """A fitted calibrator: a monotone map from a raw confidence to a probability
    (``slmfleet.learn.calibrator.apply``)."""

    model_config = KubeModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                cel(
                    "self.method != 'temperature' || has(self.temperature)",
                    "method temperature needs temperature",
                    ".temperature",
                ),
                cel(
                    "self.method != 'platt' || (has(self.slope) && has(self.intercept))",
                    "method platt needs slope and intercept",
                    ".slope",
                ),
                cel(
                    "self.method != 'isotonic' || (has(self.knotsX) && has(self.knotsY) && "
                    "size(self.knotsX) > 0 && size(self.knotsX) == size(self.knotsY))",
                    "method isotonic needs knotsX and knotsY of the same length",
                    ".knotsX",
                ),
                cel(
                    "!has(self.knotsX) || self.knotsX.isSorted()",
                    "knotsX must be ascending",
                    ".knotsX",
                ),
                cel(
                    "!has(self.knotsY) || self.knotsY.isSorted()",
                    "knotsY must be non-decreasing",
                    ".knotsY",
                ),
            ]
        }
    }

    method: Literal["identity", "temperature", "platt", "isotonic"] = "identity"
    """identity, temperature (sigmoid(logit(p)/T)), platt (sigmoid(a logit(p) + b)) or
    isotonic (piecewise-linear through knots)."""
    temperature: float | None = Field(default=None, gt=0.0, le=1000.0)
    """Temperature: T > 1 softens, T < 1 sharpens."""
    slope: float | None = Field(default=None, ge=0.0, le=1000.0)
    """Platt slope: non-negative, so the map never reverses the order of confidences."""
    intercept: float | None = Field(default=None, ge=-1000.0, le=1000.0)
    """Platt intercept."""
    knots_x: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=list, max_length=256
    )
    """Isotonic: raw confidences, ascending."""
    knots_y: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=list, max_length=256
    )
    """Isotonic: calibrated probabilities at knotsX, non-decreasing."""
    samples: int = Field(default=0, ge=0)
    """Outcomes it was fitted on."""

    @model_serializer(mode="wrap")
    def _without_empty_knots(self, handler: Any) -> Any:
        out = handler(self)
        for key in ("knotsX", "knotsY", "knots_x", "knots_y"):
            if isinstance(out, dict) and out.get(key) == []:
                del out[key]
        return out

    @model_validator(mode="after")
    def _complete(self) -> CalibratorConfig:
        if self.method == "temperature" and self.temperature is None:
            raise ValueError("method temperature needs temperature")
        if self.method == "platt" and (self.slope is None or self.intercept is None):
            raise ValueError("method platt needs slope and intercept")
        if self.method == "isotonic":
            xs, ys = self.knots_x, self.knots_y
            if not xs or len(xs) != len(ys):
                raise ValueError("method isotonic needs knotsX and knotsY of the same length")
            if any(b < a for a, b in itertools.pairwise(xs)):
                raise ValueError("knotsX must be ascending")
            if any(b < a for a, b in itertools.pairwise(ys)):
                raise ValueError("knotsY must be non-decreasing")
        return self


class TierCalibration(KubeModel):
    default: CalibratorConfig | None = None
    """Calibrates answers of a label not listed under labels."""
    labels: dict[LabelKey, CalibratorConfig] = Field(default_factory=dict, max_length=64)
    """Per answer label (lower case, as labelThresholds)."""


class Calibration(KubeModel):
    routing: CalibratorConfig | None = None
    """Calibrates the classifier's routing confidences."""
    tiers: dict[TierKey, TierCalibration] = Field(default_factory=dict, max_length=8)
    """Per cascade tier name: calibrates its answer confidences."""


class LabelRisk(KubeModel):
    max_error_rate: float = Field(gt=0.0, lt=1.0)
    """Largest acceptable fraction of wrong answers among the auto-accepted ones."""


class OutOfDomainRisk(KubeModel):
    min_recall: float = Field(gt=0.0, lt=1.0)
    """Smallest acceptable fraction of out-of-domain requests that must escalate."""


class TierRisk(KubeModel):
    default: LabelRisk | None = None
    """Applies to every label of the tier not listed under labels."""
    labels: dict[LabelKey, LabelRisk] = Field(default_factory=dict, max_length=256)
    """Per answer label."""


class RiskSpec(KubeModel):
    """The risk a policy accepts, from which thresholds are recommended (docs/learning.md)."""

    confidence: float = Field(default=0.95, ge=0.5, lt=1.0)
    """Probability with which each stated target holds (1 - the test's level)."""
    out_of_domain: OutOfDomainRisk | None = None
    """Out-of-domain escalation target (proposes spec.routing.semantic.minConfidence)."""
    tiers: dict[TierKey, TierRisk] = Field(default_factory=dict, max_length=8)
    """Per cascade tier: error-rate targets (propose accept.labelThresholds)."""
    escalation_cost_usd: dict[TierKey, Annotated[float, Field(ge=0.0, le=1e6)]] = Field(
        default_factory=dict, max_length=9
    )
    """Cost of escalating one request away from a tier (key routing: from routing)."""

    def label_risk(self, tier: str, label: str) -> LabelRisk | None:
        t = self.tiers.get(tier)
        if t is None:
            return None
        return t.labels.get(label.lower()) or t.labels.get(label) or t.default


class LearningSpec(KubeModel):
    """The operator's learning loop for this policy (docs/learning.md)."""

    enabled: bool = False
    """Run the loop: read the decision store, write status.thresholdProposals and
    status.learning. Never changes the spec."""
    interval_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    """Time between runs for this policy."""
    min_outcomes: int = Field(default=50, ge=10, le=1_000_000)
    """Labelled outcomes needed before a run proposes anything."""
    risk: RiskSpec = Field(default_factory=RiskSpec)
    """The risk the proposals must respect."""


# -- what the learning loop writes: RouterPolicy.status ---------------------------------


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
    raw: float | None = None
    """The proposed threshold on the raw confidence scale, when it is proposed on the
    scale of a proposed calibration (status.learning.calibration)."""


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
    calibration: Calibration | None = None
    """The spec.calibration proposed with the thresholds: they are on its scale, so they
    are applied together (slmfleet learn writes both into the revision)."""
