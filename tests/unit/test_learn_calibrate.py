"""Calibration: reliability tables and ECE by hand, calibrators recovering known maps."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from slmfleet.learn.calibrate import ece, fit, fit_best, nll, reliability
from slmfleet.learn.calibrator import CalibratorConfig, apply, sigmoid, threshold_on_raw


def test_reliability_table_by_hand():
    conf = [0.15, 0.15, 0.15, 0.15, 0.95, 0.95, 0.55, 1.0]
    correct = [False, True, False, False, True, True, True, True]
    rel = reliability(conf, correct, n_bins=10)
    b1, b5, b9 = rel.bins[1], rel.bins[5], rel.bins[9]
    assert (b1.count, b1.accuracy) == (4, 0.25)
    assert b1.mean_confidence == pytest.approx(0.15)
    assert (b5.count, b5.accuracy) == (1, 1.0)
    # 1.0 falls into the last bin with the 0.95s
    assert b9.count == 3 and b9.mean_confidence == pytest.approx((0.95 * 2 + 1.0) / 3)
    by_hand = 4 / 8 * 0.10 + 1 / 8 * 0.45 + 3 / 8 * abs(1.0 - (2.9 / 3))
    assert rel.ece == pytest.approx(by_hand)
    assert rel.mce == pytest.approx(0.45)
    assert sum(b.count for b in rel.bins) == 8
    lo, hi = b1.interval
    assert lo < 0.25 < hi


def test_perfectly_calibrated_sample_has_small_ece():
    rng = np.random.default_rng(1)
    c = rng.uniform(size=20000)
    y = rng.uniform(size=c.size) < c
    assert ece(c, y) < 0.015
    assert ece(np.full(1000, 0.9), np.zeros(1000, bool)) == pytest.approx(0.9)


def _synthetic(n: int, seed: int, truth):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2.0, n)
    conf = 1 / (1 + np.exp(-z))
    y = rng.uniform(size=n) < truth(z)
    return conf, y


def test_temperature_recovers_overconfidence():
    # the model reports sigmoid(z) but the truth is sigmoid(z / 2): temperature 2
    conf, y = _synthetic(30000, 2, lambda z: 1 / (1 + np.exp(-z / 2)))
    cal = fit("temperature", conf, y)
    assert cal.temperature == pytest.approx(2.0, rel=0.08)
    assert apply(cal, 0.5) == pytest.approx(0.5)
    assert apply(cal, 0.9) < 0.9


def test_platt_recovers_slope_and_intercept():
    conf, y = _synthetic(30000, 3, lambda z: 1 / (1 + np.exp(-(0.5 * z - 1.0))))
    cal = fit("platt", conf, y)
    assert cal.slope == pytest.approx(0.5, abs=0.05)
    assert cal.intercept == pytest.approx(-1.0, abs=0.08)


def test_isotonic_recovers_a_monotone_map():
    rng = np.random.default_rng(4)
    c = rng.uniform(size=20000)
    y = rng.uniform(size=c.size) < c**2
    cal = fit("isotonic", c, y)
    for p in (0.3, 0.5, 0.8):
        assert apply(cal, p) == pytest.approx(p**2, abs=0.05)
    assert cal.knots_y == sorted(cal.knots_y)
    assert cal.knots_y[0] > 0 and cal.knots_y[-1] < 1  # never a certain 0 or 1


def test_fit_best_picks_by_held_out_likelihood():
    conf, y = _synthetic(4000, 5, lambda z: 1 / (1 + np.exp(-z / 2.5)))
    f = fit_best(conf, y)
    assert f.calibrator.method in ("temperature", "platt", "isotonic")
    assert f.held_out_nll[f.calibrator.method] < f.held_out_nll["identity"]
    assert f.after_cv.ece < f.before.ece / 2
    # already calibrated: nothing fitted beats identity by more than the tie margin
    conf, y = _synthetic(4000, 6, lambda z: 1 / (1 + np.exp(-z)))
    g = fit_best(conf, y)
    assert g.held_out_nll[g.calibrator.method] <= g.held_out_nll["identity"]
    assert nll(g.calibrator, conf, y) <= nll(CalibratorConfig(), conf, y) + 0.01


def test_fit_best_keeps_identity_on_too_few_or_one_sided_outcomes():
    f = fit_best([0.9, 0.8, 0.7], [True, False, True])
    assert f.calibrator.method == "identity" and "< 30" in f.notes[0]
    g = fit_best(np.linspace(0.1, 0.9, 50), np.ones(50, bool))
    assert g.calibrator.method == "identity" and "one kind" in g.notes[0]


def test_config_validation_and_apply():
    with pytest.raises(ValidationError, match="temperature"):
        CalibratorConfig(method="temperature")
    with pytest.raises(ValidationError, match="ascending"):
        CalibratorConfig(method="isotonic", knots_x=[0.5, 0.2], knots_y=[0.1, 0.2])
    with pytest.raises(ValidationError):
        CalibratorConfig(method="platt", slope=-1.0, intercept=0.0)
    iso = CalibratorConfig(method="isotonic", knots_x=[0.2, 0.6], knots_y=[0.1, 0.5])
    assert apply(iso, 0.0) == 0.1 and apply(iso, 1.0) == 0.5
    assert apply(iso, 0.4) == pytest.approx(0.3)
    wire = iso.wire()
    assert wire["knotsX"] == [0.2, 0.6] and CalibratorConfig.model_validate(wire) == iso
    platt = CalibratorConfig(method="platt", slope=2.0, intercept=0.5)
    assert apply(platt, 0.5) == pytest.approx(sigmoid(0.5))
    assert apply(CalibratorConfig(), 1.7) == 1.0  # clamped


def test_threshold_on_raw_inverts_apply():
    t = CalibratorConfig(method="temperature", temperature=0.5)
    raw = threshold_on_raw(t, 0.9)
    assert apply(t, raw) >= 0.9 > apply(t, raw - 1e-6)
    iso = CalibratorConfig(method="isotonic", knots_x=[0.2, 0.6], knots_y=[0.1, 0.5])
    assert threshold_on_raw(iso, 0.3) == pytest.approx(0.4, abs=1e-9)
    assert threshold_on_raw(iso, 0.7) == 1.0  # unreachable
