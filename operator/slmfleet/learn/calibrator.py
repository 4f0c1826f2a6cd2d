"""A fitted calibrator in the form the router reads, and the pure function applying it.

The router imports only this module (the API models and the standard library): mapping a raw
confidence to a calibrated probability is a few float operations on the request path.
``method``:

* ``identity`` - the raw confidence is already as calibrated as anything fitted;
* ``temperature`` - ``sigmoid(logit(p) / temperature)``: one parameter, keeps the
  order and the 0.5 point, sharpens (T < 1) or softens (T > 1);
* ``platt`` - ``sigmoid(slope * logit(p) + intercept)``: also moves the 0.5 point;
* ``isotonic`` - a non-decreasing piecewise-linear map through ``knots``
  (``x`` ascending, ``y`` non-decreasing), flat beyond the ends.

All are monotone in ``p``, so a threshold on the raw scale and its image on the
calibrated scale accept exactly the same requests (``threshold_on_raw`` maps back).
"""

from __future__ import annotations

import bisect
import math

from ..api.learning import Calibration, CalibratorConfig

__all__ = ["EPS", "CalibratorConfig", "apply", "calibrate_answer", "logit", "sigmoid"]

EPS = 1e-6


def logit(p: float) -> float:
    p = min(max(p, EPS), 1.0 - EPS)
    return math.log(p / (1.0 - p))


def sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def apply(cfg: CalibratorConfig, p: float) -> float:
    """The calibrated probability of a raw confidence ``p`` (clamped to [0, 1] first)."""
    p = min(max(float(p), 0.0), 1.0)
    if cfg.method == "identity":
        return p
    if cfg.method == "temperature":
        assert cfg.temperature is not None
        return sigmoid(logit(p) / cfg.temperature)
    if cfg.method == "platt":
        assert cfg.slope is not None and cfg.intercept is not None
        return sigmoid(cfg.slope * logit(p) + cfg.intercept)
    xs, ys = cfg.knots_x, cfg.knots_y
    if p <= xs[0]:
        return ys[0]
    if p >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, p)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 if x1 == x0 else y0 + (y1 - y0) * (p - x0) / (x1 - x0)


def threshold_on_raw(cfg: CalibratorConfig, calibrated: float) -> float:
    """The smallest raw confidence whose calibrated value is >= ``calibrated`` (found by
    bisection, since every method is monotone); 1.0 when none reaches it."""
    if apply(cfg, 1.0) < calibrated:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if apply(cfg, mid) >= calibrated:
            hi = mid
        else:
            lo = mid
    return hi


def calibrate_answer(
    cal: Calibration | None, tier: str, label: str | None, p: float | None
) -> float | None:
    """An answer confidence of ``tier`` through the tier's calibrator for ``label`` (else
    its default); unchanged when the policy has none, None when the tier reported none."""
    if p is None or cal is None:
        return p
    t = cal.tiers.get(tier)
    if t is None:
        return p
    c = (t.labels.get(label.lower()) if label else None) or t.default
    return p if c is None else apply(c, p)
