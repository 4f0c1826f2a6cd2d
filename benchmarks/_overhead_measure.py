"""The measurement loop of router_overhead.py: every system, phase by phase, per repeat."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

from _loadgen import (
    CALL_TIMEOUT_S,
    added_histogram,
    closed_loop,
    drain,
    histogram_quantiles,
    open_loop,
    sequential,
)

HERE = Path(__file__).resolve().parent


def classifier_counts(metrics_url: str, policy: str) -> dict[str, float]:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("slmfleet_router_classifier_decisions_total{") and (
            f'policy="{policy}"' in line
        ):
            stage = line.split('stage="', 1)[1].split('"', 1)[0]
            out[stage] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("slmfleet_router_classifier_shed_total "):
            out["shed_503"] = float(line.rsplit(" ", 1)[1])
    return out


def _delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: b.get(k, 0.0) - a.get(k, 0.0) for k in set(a) | set(b)}


async def run_direct(t: dict[str, Any], plan: dict[str, Any], core: int) -> dict[str, Any]:
    """The direct baseline in its own process, pinned to the proxy core."""
    cmd = [
        "taskset", "-c", str(core), sys.executable, str(HERE / "_direct_client.py"),
        t["endpoint"], t["model"], json.dumps(plan),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "operator"))
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"direct client failed: {err.decode()[-2000:]}")
    return json.loads(out)


async def run_http(
    args: Any, u: str, s: str, t: dict[str, Any], rates: list[int], direct_max: float | None
) -> dict[str, Any]:
    slow = s == "litellm"
    call = t["call"]
    res: dict[str, Any] = {}
    counts0 = classifier_counts(t["metrics"], t["policy"]) if "metrics" in t else None
    res["sequential"] = await sequential(call, args.n_seq // 4 if slow else args.n_seq, 8.0)
    ref_s = (res["sequential"]["p50_ms"] or 1.0) / 1000
    # Max first: an overloaded fixed-rate run leaves a backlog behind.
    res["max"] = await closed_loop(
        call, args.conc_slow if slow else args.conc, args.seconds, t["pid"]
    )
    res["max"]["drain_s"] = await drain(call, ref_s)
    for rps in rates:
        if direct_max is not None and rps > 0.9 * direct_max:
            # The upstream itself cannot sustain it: nothing to learn about proxies.
            res[f"rps_{rps}"] = {"skipped": f"upstream max {direct_max:.0f} RPS"}
            continue
        secs = args.seconds
        if slow and rps > 200:
            secs = min(secs, 2.0)  # far beyond its capacity: keep the run bounded
        h0 = added_histogram(t["metrics"], t["policy"]) if "metrics" in t else None
        res[f"rps_{rps}"] = await open_loop(call, rps, secs, args.grace)
        if h0 is not None:
            h1 = added_histogram(t["metrics"], t["policy"])
            res[f"rps_{rps}"]["router_self_added"] = histogram_quantiles(h0, h1)
        res[f"rps_{rps}"]["drain_s"] = await drain(call, ref_s)
    mix = args.mix_rate
    if "mix_call" in t and f"rps_{mix}" in res and "skipped" not in res[f"rps_{mix}"]:
        # The same rate with 5% of the requests carrying 3,000-character prompts.
        res["mix"] = await open_loop(t["mix_call"], mix, args.seconds, args.grace)
        res["mix"]["drain_s"] = await drain(call, ref_s)
    if counts0 is not None:
        res["classifier"] = _delta(counts0, classifier_counts(t["metrics"], t["policy"]))
    return res


async def measure(
    args: Any, targets: dict[str, dict[str, Any]], rates_by: dict[str, list[int]], core: int
) -> dict[str, Any]:
    """targets[upstream][system]; the direct system runs as its own pinned process."""
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {
        u: {s: [] for s in targets[u]} for u in targets
    }
    for systems in targets.values():  # warm up (connections, caches, JITs of the proxies)
        for s, t in systems.items():
            if s == "direct":
                continue
            for _ in range(30):
                await asyncio.wait_for(t["call"](), CALL_TIMEOUT_S)
            await closed_loop(t["call"], 8, 1.0, None)
    for rep in range(args.repeats):
        for u, systems in targets.items():
            direct_max: float | None = None
            for s, t in systems.items():
                if s == "direct":
                    plan = {
                        "n_seq": args.n_seq,
                        "conc": args.conc,
                        "seconds": args.seconds,
                        "grace": args.grace,
                        "rates": rates_by[u],
                        "warmup": True,
                    }
                    res = await run_direct(t, plan, core)
                    direct_max = res["max"]["rps"]
                else:
                    res = await run_http(args, u, s, t, rates_by[u], direct_max)
                raw[u][s].append(res)
                r500 = res.get("rps_500", {})
                print(
                    f"  rep {rep + 1} {u:6s} {s:13s} seq p50 {res['sequential']['p50_ms']:.2f} ms"
                    f" | 500 p50/p99 {_f(r500.get('p50_ms'))}/{_f(r500.get('p99_ms'))} ms"
                    f" | max {res['max']['rps']:.0f} RPS"
                    f" ({_f(res['max'].get('rps_per_cpu_s'), 0)}/CPU-s)",
                    flush=True,
                )
    return raw


def _f(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"
