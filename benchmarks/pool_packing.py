"""Packing: twenty small specialists in pools versus one Deployment each, under Zipf
traffic. A replay through the operator's own residency decision (``pool.lru.plan``)
with load times measured on the real tritonserver (benchmarks/pool_load.py) and, as
stated assumptions, the load times of real vLLM engines.

Fleet: 20 specialists of 1-3B parameters; each declares the GPU memory it needs under
vLLM (fp16 weights plus a KV-cache share): 4, 5, 6, 7 or 8 GiB, drawn with a fixed seed
(about 120 GiB in all). A GPU-equivalent is one 80 GiB GPU.
Traffic: Poisson arrivals at 2 requests/s for 4 simulated hours; the specialist of each
request is Zipf-distributed over the 20 (exponent 1.1: a few hot, a long tail).

Compared (same request trace, side by side):
* one Deployment per specialist, one replica each (what the fleet runs without pools):
  20 GPUs; no cold loads.
* one Deployment per specialist with scale to zero (min 0, 600 s idle): its replica-hours
  from the trace; each start is a Pod start plus a model load (not modelled here: counted).
* one pool on one GPU, overcommitted (members need ~120 GiB of 80): the most recently
  used stay loaded, a cold member is loaded on its first request, which waits for the
  drain of the members unloaded for it (the operator's default, 5 s) and the load.
* two pools of one GPU each, members split so each fits (no cold loads at all).

Cold-load time per member: ``measured`` = the median Triton load of pool_load.json
(CPU stand-ins, the machinery's cost alone) -- and two assumptions for real models:
20 s and 60 s (a vLLM engine loading 1-3B weights and warming up; not measured here).
Loads on one server are serialised. Reported: GPU-hours, specialists per
GPU-equivalent, the share of requests that met a cold member, and the added latency
(p50/p95/p99) those cold loads put on requests, over 5 seeds (mean and range). No
parameter was tuned on these figures.

Usage: python benchmarks/pool_packing.py
Results: benchmarks/results/pool_packing.{json,md}
"""

from __future__ import annotations

import json
import random
import statistics
import sys
from pathlib import Path

from slmfleet.pool.lru import Resident, plan

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 2**30
N, RATE, HOURS, ZIPF_S, GPU_GIB, DRAIN_S, IDLE_S = 20, 2.0, 4.0, 1.1, 80, 5.0, 600.0
SEEDS = (1, 2, 3, 4, 5)
#: Sensitivity to the skew, fixed before any run (the headline is ZIPF_S).
SKEWS = (0.8, 1.1, 1.5)
#: A quiet fleet (3 requests a minute in all), also fixed before any run.
QUIET_RATE = 0.05


def fleet(seed: int) -> list[tuple[str, int]]:
    rng = random.Random(1000 + seed)
    return [(f"s{i:02d}", rng.choice((4, 5, 6, 7, 8)) * GIB) for i in range(N)]


def trace(seed: int, zipf_s: float = ZIPF_S, rate: float = RATE) -> list[tuple[float, int]]:
    rng = random.Random(seed)
    weights = [1 / (r + 1) ** zipf_s for r in range(N)]
    t, out, end = 0.0, [], HOURS * 3600
    while True:
        t += rng.expovariate(rate)
        if t >= end:
            return out
        out.append((t, rng.choices(range(N), weights)[0]))


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def replay_pool(members: list[tuple[str, int]], requests: list[tuple[float, int]],
                capacity: int, load_s: float) -> dict:  # fmt: skip
    """Every request through ``lru.plan`` as the residency loop would see it."""
    names = [n for n, _ in members]
    size = dict(members)
    loaded: set[str] = set()
    ready_at: dict[str, float] = {}
    last_used: dict[str, float] = {}
    free_at = 0.0
    added: list[float] = []
    loads = 0

    def apply(t: float, want: str | None) -> None:
        nonlocal free_at, loads
        residents = [Resident(n, size[n], n in loaded, last_used.get(n), n == want)
                     for n in names]  # fmt: skip
        p = plan(residents, capacity)
        for u in p.unload:
            loaded.discard(u)
        start = t + (DRAIN_S if p.unload else 0.0)
        for m in p.load:
            free_at = max(free_at, start) + load_s
            ready_at[m] = free_at
            loaded.add(m)
            loads += 1

    apply(0.0, None)  # the pool starts with what fits, in joining order
    for m in ready_at:
        ready_at[m] = 0.0
    free_at = 0.0
    warm_loads = loads
    for t, i in requests:
        m = names[i]
        if m not in loaded:
            apply(t, m)
        added.append(max(0.0, ready_at[m] - t))
        last_used[m] = t
    cold = [a for a in added if a > 0]
    return {"cold_share": len(cold) / len(added), "loads_per_hour": (loads - warm_loads) / HOURS,
            "p50_added_s": percentile(added, 0.50), "p95_added_s": percentile(added, 0.95),
            "p99_added_s": percentile(added, 0.99)}  # fmt: skip


def scale_to_zero_hours(requests: list[tuple[float, int]]) -> tuple[float, int]:
    """Replica-hours and starts of one Deployment per specialist, min 0, 600 s idle."""
    hours, starts = 0.0, 0
    for i in range(N):
        times = [t for t, j in requests if j == i]
        on_until = -1.0
        end = HOURS * 3600
        for t in times:
            if t > on_until:
                starts += 1
                hours += (min(end, t + IDLE_S) - t) / 3600
            else:
                hours += (min(end, t + IDLE_S) - on_until) / 3600
            on_until = min(end, t + IDLE_S)
    return hours, starts


def split(members: list[tuple[str, int]]) -> list[list[tuple[str, int]]]:
    """Two pools: largest first into the emptier one (each fits in 80 GiB)."""
    pools: list[list[tuple[str, int]]] = [[], []]
    for m in sorted(members, key=lambda m: -m[1]):
        min(pools, key=lambda p: sum(b for _, b in p)).append(m)
    assert all(sum(b for _, b in p) <= GPU_GIB * GIB for p in pools)
    return pools


def main() -> int:
    measured_path = RESULTS / "pool_load.json"
    measured = json.loads(measured_path.read_text())["cold_first_request"]["load_s"]["median"]
    load_times = {"measured": measured, "assumed 20 s": 20.0, "assumed 60 s": 60.0}
    rows: dict[str, list[dict]] = {k: [] for k in load_times}
    two_pools: list[dict] = []
    s2z: list[tuple[float, int]] = []
    skew: dict[float, list[dict]] = {z: [] for z in SKEWS}
    quiet: dict[str, list[dict]] = {k: [] for k in load_times}
    demand: list[float] = []
    for seed in SEEDS:
        members, requests = fleet(seed), trace(seed)
        demand.append(sum(b for _, b in members) / GIB)
        for label, load_s in load_times.items():
            rows[label].append(replay_pool(members, requests, GPU_GIB * GIB, load_s))
        parts = split(members)
        by_pool = [
            replay_pool(p, [(t, [n for n, _ in p].index(members[i][0]))
                            for t, i in requests if members[i] in p], GPU_GIB * GIB, 60.0)
            for p in parts
        ]  # fmt: skip
        two_pools.append({"cold_share": sum(r["cold_share"] for r in by_pool)})
        s2z.append(scale_to_zero_hours(requests))
        for z in SKEWS:
            skew[z].append(replay_pool(members, trace(seed, z), GPU_GIB * GIB, measured))
        quiet_trace = trace(seed, ZIPF_S, QUIET_RATE)
        for label, load_s in load_times.items():
            quiet[label].append(replay_pool(members, quiet_trace, GPU_GIB * GIB, load_s))

    def agg(values: list[float]) -> dict:
        return {"mean": round(statistics.mean(values), 4), "min": round(min(values), 4),
                "max": round(max(values), 4)}  # fmt: skip

    summary = {label: {k: agg([r[k] for r in rs]) for k in rs[0]} for label, rs in rows.items()}
    out = {
        "method": __doc__,
        "fleet_gib": agg(demand),
        "one_pool_one_gpu": summary,
        "two_pools_cold_share": agg([r["cold_share"] for r in two_pools]),
        "gpu_hours": {"one_deployment_each": N * HOURS, "scale_to_zero":
                      agg([h for h, _ in s2z]), "one_pool": 1 * HOURS, "two_pools": 2 * HOURS},
        "scale_to_zero_starts": agg([float(s) for _, s in s2z]),
        "quiet_one_pool_one_gpu": {
            label: {k: agg([r[k] for r in rs]) for k in rs[0]} for label, rs in quiet.items()
        },
        "skew_measured_load": {
            str(z): {k: agg([r[k] for r in rs]) for k in rs[0]} for z, rs in skew.items()
        },
        "hours": HOURS, "seeds": list(SEEDS),
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pool_packing.json").write_text(json.dumps(out, indent=2))
    g = out["gpu_hours"]
    lines = [
        "# Packing 20 small specialists (Zipf 1.1, 2 req/s, 4 h, 5 seeds)",
        "",
        f"The fleet needs {out['fleet_gib']['mean']} GiB of GPU memory (mean over seeds; "
        f"{out['fleet_gib']['min']}-{out['fleet_gib']['max']}); a GPU-equivalent is 80 GiB.",
        "",
        "| layout | GPUs | GPU-hours (4 h) | specialists per GPU | requests meeting a cold "
        "member |",
        "|---|---|---|---|---|",
        f"| one Deployment each (min 1) | {N} | {g['one_deployment_each']:.0f} | 1 | 0 |",
        f"| one Deployment each, scale to zero (600 s) | 0-{N} | "
        f"{g['scale_to_zero']['mean']:.1f} ({g['scale_to_zero']['min']:.1f}-"
        f"{g['scale_to_zero']['max']:.1f}) | - | {out['scale_to_zero_starts']['mean']:.0f} "
        "Pod starts (each a Pod start plus a model load; not modelled) |",
        f"| two pools of one GPU (each fits) | 2 | {g['two_pools']:.0f} | {N // 2} | "
        f"{out['two_pools_cold_share']['max']:.0%} |",
        f"| one pool, one GPU, overcommitted (LRU) | 1 | {g['one_pool']:.0f} | {N} | "
        f"{summary['measured']['cold_share']['mean']:.2%} |",
        "",
        "Added latency from cold loads in the overcommitted pool (over all requests; each "
        "cold load waits the 5 s drain of the members unloaded for it, then the load):",
        "",
        "| load time per member | loads per hour | p50 added (s) | p95 added (s) | p99 added (s) |",
        "|---|---|---|---|---|",
        *(f"| {label} ({load_times[label]:.2f} s) | {s['loads_per_hour']['mean']:.1f} | "
          f"{s['p50_added_s']['mean']:.2f} | {s['p95_added_s']['mean']:.2f} "
          f"({s['p95_added_s']['min']:.2f}-{s['p95_added_s']['max']:.2f}) | "
          f"{s['p99_added_s']['mean']:.2f} ({s['p99_added_s']['min']:.2f}-"
          f"{s['p99_added_s']['max']:.2f}) |" for label, s in summary.items()),
        "",
        "Stability: cold loads queue on the one server, so the overcommitted pool holds "
        "only while (cold loads per second) x (load time) stays below 1. At the measured "
        "CPU load time it does at skews 1.1 and 1.5 (not 0.8, below); with real vLLM load "
        "times at 2 req/s it does not (the "
        "added latency grows for as long as the replay runs): for this traffic the layout "
        "to run is pools that fit (two GPUs, 10 specialists each, no cold loads, 10x fewer "
        "GPU-hours than one Deployment each); overcommit suits long idle tails.",
        "",
        f"A quiet fleet ({QUIET_RATE} req/s, same skew), one overcommitted GPU:",
        "",
        "| load time per member | cold share | loads per hour | p95 added (s) | p99 added (s) |",
        "|---|---|---|---|---|",
        *(f"| {label} | {v['cold_share']['mean']:.2%} | {v['loads_per_hour']['mean']:.1f} | "
          f"{v['p95_added_s']['mean']:.2f} | {v['p99_added_s']['mean']:.2f} |"
          for label, v in out["quiet_one_pool_one_gpu"].items()),
        "",
        "Skew (one overcommitted GPU, measured load time, 2 req/s; the headline is 1.1):",
        "",
        "| Zipf exponent | cold share | loads per hour | p95 added (s) | p99 added (s) |",
        "|---|---|---|---|---|",
        *(f"| {z} | {v['cold_share']['mean']:.2%} | {v['loads_per_hour']['mean']:.0f} | "
          f"{v['p95_added_s']['mean']:.2f} | {v['p99_added_s']['mean']:.2f} |"
          for z, v in out["skew_measured_load"].items()),
        "",
        "A replay through the operator's pure residency decision (`pool.lru.plan`), not a "
        "live run: the measured load time is the real tritonserver's (pool_load.json, CPU "
        "stand-ins); 20 s and 60 s are assumptions for real vLLM engines. Ranges are the "
        "min-max over the 5 seeds.",
        "",
    ]  # fmt: skip
    (RESULTS / "pool_packing.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
