"""What users state instead of thresholds: the risk they accept, per label and overall.

A risk file (YAML, camelCase like the API)::

    confidence: 0.95            # the probability that each target holds
    outOfDomain:
      minRecall: 0.8            # escalate >= 80% of out-of-domain requests
    tiers:
      routed:
        default: {maxErrorRate: 0.10}
        labels:
          refund: {maxErrorRate: 0.03}     # high risk: 3% errors among accepted
          greeting: {maxErrorRate: 0.20}   # low risk
    escalationCostUsd: {routed: 0.002}     # optional; else estimated from outcomes
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, ValidationError

from ..api.base import KubeModel


class LabelRisk(KubeModel):
    max_error_rate: float = Field(gt=0.0, lt=1.0)
    """Largest acceptable fraction of wrong answers among the auto-accepted ones."""


class OutOfDomainRisk(KubeModel):
    min_recall: float = Field(gt=0.0, lt=1.0)
    """Smallest acceptable fraction of out-of-domain requests that must escalate."""


class TierRisk(KubeModel):
    default: LabelRisk | None = None
    """Applies to every label of the tier not listed under ``labels``."""
    labels: dict[str, LabelRisk] = Field(default_factory=dict)


class RiskSpec(KubeModel):
    confidence: float = Field(default=0.95, ge=0.5, lt=1.0)
    """Probability with which each stated target holds (1 - the test's level)."""
    out_of_domain: OutOfDomainRisk | None = None
    tiers: dict[str, TierRisk] = Field(default_factory=dict)
    escalation_cost_usd: dict[str, float] = Field(default_factory=dict)
    """Cost of escalating one request away from a tier (key ``routing``: from routing)."""

    def label_risk(self, tier: str, label: str) -> LabelRisk | None:
        t = self.tiers.get(tier)
        if t is None:
            return None
        return t.labels.get(label.lower()) or t.labels.get(label) or t.default


class RiskError(ValueError):
    pass


def load_risk(path: str | Path) -> RiskSpec:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise RiskError(f"{path}: not YAML: {exc}") from exc
    try:
        return RiskSpec.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        field = ".".join(str(p) for p in e["loc"]) or "(file)"
        raise RiskError(f"{path}: field {field}: {e['msg']}") from exc
