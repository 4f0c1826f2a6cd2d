"""Economics of the built-in autoscaler: a day of traffic replayed in seconds through the
operator's own decision function (slmfleet.autoscale.decide), against static provisioning.

Method (see benchmarks/_autoscale_sim.py for the queueing model):
1. Tune. The spec knobs a user sets (slo.targetInFlight per replica, windowSeconds,
   scaleDownStabilizationSeconds) are chosen on TUNING days only: the cheapest setting
   whose every tuning day stays within the violation budget (1% of the day's minutes).
   The decision function's own constants were fixed before (HPA-like) and are not tuned.
2. Report. The chosen setting runs on HELD-OUT days (other seeds, and a day shape never
   seen in tuning), against (a) static provisioning at max replicas, the target's
   baseline, and (b) the smallest static count that meets the same violation budget on
   that very day (an oracle no real operator has: the tougher comparison).
   Replica-hours count a replica from the moment it is asked for; an SLO-violation
   minute is a minute with traffic whose request-weighted p95 exceeds the SLO.
3. Also: a sparse specialist with min 0 (scale to zero at night, cold starts in the
   morning), and a cost cap that binds at the peaks.

Usage: python benchmarks/autoscale_economics.py
Results: benchmarks/results/autoscale_economics.{json,md,png}
"""

from __future__ import annotations

import itertools
import json
import math
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from statistics import mean, stdev

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _autoscale_sim import SHAPES, Result, Service, day_trace, simulate

from slmfleet.autoscale.decide import ScalePolicy

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

SVC = Service()  # 8 slots/replica, 0.5 s mean, 0.9 s p95 service, 90 s startup
SLO_MS = 1500.0
PEAK_RPS = 200.0
MAX_REPLICAS = 24
PRICE = 1.2  # USD per replica-hour (for the cost figures only)
BUDGET = 0.01  # violation minutes allowed, as a share of the day's minutes
#: Tuning asks every tuning day to stay within the budget and their mean within MARGIN of
#: it, for day-to-day variance. (The margin was added after a first run on seeds 100-102;
#: it did not change the chosen setting. Those days stay in the report, with 300-302.)
MARGIN = 0.5
TUNING = [(seed, shape) for seed in range(4) for shape in ("office", "evening")]
HELD_OUT = [(seed, shape) for seed in (100, 101, 102, 300, 301, 302) for shape in SHAPES]
GRID = {
    "target_in_flight": (3, 4, 5, 6),
    "window_s": (15, 30),
    "scale_down_stabilization_s": (120, 300, 600),
}


def policy(target: float, stabilization: float, **kw) -> ScalePolicy:
    return ScalePolicy(
        min_replicas=kw.pop("min_replicas", 1),
        max_replicas=kw.pop("max_replicas", MAX_REPLICAS),
        target_in_flight=target,
        latency_p95_ms=SLO_MS,
        scale_down_stabilization_s=stabilization,
        replica_hour_usd=PRICE,
        **kw,
    )


def trace(seed: int, shape: str, peak: float = PEAK_RPS) -> np.ndarray:
    return day_trace(seed, shape, peak)


def budget_minutes(rates: np.ndarray) -> int:
    return math.floor(BUDGET * len(rates) * 5 / 60)


def run(rates, pol, window_s, seed) -> Result:
    return simulate(rates, pol, SVC, window_s=window_s, seed=seed)


def tune() -> tuple[dict, list[dict]]:
    days = [(s, sh, trace(s, sh)) for s, sh in TUNING]
    rows = []
    for target, window, stab in itertools.product(*GRID.values()):
        pol = policy(target, stab)
        results = [run(r, pol, window, s) for s, _, r in days]
        rows.append(
            {
                "target_in_flight": target,
                "window_s": window,
                "scale_down_stabilization_s": stab,
                "replica_hours": round(sum(x.replica_hours for x in results), 1),
                "worst_violation_minutes": max(x.violation_minutes(SLO_MS) for x in results),
                "mean_violation_minutes": mean(x.violation_minutes(SLO_MS) for x in results),
                "ok": all(
                    x.violation_minutes(SLO_MS) <= budget_minutes(r)
                    for x, (_, _, r) in zip(results, days, strict=True)
                ),
            }
        )
    feasible = [r for r in rows if r["ok"] and r["mean_violation_minutes"] <= MARGIN * 14.4]
    best = min(
        feasible or rows, key=lambda r: (r["replica_hours"], -r["scale_down_stabilization_s"])
    )
    return best, rows


def smallest_static(rates: np.ndarray, pol: ScalePolicy, seed: int) -> int:
    lo, hi = 1, pol.max_replicas
    while lo < hi:  # violation minutes only fall as replicas rise
        mid = (lo + hi) // 2
        res = simulate(rates, pol, SVC, static=mid, seed=seed)
        if res.violation_minutes(SLO_MS) <= budget_minutes(rates):
            hi = mid
        else:
            lo = mid + 1
    return lo


def interval(xs: list[float]) -> tuple[float, float, float]:
    """Mean and a 95% t-interval (the held-out sample is small: n days)."""
    t95 = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 7: 2.45, 8: 2.36, 9: 2.31, 10: 2.26,
           12: 2.20, 15: 2.14, 18: 2.11}  # fmt: skip
    m = mean(xs)
    if len(xs) < 2:
        return m, m, m
    half = t95.get(len(xs), 2.0) * stdev(xs) / math.sqrt(len(xs))
    return m, m - half, m + half


def report(best: dict) -> tuple[list[dict], dict]:
    pol = policy(best["target_in_flight"], best["scale_down_stabilization_s"])
    rows, plotted = [], {}
    for seed, shape in HELD_OUT:
        rates = trace(seed, shape)
        auto = run(rates, pol, best["window_s"], seed)
        at_max = simulate(rates, pol, SVC, static=MAX_REPLICAS, seed=seed)
        oracle_n = smallest_static(rates, pol, seed)
        oracle = simulate(rates, pol, SVC, static=oracle_n, seed=seed)
        changes = auto.changes()
        rows.append(
            {
                "seed": seed,
                "shape": shape,
                "replica_hours": round(auto.replica_hours, 1),
                "static_max_replica_hours": round(at_max.replica_hours, 1),
                "saving_vs_max": round(1 - auto.replica_hours / at_max.replica_hours, 4),
                "violation_minutes": auto.violation_minutes(SLO_MS),
                "static_max_violation_minutes": at_max.violation_minutes(SLO_MS),
                "oracle_static_replicas": oracle_n,
                "saving_vs_oracle_static": round(1 - auto.replica_hours / oracle.replica_hours, 4),
                "replica_changes": len(changes),
                "peak_replicas": int(auto.replicas.max()),
                "reasons": auto.reasons,
            }
        )
        if not plotted:
            plotted = {"seed": seed, "shape": shape, "auto": auto, "static": MAX_REPLICAS}
    return rows, plotted


def sparse() -> list[dict]:
    """An internal tool's specialist, min 0: traffic in office hours only (7:30-19:00),
    so zero at night and a cold start each morning."""
    rows = []
    for seed in (200, 201, 202):
        rates = day_trace(seed, "office", 3.0)
        hours = np.arange(len(rates)) * 5 / 3600
        rates = np.where((hours >= 7.5) & (hours < 19.0), rates, 0.0)
        pol = policy(4, 300, min_replicas=0, max_replicas=4, scale_to_zero_after_s=600)
        auto = simulate(rates, pol, SVC, window_s=30, seed=seed)
        always_one = simulate(rates, pol, SVC, static=1, seed=seed)
        zero_steps = int((auto.replicas == 0).sum())
        rows.append(
            {
                "seed": seed,
                "replica_hours": round(auto.replica_hours, 1),
                "static_one_replica_hours": round(always_one.replica_hours, 1),
                "hours_at_zero": round(zero_steps * 5 / 3600, 1),
                "violation_minutes": auto.violation_minutes(SLO_MS),
                "cold_starts": sum(
                    1
                    for i in range(1, len(auto.replicas))
                    if auto.replicas[i - 1] == 0 and auto.replicas[i] > 0
                ),
            }
        )
    return rows


def capped(best: dict) -> list[dict]:
    """The chosen setting with a cost cap of 12 replicas' price, on the held-out days."""
    cap_replicas = 12
    pol = policy(best["target_in_flight"], best["scale_down_stabilization_s"],
                 max_cost_usd_per_hour=cap_replicas * PRICE)  # fmt: skip
    rows = []
    for seed, shape in HELD_OUT[:3]:
        rates = trace(seed, shape)
        res = run(rates, pol, best["window_s"], seed)
        rows.append(
            {
                "seed": seed,
                "shape": shape,
                "cap_usd_per_hour": cap_replicas * PRICE,
                "peak_replicas": int(res.replicas.max()),
                "cost_capped_decisions": res.reasons.get("CostCapped", 0),
                "replica_hours": round(res.replica_hours, 1),
                "violation_minutes": res.violation_minutes(SLO_MS),
            }
        )
    return rows


def plot(plotted: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res: Result = plotted["auto"]
    hours = np.arange(len(res.rate)) * res.step_s / 3600
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    axes[0].plot(hours, res.rate, lw=0.6, color="tab:gray")
    axes[0].set_ylabel("requests/s")
    axes[0].set_title(
        f"held-out day (seed {plotted['seed']}, {plotted['shape']}): built-in autoscaler "
        f"vs static at max ({plotted['static']})"
    )
    axes[1].step(hours, res.replicas, where="post", label="asked (cost)", color="tab:blue")
    axes[1].step(hours, res.ready, where="post", label="ready", color="tab:green", lw=0.8)
    axes[1].axhline(plotted["static"], color="tab:red", ls="--", label="static at max")
    axes[1].set_ylabel("replicas")
    axes[1].legend(loc="upper left")
    minutes = res.minute_p95_ms()
    axes[2].plot(np.arange(len(minutes)) / 60, minutes, lw=0.7, color="tab:purple")
    axes[2].axhline(SLO_MS, color="tab:red", ls="--", label=f"SLO p95 {SLO_MS:g} ms")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("p95 per minute (ms)")
    axes[2].set_xlabel("hour of day")
    axes[2].legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    started = time.time()
    best, grid = tune()
    rows, plotted = report(best)
    savings = [r["saving_vs_max"] for r in rows]
    viol_share = [r["violation_minutes"] / 1440 for r in rows]
    oracle = [r["saving_vs_oracle_static"] for r in rows]
    summary = {
        "saving_vs_static_max": interval(savings),
        "saving_vs_oracle_static": interval(oracle),
        "violation_share": interval(viol_share),
        "worst_day_violation_minutes": max(r["violation_minutes"] for r in rows),
        "days_within_budget": sum(r["violation_minutes"] <= 14 for r in rows),
        "days": len(rows),
    }
    out = {
        "method": __doc__,
        "service": asdict(SVC),
        "slo_p95_ms": SLO_MS,
        "peak_rps": PEAK_RPS,
        "max_replicas": MAX_REPLICAS,
        "tuning_days": TUNING,
        "held_out_days": HELD_OUT,
        "chosen": best,
        "grid": grid,
        "held_out": rows,
        "summary": summary,
        "sparse_min_zero": sparse(),
        "cost_cap": capped(best),
        "seconds": round(time.time() - started, 1),
        "machine": platform.platform(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "autoscale_economics.json").write_text(json.dumps(out, indent=2, default=str))
    plot(plotted, RESULTS / "autoscale_economics.png")
    (RESULTS / "autoscale_economics.md").write_text(markdown(out))
    print(markdown(out))
    ok = summary["saving_vs_static_max"][0] >= 0.40 and summary["violation_share"][0] <= BUDGET
    return 0 if ok else 1


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown(out: dict) -> str:
    s, b = out["summary"], out["chosen"]
    lines = [
        "# Autoscaler economics (simulation over the real decision function)",
        "",
        f"Chosen on {len(out['tuning_days'])} tuning days (office, evening; seeds 0-3): "
        f"targetInFlight {b['target_in_flight']} of {out['service']['slots']} slots per "
        f"replica, windowSeconds {b['window_s']}, scaleDownStabilizationSeconds "
        f"{b['scale_down_stabilization_s']}. Reported on {s['days']} held-out days "
        "(seeds 100-102 and 300-302, including the never-tuned spiky shape).",
        "",
        "| day | replica-h | static max replica-h | saving vs max | violation min | "
        "oracle static | saving vs oracle | changes | peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in out["held_out"]:
        lines.append(
            f"| {r['seed']} {r['shape']} | {r['replica_hours']} | "
            f"{r['static_max_replica_hours']} | {pct(r['saving_vs_max'])} | "
            f"{r['violation_minutes']} | {r['oracle_static_replicas']} | "
            f"{pct(r['saving_vs_oracle_static'])} | {r['replica_changes']} | "
            f"{r['peak_replicas']} |"
        )
    sv, vo, so = s["saving_vs_static_max"], s["violation_share"], s["saving_vs_oracle_static"]
    lines += [
        "",
        f"- Replica-hours saved vs static at max: mean {pct(sv[0])} "
        f"(95% t-interval {pct(sv[1])} to {pct(sv[2])}; target >= 40%).",
        f"- SLO-violation minutes: mean {pct(vo[0])} of the day (interval {pct(vo[1])} to "
        f"{pct(vo[2])}; target <= 1%); worst day {s['worst_day_violation_minutes']} min; "
        f"{s['days_within_budget']}/{s['days']} days within 14 min.",
        f"- Saving vs the smallest static count meeting the same budget on that very day "
        f"(an oracle): mean {pct(so[0])} (interval {pct(so[1])} to {pct(so[2])}).",
        f"- Sample: {s['days']} simulated days; the intervals are wide for that reason.",
        "",
        "Sparse specialist, min 0 (peak 3 rps, traffic 7:30-19:00 only; scaleToZeroAfter "
        "600 s): the first request of the morning waits for a cold start (90 s here).",
        "",
        "| seed | replica-h | static 1 replica-h | hours at zero | cold starts | violation min |",
        "|---|---|---|---|---|---|",
    ]
    for r in out["sparse_min_zero"]:
        lines.append(
            f"| {r['seed']} | {r['replica_hours']} | {r['static_one_replica_hours']} | "
            f"{r['hours_at_zero']} | {r['cold_starts']} | {r['violation_minutes']} |"
        )
    lines += [
        "",
        "Cost cap binding at the peaks (cap = 12 replicas' price):",
        "",
        "| day | cap USD/h | peak replicas | CostCapped decisions | replica-h | violation min |",
        "|---|---|---|---|---|---|",
    ]
    for r in out["cost_cap"]:
        lines.append(
            f"| {r['seed']} {r['shape']} | {r['cap_usd_per_hour']:g} | {r['peak_replicas']} | "
            f"{r['cost_capped_decisions']} | {r['replica_hours']} | {r['violation_minutes']} |"
        )
    lines += [
        "",
        "Model: each replica serves 8 requests at once, 0.5 s mean / 0.9 s p95 service, "
        "new replicas serve 90 s after being asked for; M/M/N waits below saturation, a "
        "fluid backlog above; Poisson arrivals around a diurnal rate with slow noise and "
        "bursts; decisions every 5 s on trailing-window signals. Pure computation: not "
        "sensitive to machine load. Plot: autoscale_economics.png.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
