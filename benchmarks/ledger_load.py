"""Ledger correctness under load and the cost of sharing it (issue 9).

Two measurements, one run, side by side:

1. Correctness: ``--procs`` processes (router replicas) x ``--clients`` concurrent
   clients each, against one shared window (``--limit`` USD, reject at the limit) on a
   real ``redis-server``. Each client loops: reserve a random worst case (uniform in
   ``--min``..``--max`` USD), hold it for a random 0-5 ms (the "call"), settle a random
   fraction (10-100%) of it. Until every client has seen ``--rejects-to-stop``
   refusals in a row or ``--seconds`` pass. Counted:
   - overspend: final settled spend minus the limit (must be <= 0);
   - lost or double-counted spend: final spend minus the sum of every settled amount
     the clients report (must be 0);
   - false rejects: refusals although the ledger's own view at that instant (returned
     by the same atomic script) had spent + reserved + amount <= limit (must be 0).
2. Round trip: p50/p99 of one reserve + settle, sequential, in-process ledger vs Redis
   ledger over TCP on 127.0.0.1 (the router's added cost per request).

Usage: ``python benchmarks/ledger_load.py`` (starts and stops its own redis-server);
``worker`` is the per-process entry point. Results: benchmarks/results/ledger_load.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from slmfleet.api.budget import SpendWindow  # noqa: E402
from slmfleet.budget.amounts import Amount  # noqa: E402
from slmfleet.budget.inprocess import InProcessLedger  # noqa: E402
from slmfleet.budget.ledger import BudgetLimits  # noqa: E402
from slmfleet.budget.redis_ledger import RedisLedger, RedisSettings  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def budget(limit: float, budget_id: str = "bench/shared") -> BudgetLimits:
    return BudgetLimits(budget_id, (SpendWindow(window="1h", limit_usd=limit, action="reject"),))


# -- one replica ---------------------------------------------------------------------------


async def _client(
    ledger: RedisLedger, b: BudgetLimits, args: argparse.Namespace, rng: random.Random, out: dict
) -> None:
    deadline = time.monotonic() + args.seconds
    streak = 0
    cap = round(args.limit * 1e9)
    while time.monotonic() < deadline and streak < args.rejects_to_stop:
        amount = Amount(rng.uniform(args.min, args.max))
        adm = await ledger.reserve([b], amount, ttl_s=30)
        if not adm.ledger_available:
            out["unavailable"] += 1
            continue
        if not adm.admitted:
            streak += 1
            out["rejects"] += 1
            st = adm.states[(b.id, "1h")]
            if st.spent.nano_usd + st.reserved.nano_usd + amount.nano_usd_ceil <= cap:
                out["false_rejects"] += 1
            await asyncio.sleep(0.001)
            continue
        streak = 0
        out["admitted"] += 1
        await asyncio.sleep(rng.uniform(0, 0.005))
        actual = Amount(amount.usd * rng.uniform(0.1, 1.0))
        s = await ledger.settle(adm.reservation, actual)
        if s.counted:
            out["settled_nano"] += actual.nano_usd
        out["overruns"] += int(s.overrun.usd > 0)


async def _worker(args: argparse.Namespace) -> dict[str, Any]:
    ledger = RedisLedger(RedisSettings(url=args.url, timeout_s=2.0, max_connections=args.clients))
    b = budget(args.limit, args.budget_id)
    out = dict.fromkeys(
        ("admitted", "rejects", "false_rejects", "settled_nano", "overruns", "unavailable"), 0
    )
    rng = random.Random(args.seed)
    await asyncio.gather(
        *(_client(ledger, b, args, random.Random(rng.random()), out) for _ in range(args.clients))
    )
    await ledger.close()
    return out


def worker_main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--budget-id", default="bench/shared")
    p.add_argument("--limit", type=float, default=3.0)
    p.add_argument("--min", type=float, default=0.001)
    p.add_argument("--max", type=float, default=0.05)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rejects-to-stop", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(_worker(args))))


def run_correctness(
    url: str,
    *,
    procs: int,
    clients: int,
    limit: float,
    seconds: float,
    budget_id: str = "bench/shared",
    lo: float = 0.001,
    hi: float = 0.05,
) -> dict[str, Any]:
    """Start ``procs`` worker processes, wait, and total what they saw and what Redis has."""
    cmd = [sys.executable, __file__, "worker", "--url", url, "--budget-id", budget_id]
    cmd += ["--limit", str(limit), "--clients", str(clients), "--seconds", str(seconds)]
    cmd += ["--min", str(lo), "--max", str(hi)]
    started = time.monotonic()
    children = [
        subprocess.Popen([*cmd, "--seed", str(i + 1)], stdout=subprocess.PIPE, text=True)
        for i in range(procs)
    ]
    reports = []
    for child in children:
        stdout, _ = child.communicate(timeout=seconds + 120)
        if child.returncode != 0:
            raise RuntimeError(f"worker failed with {child.returncode}")
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    elapsed = time.monotonic() - started
    total = {k: sum(r[k] for r in reports) for k in reports[0]}

    async def final() -> Any:
        ledger = RedisLedger(RedisSettings(url=url, timeout_s=2.0))
        read = await ledger.read([budget(limit, budget_id)])
        await ledger.close()
        return read.states[(budget_id, "1h")]

    st = asyncio.run(final())
    spent_nano = st.spent.nano_usd
    return {
        "procs": procs,
        "clients_per_proc": clients,
        "limit_usd": limit,
        "request_usd": [lo, hi],
        "elapsed_s": round(elapsed, 2),
        **total,
        "final_spent_usd": spent_nano / 1e9,
        "final_reserved_usd": st.reserved.usd,
        "overspend_usd": max(0, spent_nano - round(limit * 1e9)) / 1e9,
        "unaccounted_nano_usd": spent_nano - total["settled_nano"],
    }


# -- round trip ----------------------------------------------------------------------------


async def _round_trips(ledger: Any, n: int) -> list[float]:
    b = budget(1e6, f"bench/rtt-{type(ledger).__name__}")
    out = []
    for i in range(n + 200):
        t0 = time.perf_counter()
        adm = await ledger.reserve([b], Amount(0.001), ttl_s=30)
        await ledger.settle(adm.reservation, Amount(0.0005))
        if i >= 200:  # warm-up: connections, script cache
            out.append((time.perf_counter() - t0) * 1000)
    return out


def run_round_trip(url: str, n: int) -> dict[str, Any]:
    async def both() -> dict[str, list[float]]:
        redis_ledger = RedisLedger(RedisSettings(url=url, timeout_s=2.0))
        local = InProcessLedger()
        # Interleaved in blocks, so both see the same machine load.
        res: dict[str, list[float]] = {"in-process": [], "redis": []}
        for _ in range(5):
            res["in-process"] += await _round_trips(local, n // 5)
            res["redis"] += await _round_trips(redis_ledger, n // 5)
        await redis_ledger.close()
        return res

    samples = asyncio.run(both())

    def pct(xs: list[float], q: float) -> float:
        return round(statistics.quantiles(xs, n=100)[int(q) - 1], 4)

    return {
        name: {"n": len(xs), "p50_ms": pct(xs, 50), "p99_ms": pct(xs, 99)}
        for name, xs in samples.items()
    }


# -- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--limit", type=float, default=3.0)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--round-trips", type=int, default=5000)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    from slmfleet.local.redis import RedisServer

    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as server:
        correctness = run_correctness(
            server.url,
            procs=args.procs,
            clients=args.clients,
            limit=args.limit,
            seconds=args.seconds,
        )
        rtt = run_round_trip(server.url, args.round_trips)
    added = round(rtt["redis"]["p50_ms"] - rtt["in-process"]["p50_ms"], 4)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_end": os.getloadavg(),
        "correctness": correctness,
        "round_trip": rtt,
        "redis_added_p50_ms": added,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ledger_load.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "ledger_load.md").write_text(report(result))
    print(report(result))
    ok = (
        correctness["overspend_usd"] == 0
        and correctness["false_rejects"] == 0
        and correctness["unaccounted_nano_usd"] == 0
    )
    return 0 if ok else 1


def _table(c: dict[str, Any]) -> str:
    head = "| admitted | refused | **overspend** | **false rejects** | unaccounted | final spend |"
    row = (
        f"| {c['admitted']} | {c['rejects']} | **{c['overspend_usd']:.9f} USD** "
        f"| **{c['false_rejects']}** | {c['unaccounted_nano_usd']} nano-USD "
        f"| {c['final_spent_usd']:.6f} USD |"
    )
    return "\n".join([head, "|---|---|---|---|---|---|", row])


def report(r: dict[str, Any]) -> str:
    c, t = r["correctness"], r["round_trip"]
    return f"""# Shared spend ledger under load (issue 9)

Generated by `benchmarks/ledger_load.py` (`make bench`); raw numbers in `ledger_load.json`.
Load average at the end of the run: {", ".join(f"{x:.2f}" for x in r["load_average_at_end"])}
on {r["machine"]["cpus"]} CPUs (numbers taken on a busy machine are noisy: see the report).

## Correctness: {c["procs"]} processes x {c["clients_per_proc"]} concurrent clients, one window

One 1h window of {c["limit_usd"]} USD with `action: reject`, on one real `redis-server`.
Each client reserves a random worst case of {c["request_usd"][0]}-{c["request_usd"][1]} USD,
holds it 0-5 ms, settles 10-100% of it, until it is refused 20 times in a row.

{_table(c)}

- overspend: final settled spend minus the limit, floored at 0 (target 0).
- false rejects: refusals although spent + reserved + this request's worst case was within
  the limit in the ledger's own view at that instant (target 0).
- unaccounted: final spend in Redis minus the sum of every settle the clients saw counted
  (0: nothing lost, nothing counted twice).

## Cost of sharing: one reserve + settle, sequential

| ledger | n | p50 ms | p99 ms |
|---|---|---|---|
| in-process | {t["in-process"]["n"]} | {t["in-process"]["p50_ms"]} | {t["in-process"]["p99_ms"]} |
| Redis (127.0.0.1, TCP) | {t["redis"]["n"]} | {t["redis"]["p50_ms"]} | {t["redis"]["p99_ms"]} |

Both round trips of a request, back to back: {r["redis_added_p50_ms"]} ms at p50 (reserve
before the call, settle after it). The router waits for the reserve only (it settles in
the background): router-level latency and max RPS with each ledger are in
budget_routers.md.
"""


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main(sys.argv[2:])
    else:
        sys.exit(main())
