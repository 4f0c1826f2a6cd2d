"""Budgets across router replicas (issue 9), measured on the parts users run: router
processes (``python -m slmfleet.router``) sharing one real redis-server.

1. Correctness under load: ``--routers`` router replicas x ``--clients`` concurrent
   clients each (the official OpenAI client), in front of the real tritonserver (the
   priced CPU stand-in ``writer``), against one window of ``--limit`` USD (reject at the
   limit), requests of random size (2-40 prompt words, max_tokens 4-48). Each client
   stops after 3 refusals in a row. Counted: overspend (final settled spend beyond the
   limit, from Redis), false rejects (429s the ledger's own view at that instant - the
   windows the atomic reserve returned, logged by the router - did not justify:
   spent + reserved + the request's worst case within the limit) and unaccounted spend
   (Redis minus the sum of the costs the answered requests report).
2. Cost of sharing: the same router with the in-process ledger and with the Redis
   ledger, side by side in one run, interleaved (``--repeats``, medians), in front of
   benchmarks/_fast_upstream.py (answers at once, so the router is what is measured), a
   Budget with a spend window on the policy (every request reserves and settles).
   Router-added latency: each request's ``router_ms`` from the router's own log line
   (end to end minus upstream: parsing, routing, the ledger's reserve and settle);
   open loop at ``--rps``. Max RPS: closed loop, ``--concurrency`` connections.
3. Status lag: the real API server and the real operator (its ledger: the same Redis);
   requests until the first 429, then the time until the Budget says Exceeded.

Usage: ``python benchmarks/budget_routers.py`` (``make bench``). Results:
benchmarks/results/budget_routers.{json,md}. The load average is recorded: the machine
may be shared, and timings taken under load say so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "operator"), str(ROOT), str(ROOT / "benchmarks")]

import orjson  # noqa: E402
from _bench_procs import free_port, machine, stop_proc  # noqa: E402
from _budget_report import write_md  # noqa: E402
from _loadgen import HTTPPool, closed_loop, http_caller, open_loop, pct  # noqa: E402
from tests.integration.budget_fleet import (  # noqa: E402
    access_lines,
    ask,
    budget,
    client,
    false_rejects,
    load,
    policy,
    settled,
    specialist,
    start_router,
    write_manifests,
)

from slmfleet.local.fleet import LocalFleet  # noqa: E402
from slmfleet.local.redis import RedisServer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
NS = "bench"
LAG_BUDGETS = 3


# -- 1. correctness under load -------------------------------------------------------------


def fleet_manifests(limit: float) -> list[dict[str, Any]]:
    docs = [specialist("writer"), policy("spend", "writer", timeout_ms=60000)]
    docs.append(budget("cap", "spend", limit))
    for i in range(LAG_BUDGETS):
        docs += [policy(f"lag-{i}", "writer"), budget(f"lag-{i}", f"lag-{i}", 0.2)]
    return docs


def correctness(routers: list[Any], logs: list[Path], redis_url: str, args: Any) -> dict:
    t0 = time.monotonic()
    out = asyncio.run(
        load(
            [r.url for r in routers],
            "spend",
            clients_per_router=args.clients,
            max_requests=args.max_requests,
            stop_after_429s=3,
        )
    )
    elapsed = time.monotonic() - t0
    st = asyncio.run(settled(redis_url, f"{NS}/cap", args.limit))
    ok = [o for o in out if o.status == 200]
    refused = [o for o in out if o.status == 429]
    lines = [rec for log in logs for rec in access_lines(log) if rec.get("policy") == "spend"]
    spent_nano = st.spent.nano_usd
    return {
        "routers": len(routers),
        "clients_per_router": args.clients,
        "limit_usd": args.limit,
        "requests": len(out),
        "admitted": len(ok),
        "rejected_429": len(refused),
        "other_errors": len(out) - len(ok) - len(refused),
        "elapsed_s": round(elapsed, 1),
        "final_spent_usd": st.spent.usd,
        "final_reserved_usd": st.reserved.usd,
        "overspend_usd": max(0, spent_nano - round(args.limit * 1e9)) / 1e9,
        "false_rejects": len(false_rejects(lines, f"{NS}/cap/1h", args.limit)),
        "429s_in_router_logs": sum(1 for rec in lines if rec.get("status") == 429),
        "unaccounted_usd": round(st.spent.usd - sum(o.cost for o in ok), 9) + 0.0,
        "admitted_per_router": [sum(1 for o in ok if o.router == i) for i in range(len(routers))],
    }


# -- 2. cost of sharing --------------------------------------------------------------------


def sharing_config(endpoint: str) -> dict[str, Any]:
    return {
        "version": 1,
        "specialists": [
            {
                "id": f"{NS}/fast",
                "endpoint": endpoint,
                "tritonModel": "fast",
                "backend": "python",
                "ready": True,
                "cost": {"inputPerMillionUsd": 0.1, "outputPerMillionUsd": 0.2},
            }
        ],
        "policies": [
            {
                "modelName": "shared",
                "id": f"{NS}/shared",
                "specialists": [f"{NS}/fast"],
                "routing": {"semantic": {"enabled": False}},
                "budgets": [f"{NS}/big"],
                "cascade": [{"name": "routed", "routed": True}],
            }
        ],
        "budgets": [
            {
                "id": f"{NS}/big",
                "perRequest": {"maxOutputTokens": 16},
                "spend": [{"window": "1h", "limitUsd": 1e6, "action": "reject"}],
            }
        ],
    }


def router_ms(log: Path, offset: int) -> list[float]:
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    out = []
    for line in text.splitlines():
        if line.startswith("{") and '"router_ms"' in line:
            rec = json.loads(line)
            if rec.get("status") == 200:
                out.append(rec["router_ms"] / 1000)
    return out


async def measure(port: int, log: Path, pid: int, args: Any) -> dict[str, Any]:
    body = orjson.dumps(
        {"model": "shared", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}
    )
    pool = HTTPPool(port, max_conns=max(args.concurrency, 64))
    call = http_caller(pool, "/v1/chat/completions", body)
    for _ in range(200):  # warm-up: connections, scripts, caches
        await call()
    await asyncio.sleep(0.5)
    offset = log.stat().st_size
    opened = await open_loop(call, args.rps, args.seconds, grace=10)
    await asyncio.sleep(0.5)  # the access lines are flushed
    added = router_ms(log, offset)
    closed = await closed_loop(call, args.concurrency, args.seconds, pid)
    pool.close()
    return {
        "client_p50_ms": opened["p50_ms"],
        "client_p99_ms": opened["p99_ms"],
        "errors": opened["errors"] + closed["errors"],
        "router_added_p50_ms": pct(added, 50),
        "router_added_p99_ms": pct(added, 99),
        "router_added_n": len(added),
        "max_rps": closed["rps"],
        "rps_per_cpu_s": closed.get("rps_per_cpu_s"),
    }


def sharing(redis_url: str, work: Path, args: Any) -> dict[str, Any]:
    grpc_port, http_port = free_port(), free_port()
    fast = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "_fast_upstream.py"),
         "--grpc-port", str(grpc_port), "--http-port", str(http_port)],
        stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    procs: dict[str, tuple[subprocess.Popen, int, Path]] = {}
    try:
        if fast.stdout is None or fast.stdout.readline().strip() != b"ready":
            raise RuntimeError("fast upstream did not start")
        config = work / "sharing.json"
        config.write_bytes(orjson.dumps(sharing_config(f"127.0.0.1:{grpc_port}")))
        for name, extra in (("in-process", []), ("redis", ["--ledger-url", redis_url])):
            port, log = free_port(), work / f"sharing-{name}.log"
            cmd = [sys.executable, "-m", "slmfleet.router", "--config", str(config),
                   "--host", "127.0.0.1", "--port", str(port), "--log-level", "info",
                   *extra]  # fmt: skip
            proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
            procs[name] = (proc, port, log)
        for _, port, _ in procs.values():
            wait_ready(port)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in procs}
        for r in range(args.repeats):
            order = list(procs) if r % 2 == 0 else list(reversed(procs))
            for name in order:
                proc, port, log = procs[name]
                runs[name].append(asyncio.run(measure(port, log, proc.pid, args)))
        med = {
            name: {k: statistics.median(x[k] for x in rs if x[k] is not None) for k in rs[0]}
            for name, rs in runs.items()
        }
        added = med["redis"]["router_added_p50_ms"] - med["in-process"]["router_added_p50_ms"]
        return {"runs": runs, "median": med, "added_p50_ms_by_sharing": added}
    finally:
        for proc, _, _ in procs.values():
            stop_proc(proc)
        stop_proc(fast)


def wait_ready(port: int, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"router on {port} not ready")


# -- 3. status lag -------------------------------------------------------------------------


def status_lag(router_url: str, redis_url: str, work: Path) -> list[float]:
    from slmfleet.local.cluster import REPO, LocalCluster
    from slmfleet.local.operator import OperatorProcess

    lags = []
    (work / "cluster").mkdir()
    with LocalCluster(workdir=work / "cluster") as cluster:
        cluster.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/budgets.slmfleet.io")
        cluster.kubectl("create", "namespace", NS)
        cluster.kubectl("create", "namespace", "slmfleet-system")
        op = OperatorProcess(
            cluster.kubeconfig,
            log_path=work / "operator.log",
            extra_env={"SLMFLEET_LEDGER_URL": redis_url},
        )
        op.start()
        try:
            for i in range(LAG_BUDGETS):
                doc = budget(f"lag-{i}", f"lag-{i}", 0.2)
                cluster.kubectl("apply", "-n", NS, "-f", "-", input=json.dumps(doc))
                wait_state(cluster, f"lag-{i}", "Ok", 90)
                crossed = asyncio.run(until_refused(router_url, f"lag-{i}"))
                wait_state(cluster, f"lag-{i}", "Exceeded", 60)
                lags.append(round(time.monotonic() - crossed, 2))
        finally:
            op.stop()
    return lags


def wait_state(cluster: Any, name: str, state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cluster.kubectl("get", "budget.slmfleet.io", name, "-n", NS, "-o",
                              "jsonpath={.status.state}")  # fmt: skip
        if got.stdout.strip() == state:
            return
        time.sleep(0.1)
    raise RuntimeError(f"Budget {name} never {state}")


async def until_refused(url: str, model: str) -> float:
    c = client(url)
    rng = random.Random(5)
    try:
        while True:
            if (await ask(c, model, rng)).status == 429:
                return time.monotonic()
    finally:
        await c.close()


# -- the run -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--routers", type=int, default=4)
    p.add_argument("--clients", type=int, default=64, help="concurrent clients per router")
    p.add_argument("--limit", type=float, default=3.0)
    p.add_argument("--max-requests", type=int, default=20000)
    p.add_argument("--rps", type=float, default=200.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-lag", action="store_true", help="no control plane")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="slmfleet-budget-bench-"))
    load_before = os.getloadavg()
    redis = RedisServer(work / "redis").start()
    fleet = LocalFleet(
        write_manifests(work / "manifests", fleet_manifests(args.limit)),
        port=free_port(),
        namespace=NS,
        workdir=work / "fleet",
        ledger_url=redis.url,
        startup_timeout=300,
    )
    extra: list[Any] = []
    try:
        fleet.start()
        config = fleet.workdir / "router.json"
        extra = [start_router(config, redis.url, work / f"router-{i}.log")
                 for i in range(1, args.routers)]  # fmt: skip
        routers = [fleet.router, *extra]
        logs = [fleet.router_log, *(work / f"router-{i}.log" for i in range(1, args.routers))]
        result: dict[str, Any] = {"correctness": correctness(routers, logs, redis.url, args)}
        print(json.dumps(result["correctness"], indent=1), flush=True)
        result["sharing"] = sharing(redis.url, work, args)
        print(json.dumps(result["sharing"]["median"], indent=1), flush=True)
        if not args.skip_lag:
            result["status_lag_s"] = status_lag(routers[-1].url, redis.url, work)
            print("status lag:", result["status_lag_s"], flush=True)
    finally:
        for r in extra:
            r.stop()
        fleet.stop()
        redis.stop()
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    result["machine"] = machine()
    result["args"] = vars(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "budget_routers.json").write_text(json.dumps(result, indent=1) + "\n")
    write_md(result, RESULTS / "budget_routers.md")
    c = result["correctness"]
    print(f"overspend: {c['overspend_usd']} USD, false rejects: {c['false_rejects']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
