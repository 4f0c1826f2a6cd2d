"""The policy's calibrators on the request path, pure (``spec.calibration``).

Routing: every classifier score goes through the routing calibrator (monotone, so the
order of specialists is kept), so the route's confidence, ``x-slmfleet-confidence``,
``semantic.minConfidence``, ``split.minConfidence``, ``minRoutingConfidence`` and the
cost-aware tolerance are all on the calibrated scale. Answers: a tier's answer
confidence goes through the tier's calibrator for the answer's label (else its
default) before acceptance, so ``minAnswerConfidence`` and ``labelThresholds`` are on
the calibrated scale too. Without a calibrator the raw value passes unchanged. The raw
values are kept in the decision log (``route.raw_confidence``,
``raw_answer_confidence``): the learning loop fits the next calibrator on them.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..api.learning import Calibration
from ..learn.calibrator import apply, calibrate_answer
from .acceptance import label_of


def calibrated_scores(
    cal: Calibration | None, scores: Mapping[str, float] | None
) -> Mapping[str, float] | None:
    """The classifier's scores on the calibrated scale (unchanged without a calibrator)."""
    if scores is None or cal is None or cal.routing is None:
        return scores
    c = cal.routing
    return {sid: apply(c, s) for sid, s in scores.items()}


def answer_confidence(
    cal: Calibration | None, tier: str, answer: str, raw: float | None
) -> float | None:
    """A tier's answer confidence on the calibrated scale (the label read only when the
    tier has a calibrator)."""
    if raw is None or cal is None or tier not in cal.tiers:
        return raw
    return calibrate_answer(cal, tier, label_of(answer) or None, raw)
