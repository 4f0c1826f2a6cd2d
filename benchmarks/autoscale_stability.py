"""Stability of the built-in autoscaler: a daily-shaped curve squeezed into 10 minutes,
with noise, replayed through the operator's own decision function.

Method: the day shapes of benchmarks/_autoscale_sim.py compressed into 600 s (one
decision every 5 s, as the loop ticks), with Poisson arrivals and 10% per-step
multiplicative noise on top. Counted per run: replica changes (ups, downs), the changes
of the *ideal* count (what the noise-free curve needs at the target, ceil(rate x
service time / targetInFlight)), and oscillations: a scale-down with a scale-up both
before and after it within one stabilisation window (up-down-up). Target: none. The
same replay with a 60 s window and without stabilisation (0) runs side by side, to show
what the window prevents. Seeds here are not used anywhere else.

Usage: python benchmarks/autoscale_stability.py
Results: benchmarks/results/autoscale_stability.{json,md}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _autoscale_sim import SHAPES, Service, day_trace, simulate

from slmfleet.autoscale.decide import ScalePolicy

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
SVC = Service()
STEP_S, LENGTH_S, PEAK_RPS = 5.0, 600.0, 150.0
TARGET, WINDOW_S, STABILIZATION_S = 5, 30, 300  # the defaults, target as in economics
SEEDS = (500, 501, 502)


def oscillations(changes: list[tuple[float, int]], window: float) -> int:
    """Scale-downs with a scale-up within ``window`` before and another within after."""
    ups = [t for t, d in changes if d > 0]
    return sum(
        1
        for t, d in changes
        if d < 0 and any(t - window <= u < t for u in ups) and any(t < u <= t + window for u in ups)
    )


def ideal_changes(clean: np.ndarray) -> int:
    need = np.maximum(1, np.ceil(clean * SVC.service_mean_s / TARGET - 1e-9))
    return int((np.diff(need) != 0).sum())


def run(seed: int, shape: str, stabilization: float) -> dict:
    clean = day_trace(seed, shape, PEAK_RPS, step_s=STEP_S, length_s=LENGTH_S)
    noisy = clean * np.random.default_rng(seed).lognormal(0.0, 0.1, len(clean))
    pol = ScalePolicy(min_replicas=1, max_replicas=30, target_in_flight=TARGET,
                      latency_p95_ms=1500, scale_down_stabilization_s=stabilization)  # fmt: skip
    res = simulate(noisy, pol, SVC, step_s=STEP_S, window_s=WINDOW_S, seed=seed)
    changes = res.changes()
    window = stabilization or 60.0  # without a window, count within a minute
    return {
        "seed": seed,
        "shape": shape,
        "stabilization_s": stabilization,
        "changes": len(changes),
        "ups": sum(d > 0 for _, d in changes),
        "downs": sum(d < 0 for _, d in changes),
        "ideal_changes": ideal_changes(clean),
        "oscillations": oscillations(changes, window),
        "replica_minutes": round(float(res.replicas.sum()) * STEP_S / 60, 1),
        "violation_minutes": res.violation_minutes(1500),
    }


def main() -> int:
    arms = (STABILIZATION_S, 60, 0)  # the default; the shortest sensible; none
    rows = [run(s, sh, st) for s in SEEDS for sh in SHAPES for st in arms]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"method": __doc__, "rows": rows}
    (RESULTS / "autoscale_stability.json").write_text(json.dumps(out, indent=2))
    lines = [
        "# Autoscaler stability (10-minute replay, decision function)",
        "",
        f"Defaults: windowSeconds {WINDOW_S}, targetInFlight {TARGET}; peak {PEAK_RPS:g} "
        f"rps; decisions every {STEP_S:g} s; 10% noise per step on top of Poisson arrivals.",
        "",
        "| seed | shape | stabilisation s | changes (up/down) | ideal changes | "
        "up-down-up | replica-min | violation min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['shape']} | {r['stabilization_s']:g} | {r['changes']} "
            f"({r['ups']}/{r['downs']}) | {r['ideal_changes']} | {r['oscillations']} | "
            f"{r['replica_minutes']} | {r['violation_minutes']} |"
        )
    with_window = [r for r in rows if r["stabilization_s"]]
    bad = sum(r["oscillations"] for r in with_window)
    without = [r for r in rows if not r["stabilization_s"]]
    lines += [
        "",
        f"With a stabilisation window (300 s or 60 s): {bad} oscillations in "
        f"{len(with_window)} runs (target 0); without one: "
        f"{sum(r['oscillations'] for r in without)} in {len(without)} runs (counted within "
        "60 s). The 10-minute day ramps up in under two minutes while a new replica takes "
        "90 s to serve, hence the violation minutes; with the 300 s default the day is over "
        "before a scale-down is allowed. Pure computation: not sensitive to machine load.",
        "",
    ]
    text = "\n".join(lines)
    (RESULTS / "autoscale_stability.md").write_text(text)
    print(text)
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
