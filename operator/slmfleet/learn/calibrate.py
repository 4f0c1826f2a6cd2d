"""Calibration: how far confidences are from observed accuracy, and the map that fixes it.

A confidence ``c`` is calibrated when, among requests with confidence about ``c``, a
fraction ``c`` is right. ``reliability`` buckets (confidence, correct) pairs into equal-
width bins; ECE is the count-weighted mean gap |accuracy - mean confidence| over bins.
``fit_best`` fits every calibrator of ``calibrator.py`` and keeps the one with the best
*held-out* log-likelihood (k-fold cross-validation, identity included, so a calibrator
that does not generalise is not chosen), then refits it on all the data. The ECE it
reports "after" is the cross-validated one: each fold scored by a calibrator that did
not see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from sklearn.isotonic import IsotonicRegression

from .bounds import wilson
from .calibrator import EPS, CalibratorConfig, apply

METHODS = ("identity", "temperature", "platt", "isotonic")
FOLDS = 5
MIN_SAMPLES = 30
"""Fewer outcomes than this: only identity is considered (a fit would be noise)."""


@dataclass(frozen=True)
class Bin:
    lo: float
    hi: float
    count: int
    mean_confidence: float
    accuracy: float
    interval: tuple[float, float]
    """Wilson 95% interval of the accuracy."""


@dataclass(frozen=True)
class Reliability:
    bins: list[Bin]
    ece: float
    mce: float
    """Largest gap of a non-empty bin."""
    samples: int
    accuracy: float
    mean_confidence: float


def reliability(conf: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> Reliability:
    """Equal-width reliability table; a confidence of exactly 1.0 falls in the last bin."""
    c = np.asarray(conf, dtype=float)
    y = np.asarray(correct, dtype=bool)
    if c.shape != y.shape:
        raise ValueError("conf and correct differ in length")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, n_bins - 1)
    bins: list[Bin] = []
    ece = mce = 0.0
    for b in range(n_bins):
        m = idx == b
        n = int(m.sum())
        if n == 0:
            bins.append(Bin(float(edges[b]), float(edges[b + 1]), 0, 0.0, 0.0, (0.0, 1.0)))
            continue
        acc, mc = float(y[m].mean()), float(c[m].mean())
        gap = abs(acc - mc)
        ece += n / len(c) * gap
        mce = max(mce, gap)
        bins.append(
            Bin(float(edges[b]), float(edges[b + 1]), n, mc, acc, wilson(int(y[m].sum()), n))
        )
    return Reliability(
        bins,
        float(ece),
        float(mce),
        len(c),
        float(y.mean()) if len(c) else 0.0,
        float(c.mean()) if len(c) else 0.0,
    )


def ece(conf: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> float:
    return reliability(conf, correct, n_bins).ece


# -- fitting --------------------------------------------------------------------------------


def _logits(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, EPS, 1.0 - EPS)
    return np.log(c / (1.0 - c))


def _nll_of_probs(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, EPS, 1.0 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _fit_temperature(c: np.ndarray, y: np.ndarray) -> CalibratorConfig:
    z = _logits(c)

    def nll(log_t: float) -> float:
        return _nll_of_probs(1.0 / (1.0 + np.exp(-z / np.exp(log_t))), y)

    r = minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded")
    return CalibratorConfig(method="temperature", temperature=float(np.exp(r.x)), samples=len(c))


def _fit_platt(c: np.ndarray, y: np.ndarray) -> CalibratorConfig:
    z = _logits(c)

    def nll(ab: np.ndarray) -> float:
        return _nll_of_probs(1.0 / (1.0 + np.exp(-(ab[0] * z + ab[1]))), y)

    r = minimize(nll, np.array([1.0, 0.0]), method="L-BFGS-B", bounds=[(0.0, 1000.0), (-50, 50)])
    a, b = (float(v) for v in r.x)
    return CalibratorConfig(method="platt", slope=a, intercept=b, samples=len(c))


#: Most knots of an isotonic calibrator (the API's bound on knotsX / knotsY).
MAX_KNOTS = 256


def _fit_isotonic(c: np.ndarray, y: np.ndarray) -> CalibratorConfig:
    """PAV, with the fitted probabilities kept a half-count away from 0 and 1: a bin with
    no errors in n outcomes says the error rate is small, not zero."""
    floor = 0.5 / (len(c) + 1)
    iso = IsotonicRegression(y_min=floor, y_max=1 - floor, out_of_bounds="clip")
    iso.fit(c, y.astype(float))
    xs = [float(v) for v in iso.X_thresholds_]
    ys = [float(v) for v in iso.y_thresholds_]
    if len(xs) > MAX_KNOTS:  # keep the config bounded: resample the map on MAX_KNOTS knots
        grid = np.linspace(xs[0], xs[-1], MAX_KNOTS)
        xs, ys = [float(v) for v in grid], [float(v) for v in np.interp(grid, xs, ys)]
    xs = [min(max(v, 0.0), 1.0) for v in xs]
    return CalibratorConfig(method="isotonic", knots_x=xs, knots_y=ys, samples=len(c))


def fit(method: str, conf: Sequence[float], correct: Sequence[bool]) -> CalibratorConfig:
    c = np.asarray(conf, dtype=float)
    y = np.asarray(correct, dtype=float)
    if method == "identity":
        return CalibratorConfig(samples=len(c))
    if method == "temperature":
        return _fit_temperature(c, y)
    if method == "platt":
        return _fit_platt(c, y)
    if method == "isotonic":
        return _fit_isotonic(c, y)
    raise ValueError(f"unknown calibration method {method!r}; one of {', '.join(METHODS)}")


def apply_many(cfg: CalibratorConfig, conf: Sequence[float]) -> np.ndarray:
    return np.array([apply(cfg, float(v)) for v in conf])


def nll(cfg: CalibratorConfig, conf: Sequence[float], correct: Sequence[bool]) -> float:
    """Mean negative log-likelihood of the outcomes under the calibrated probabilities."""
    return _nll_of_probs(apply_many(cfg, conf), np.asarray(correct, dtype=float))


@dataclass
class Fitted:
    """The chosen calibrator and the evidence for choosing it."""

    calibrator: CalibratorConfig
    held_out_nll: dict[str, float]
    """Cross-validated mean NLL per method (lower is better)."""
    before: Reliability
    after_cv: Reliability
    """Reliability of cross-validated calibrated confidences (each fold unseen)."""
    folds: int
    notes: list[str] = field(default_factory=list)


def _folds(n: int, k: int) -> list[np.ndarray]:
    """Interleaved folds: deterministic, and each spans the whole time range."""
    return [np.arange(f, n, k) for f in range(k)]


def fit_best(
    conf: Sequence[float],
    correct: Sequence[bool],
    *,
    methods: Sequence[str] = METHODS,
    folds: int = FOLDS,
    n_bins: int = 10,
) -> Fitted:
    """Choose the calibrator with the best held-out likelihood and fit it on everything."""
    c = np.asarray(conf, dtype=float)
    y = np.asarray(correct, dtype=bool)
    before = reliability(c, y, n_bins)
    notes: list[str] = []
    if len(c) < MIN_SAMPLES or y.all() or not y.any():
        why = (
            f"{len(c)} outcomes (< {MIN_SAMPLES})"
            if len(c) < MIN_SAMPLES
            else "outcomes all of one kind"
        )
        notes.append(f"identity kept: {why}")
        ident = CalibratorConfig(samples=len(c))
        return Fitted(ident, {}, before, before, 0, notes)
    k = min(folds, len(c))
    scores: dict[str, float] = {}
    pooled: dict[str, np.ndarray] = {}
    for m in methods:
        out = np.empty(len(c))
        for hold in _folds(len(c), k):
            train = np.setdiff1d(np.arange(len(c)), hold)
            if y[train].all() or not y[train].any():
                cfg = CalibratorConfig(samples=len(train))  # nothing to fit on this fold
            else:
                cfg = fit(m, c[train], y[train])
            out[hold] = apply_many(cfg, c[hold])
        pooled[m] = out
        scores[m] = _nll_of_probs(out, y.astype(float))
    # Ties (within 0.1% of NLL) go to the simpler method: METHODS is ordered by complexity.
    best_score = min(scores.values())
    best = next(m for m in methods if scores[m] <= best_score * 1.001 + 1e-12)
    chosen = fit(best, c, y)
    after = reliability(pooled[best], y, n_bins)
    return Fitted(chosen, scores, before, after, k, notes)
