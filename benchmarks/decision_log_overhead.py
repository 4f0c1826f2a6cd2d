"""Router overhead of the decision log (issue 11): the router as users run it (semantic
routing on: a policy over 10 CLINC150 domains, every request a different question) with
the decision log off, on SQLite and on PostgreSQL, side by side in one run; then the
durability bound: kill -9 under load, on both stores.

Overhead. Three router processes (``python -m slmfleet.router``, identical config and
flags; ``SLMFLEET_DECISION_STORE`` unset / a SQLite file / a PostgreSQL database) pinned
to one core, the upstream (``_fast_upstream.py``: answers at once, so the router is what
is measured), PostgreSQL and the load generator on the other. Per repeat, interleaved
(off, sqlite, postgres): sequential requests (p50/p99), a closed loop (max RPS, and
requests per CPU-second of the router), open loops at fixed rates (latency from each
request's scheduled time), and the router's own added-latency histogram. Added latency
of the log = that system minus ``off`` in the same repeat; medians over repeats. Each
router's ``/readyz`` afterwards says how many decisions it wrote and dropped.

Durability. A router on each store under load (8 concurrent clients, 80% routed
requests, 20% to a human tier whose case is filed before the answer), kill -9 after a
few seconds, restart on the same store: decisions answered before the kill but not in
the store (how many; the oldest, in seconds before the kill), cases a caller was told
about but not in the store (must be 0).

Output: a table on stdout, benchmarks/results/decision_log_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT))

from _bench_procs import API_KEY, core_busy, free_port, machine, stop_proc, wait_http  # noqa: E402
from _clinc_workload import Workload  # noqa: E402
from _loadgen import (  # noqa: E402
    HTTPPool,
    added_histogram,
    closed_loop,
    drain,
    histogram_quantiles,
    http_caller,
    open_loop,
    pct,
)
from _log_overhead_report import summarize, write_md  # noqa: E402

SYSTEMS = ("off", "sqlite", "postgres")
POLICY = "routed"
#: Routing off, one specialist: where the router itself costs least, a second view.
PLAIN_BODY = orjson.dumps(
    {"model": "plain", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
)


def router_config(workload: Workload, endpoint: str) -> dict[str, Any]:
    """The headline policy (as router_overhead.py's), plus a human tier for durability:
    ``review`` fails at a closed port and files a case."""
    clinc = workload.specialists("clinc", endpoint, "fast")
    dead = {"id": "bench/dead", "endpoint": f"127.0.0.1:{free_port()}", "tritonModel": "x",
            "backend": "python", "ready": True}  # fmt: skip
    plain = {"id": "bench/plain", "endpoint": endpoint, "tritonModel": "fast",
             "backend": "python", "ready": True}  # fmt: skip
    return {
        "version": 1,
        "specialists": [*clinc, dead, plain],
        "policies": [
            {
                "modelName": POLICY,
                "id": "bench/routed",
                "specialists": [s["id"] for s in clinc],
                "routing": {"semantic": {"minConfidence": 0.1}},
                "cascade": [
                    {"name": "routed", "routed": True},
                    {"name": "fallback", "specialist": "bench/plain"},
                ],
            },
            {
                "modelName": "plain",
                "id": "bench/plain",
                "specialists": ["bench/plain"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [{"name": "routed", "routed": True}],
            },
            {
                "modelName": "review",
                "id": "bench/review",
                "specialists": ["bench/dead"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [
                    {"name": "routed", "routed": True, "timeoutMs": 2000},
                    {"name": "human", "human": {"queue": "ops"}},
                ],
            },
        ],
    }


def start_router(cfg: Path, core: int, store: str | None, log: Path) -> tuple[Any, int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "operator"), SLMFLEET_API_KEYS=API_KEY)
    env.pop("SLMFLEET_DECISION_STORE", None)
    if store:
        env["SLMFLEET_DECISION_STORE"] = store
    cmd = ["taskset", "-c", str(core), sys.executable, "-m", "slmfleet.router",
           "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "info", "--discovery", "off"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"), start_new_session=True
    )
    return proc, port


def readyz(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as r:
        return json.loads(r.read())


async def interleaved_sequential(calls: dict[str, Any], n: int) -> dict[str, Any]:
    """One request at a time, in turn to each system (the order rotating): whatever the
    machine does meanwhile hits every system alike, so their difference is the log's."""
    lat: dict[str, list[float]] = {s: [] for s in calls}
    errors = dict.fromkeys(calls, 0)
    names = list(calls)
    for i in range(n):
        k = i % len(names)
        for s in names[k:] + names[:k]:
            t = time.perf_counter()
            try:
                await asyncio.wait_for(calls[s](), 30)
                lat[s].append(time.perf_counter() - t)
            except Exception:
                errors[s] += 1
    return {
        s: {"n": len(x), "errors": errors[s], "p50_ms": pct(x, 50), "p99_ms": pct(x, 99)}
        for s, x in lat.items()
    }


async def measure(args, workload: Workload, routers: dict[str, tuple[Any, int]]) -> dict:
    pools: list[HTTPPool] = []
    calls, plain = {}, {}
    for s, (proc, port) in routers.items():
        pools.append(HTTPPool(port, args.conns))
        path = "/v1/chat/completions"
        calls[s] = (http_caller(pools[-1], path, workload.bodies(POLICY)),
                    proc.pid, f"http://127.0.0.1:{port}/metrics")  # fmt: skip
        plain[s] = http_caller(pools[-1], path, PLAIN_BODY)
    raw: dict[str, list[dict[str, Any]]] = {s: [] for s in routers}
    try:
        for call, _pid, _m in calls.values():  # warm up
            await closed_loop(call, 8, 2.0, None)
        for rep in range(args.repeats):
            seq = await interleaved_sequential({s: c[0] for s, c in calls.items()}, args.n_seq)
            seq_plain = await interleaved_sequential(plain, args.n_seq)
            order = list(calls)[rep % len(calls) :] + list(calls)[: rep % len(calls)]
            for s in order:  # each system first in some repeat: no order effect
                call, pid, metrics = calls[s]
                res: dict[str, Any] = {"sequential": seq[s], "sequential_plain": seq_plain[s]}
                ref = (seq[s]["p50_ms"] or 1.0) / 1000
                res["max"] = await closed_loop(call, args.conc, args.seconds, pid)
                res["max"]["drain_s"] = await drain(call, ref)
                for rps in args.rates:
                    h0 = added_histogram(metrics, POLICY)
                    r = await open_loop(call, rps, args.seconds, args.grace)
                    r["router_self_added"] = histogram_quantiles(
                        h0, added_histogram(metrics, POLICY)
                    )
                    r["drain_s"] = await drain(call, ref)
                    res[f"rps_{rps}"] = r
                raw[s].append(res)
                per_cpu = res["max"].get("rps_per_cpu_s") or 0
                print(
                    f"  rep {rep + 1} {s:8s} seq p50 {seq[s]['p50_ms']:.2f} ms"
                    f" (plain {seq_plain[s]['p50_ms']:.2f})"
                    f" | max {res['max']['rps']:.0f} RPS ({per_cpu:.0f}/CPU-s)",
                    flush=True,
                )
    finally:
        for p in pools:
            p.close()
    return raw


# -- durability -----------------------------------------------------------------------
async def _load(port: int, until: float, answered: list, cases: list) -> None:
    import httpx

    headers = {"authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10
    ) as c:

        async def worker(i: int) -> None:
            n = 0
            while time.monotonic() < until:
                model = "review" if n % 5 == 0 else POLICY
                body = {"model": model, "messages": [{"role": "user", "content": f"q {i} {n}"}]}
                n += 1
                try:
                    r = await c.post("/v1/chat/completions", content=orjson.dumps(body))
                except Exception:
                    return
                if r.status_code == 200:
                    answered.append((r.headers["x-slmfleet-request-id"], time.monotonic()))
                    if "x-slmfleet-review-case" in r.headers:
                        cases.append(r.headers["x-slmfleet-review-case"])

        await asyncio.gather(*(worker(i) for i in range(8)))


def durability(cfg: Path, core: int, store: str, work: Path, seconds: float) -> dict[str, Any]:
    from slmfleet.telemetry.store import open_store

    proc, port = start_router(cfg, core, store, work / "durability.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", 600, proc)
        answered: list[tuple[str, float]] = []
        cases: list[str] = []
        killed_at = time.monotonic() + seconds
        loop = asyncio.new_event_loop()
        task = loop.create_task(_load(port, killed_at + 5, answered, cases))
        loop.run_until_complete(asyncio.sleep(max(0.0, killed_at - time.monotonic())))
        os.killpg(proc.pid, signal.SIGKILL)
        loop.run_until_complete(task)
        loop.close()
        proc.wait(timeout=10)
    finally:
        stop_proc(proc)
    st = open_store(store)
    try:
        stored = st.decision_ids()
        lost = [(rid, at) for rid, at in answered if rid not in stored]
        lost_cases = [c for c in cases if st.get_case(c) is None]
    finally:
        st.close()
    return {
        "answered": len(answered),
        "cases_answered": len(cases),
        "lost": len(lost),
        "oldest_lost_s_before_kill": round(max((killed_at - at for _, at in lost), default=0), 3),
        "cases_lost": len(lost_cases),
    }


def run(args) -> dict[str, Any]:
    from tests.fixtures.postgres import PostgresServer, _bindir

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("needs 2 cores: one for the routers, one for load + upstream + database")
    busy = core_busy(cores[:2])
    proxy_core, client_core = sorted(cores[:2], key=lambda c: busy[c])
    os.sched_setaffinity(0, {client_core})
    with contextlib.suppress(OSError):
        os.nice(-10)
    work = Path(tempfile.mkdtemp(prefix="slmfleet-logbench-"))
    os.chmod(work, 0o755)
    bindir = _bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries are missing (make system-deps)")
    pg = PostgresServer(work / "pg", bindir)
    (work / "pg").mkdir()
    os.chmod(work / "pg", 0o755)
    procs: list[Any] = []
    loads = [os.getloadavg()[0]]
    try:
        pg.init().start()
        upstream_port, http_port = free_port(), free_port()
        fast = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "_fast_upstream.py"),
             "--grpc-port", str(upstream_port), "--http-port", str(http_port)],
            stdout=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        procs.append(fast)
        if fast.stdout.readline().strip() != b"ready":
            raise RuntimeError("fast upstream did not start")
        workload = Workload()
        cfg = work / "router.json"
        cfg.write_bytes(orjson.dumps(router_config(workload, f"127.0.0.1:{upstream_port}")))
        stores = {"off": None, "sqlite": f"sqlite:///{work / 'decisions.db'}", "postgres": pg.url}
        routers = {}
        for s in SYSTEMS:
            routers[s] = start_router(cfg, proxy_core, stores[s], work / f"router-{s}.log")
            procs.append(routers[s][0])
        for proc, port in routers.values():
            wait_http(f"http://127.0.0.1:{port}/readyz", 900, proc)
        raw = uvloop.run(measure(args, workload, routers))
        logs = {s: readyz(port).get("decision_log") for s, (_p, port) in routers.items()}
        loads.append(os.getloadavg()[0])
        for p in list(procs[1:]):
            stop_proc(p)
            procs.remove(p)
        dur = {}
        for s in ("sqlite", "postgres"):
            dur[s] = [durability(cfg, proxy_core, stores[s], work, args.kill_after)
                      for _ in range(args.kills)]  # fmt: skip
        loads.append(os.getloadavg()[0])
    finally:
        for p in reversed(procs):
            stop_proc(p)
        pg.destroy()
        shutil.rmtree(work, ignore_errors=True)
    return {"raw": raw, "writer": logs, "durability": dur, "loads": loads,
            "cores": {"routers": proxy_core, "client_upstream_db": client_core},
            "core_busy_before": {str(c): round(v, 3) for c, v in busy.items()}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n-seq", type=int, default=400)
    ap.add_argument(
        "--rates",
        type=int,
        nargs="+",
        default=[25, 50],
        help="fixed rates, well under what one router core sustains with routing on (~120 "
        "RPS here): near saturation, queueing turns the machine's noise into tens of ms",
    )
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--grace", type=float, default=5.0)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--conc", type=int, default=32)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--kill-after", type=float, default=4.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "decision_log_overhead"))
    args = ap.parse_args()
    t0 = time.monotonic()
    got = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".raw.json").write_text(json.dumps(got, indent=1, default=str) + "\n")
    summary = summarize(got["raw"], args.rates)
    result = {
        "summary": summary,
        "writer": got["writer"],
        "durability": got["durability"],
        "machine": machine(),
        "load_average_1m": got["loads"],
        "cores": got["cores"],
        "core_busy_before": got["core_busy_before"],
        "method": {
            k: getattr(args, k)
            for k in (
                "repeats",
                "n_seq",
                "rates",
                "seconds",
                "grace",
                "conns",
                "conc",
                "kills",
                "kill_after",
            )
        },
        "duration_s": round(time.monotonic() - t0, 1),
        "raw": got["raw"],
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".raw.json").unlink(missing_ok=True)
    text = write_md(out.with_suffix(".md"), result)
    print()
    print(text)
    print(f"saved {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
