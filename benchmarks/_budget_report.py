"""The Markdown report of benchmarks/budget_routers.py (its method and its numbers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TARGET_ADDED_MS = 0.5
TARGET_LAG_S = 10.0


def _f(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def write_md(r: dict[str, Any], path: Path) -> None:
    c, s = r["correctness"], r["sharing"]
    med = s["median"]
    la = r["load_average"]
    # The 1-minute average after the run counts this benchmark's own processes: only the
    # one before it says whether other jobs were running.
    loaded = la["before"][0] > 1.0
    quiet = (
        "**taken under load from other jobs**."
        if loaded
        else "no other jobs to speak of when it started (the load after is mostly its own)."
    )
    head = "| ledger | router-added p50 ms | p99 ms | client p50 ms | p99 ms | max RPS |"
    lines = [
        "# Budgets across router replicas (benchmarks/budget_routers.py)",
        "",
        "Method: see the module docstring. Real router processes, real redis-server, real",
        "tritonserver (CPU stand-in) for correctness, the instant upstream for the cost of",
        "sharing (so the router is what is measured), real API server and operator for",
        "the status lag.",
        "",
        f"Machine: {r['machine']['cpu']}, {r['machine']['cpus']} CPUs. Load average before "
        f"the run {la['before'][0]:.2f}, after {la['after'][0]:.2f} (1 min): {quiet}",
        "",
        "## Correctness under load",
        "",
        f"{c['routers']} router replicas x {c['clients_per_router']} concurrent clients, one "
        f"window of {c['limit_usd']} USD, requests of random size.",
        "",
        "| | |",
        "|---|---|",
        f"| requests | {c['requests']} |",
        f"| admitted (200) | {c['admitted']} (per router {c['admitted_per_router']}) |",
        f"| rejected (429) | {c['rejected_429']} |",
        f"| other errors | {c['other_errors']} |",
        f"| final spend | {_f(c['final_spent_usd'], 6)} USD of {c['limit_usd']} |",
        f"| **overspend** | **{_f(c['overspend_usd'], 9)} USD** (target 0) |",
        f"| **false rejects** | **{c['false_rejects']}** (target 0) |",
        f"| unaccounted spend (Redis minus reported costs) | {_f(c['unaccounted_usd'], 9)} USD |",
        f"| held at the end | {_f(c['final_reserved_usd'], 9)} USD |",
        f"| elapsed | {c['elapsed_s']} s |",
        "",
        "## Cost of sharing (router-added latency and max RPS, medians of "
        f"{len(s['runs']['redis'])} interleaved runs)",
        "",
        head + " RPS per router CPU-s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("in-process", "redis"):
        m = med[name]
        lines.append(
            f"| {name} | {_f(m['router_added_p50_ms'])} | {_f(m['router_added_p99_ms'])} | "
            f"{_f(m['client_p50_ms'])} | {_f(m['client_p99_ms'])} | {_f(m['max_rps'], 0)} | "
            f"{_f(m['rps_per_cpu_s'], 0)} |"
        )
    added = s["added_p50_ms_by_sharing"]
    verdict = "within" if added <= TARGET_ADDED_MS else "over"
    lines += [
        "",
        f"Added by sharing (p50, Redis minus in-process): **{added:.3f} ms** ({verdict} the "
        f"{TARGET_ADDED_MS} ms target). Every request makes two ledger round trips: the "
        "reserve before the upstream call (which the answer waits for) and the settle "
        "after it (in the background; the hold counts until it lands).",
    ]
    if "status_lag_s" in r:
        lag = r["status_lag_s"]
        lines += [
            "",
            "## Status lag",
            "",
            f"From the first 429 of a window to `Exceeded` on the Budget: {lag} s "
            f"(max {max(lag):.2f} s; target {TARGET_LAG_S} s).",
        ]
    path.write_text("\n".join(lines) + "\n")
