"""A fitted calibrator in the form the router reads, and the pure function applying it.

The router imports only this module (pydantic and the standard library): mapping a raw
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
import itertools
import math
from typing import Literal

from pydantic import Field, model_validator

from ..api.base import KubeModel

EPS = 1e-6


class CalibratorConfig(KubeModel):
    """A fitted calibrator (camelCase on the wire, like every API object)."""

    method: Literal["identity", "temperature", "platt", "isotonic"] = "identity"
    temperature: float | None = Field(default=None, gt=0.0, le=1000.0)
    slope: float | None = Field(default=None, ge=0.0, le=1000.0)
    """Platt: non-negative, so the map never reverses the order of confidences."""
    intercept: float | None = Field(default=None, ge=-1000.0, le=1000.0)
    knots_x: list[float] = Field(default_factory=list, max_length=1024)
    """Isotonic: raw confidences, ascending."""
    knots_y: list[float] = Field(default_factory=list, max_length=1024)
    """Isotonic: calibrated probabilities at ``knots_x``, non-decreasing."""
    samples: int = Field(default=0, ge=0)
    """Outcomes it was fitted on."""

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
            if not all(0.0 <= v <= 1.0 for v in (*xs, *ys)):
                raise ValueError("knots must lie in [0, 1]")
        return self


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
