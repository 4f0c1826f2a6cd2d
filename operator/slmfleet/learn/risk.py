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

The models live in ``api.learning`` (a RouterPolicy's ``spec.learning.risk`` is the same
object).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from ..api.learning import LabelRisk, OutOfDomainRisk, RiskSpec, TierRisk

__all__ = ["LabelRisk", "OutOfDomainRisk", "RiskError", "RiskSpec", "TierRisk", "load_risk"]


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
