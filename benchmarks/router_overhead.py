"""Router overhead: added latency and max RPS per core of the slmfleet router, with
semantic routing on (the headline: what a new user runs) and off, versus calling the
upstream directly and versus the LiteLLM proxy, side by side in one run.

Systems: ``router`` - a policy over 10 CLINC150 domains, 50 example requests each from
train, every request a different question the classifier was not fitted on (see
_clinc_workload.py); ``router_plain`` - the same router process, a one-specialist policy
with semantic routing off; ``direct`` - the router's own gRPC client calling the upstream
with no HTTP and no routing, in a process of its own pinned to the proxy core (the same
core budget as a proxy: _direct_client.py); ``litellm`` - the LiteLLM proxy.

Upstreams: ``fast`` (benchmarks/_fast_upstream.py: answers instantly over Triton's gRPC
streaming protocol and over OpenAI's HTTP format, so the proxy is the bottleneck) and
``triton`` (the real tritonserver with the CPU stand-in ``generalist``).

Placement (2 cores): the proxy under test (or the direct client) on one core, the
upstreams and this load generator on the other. Load: open loop at fixed rates, latency
from each request's scheduled send time (no coordinated omission); max RPS: closed loop,
with the proxy's CPU over that window (requests per CPU-second: its one-core ceiling,
robust to other jobs sharing the core); for the routed policy, a run at 500 RPS where
every 20th request carries a 3,000-character prompt, the short requests' latency kept
apart. Every measurement is repeated ``--repeats`` times, interleaved across systems;
medians reported.

LiteLLM is installed on first run into its own venv (~/.cache/slmfleet/litellm-venv).
Output: a table on stdout, benchmarks/results/router_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from _bench_procs import (  # noqa: E402
    API_KEY,
    PinnedTriton,
    core_busy,
    ensure_litellm,
    free_port,
    litellm_config,
    machine,
    stop_proc,
    versions,
    wait_http,
)
from _clinc_workload import Workload  # noqa: E402
from _loadgen import PROMPT, HTTPPool, http_caller  # noqa: E402
from _overhead_measure import measure  # noqa: E402
from _overhead_report import summarize, table, verdicts, write_md  # noqa: E402

from slmfleet.local import default_fleet, write_model_repository  # noqa: E402

UPSTREAMS = ("fast", "triton")
LONG_EVERY = 20  # 5% of the mixed run's requests carry a 3,000-character prompt
MIN_CONFIDENCE = 0.1


def chat_body(model: str) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": PROMPT}]})


def router_config(workload: Workload, upstreams: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """Per upstream: a routed policy over the 10 CLINC domains (out-of-domain requests
    fall back to one more specialist on the same upstream, so every request costs the
    same upstream work) and a plain one-specialist policy with routing off."""
    specialists, policies = [], []
    for name, (endpoint, model) in upstreams.items():
        clinc = workload.specialists(f"clinc-{name}", endpoint, model)
        plain = {
            "id": f"bench/{name}",
            "endpoint": endpoint,
            "tritonModel": model,
            "backend": "python",
            "ready": True,
            "cost": {"inputPerMillionUsd": 0.1, "outputPerMillionUsd": 0.2},
        }
        specialists += [*clinc, plain]
        policies.append(
            {
                "modelName": f"routed-{name}",
                "id": f"bench/routed-{name}",
                "specialists": [s["id"] for s in clinc],
                "routing": {"semantic": {"minConfidence": MIN_CONFIDENCE}},
                "cascade": [
                    {"name": "routed", "routed": True},
                    {"name": "fallback", "specialist": f"bench/{name}"},
                ],
            }
        )
        policies.append(
            {
                "modelName": f"bench-{name}",
                "id": f"bench/{name}",
                "specialists": [f"bench/{name}"],
                "routing": {"semantic": {"enabled": False}},
                "cascade": [{"name": "routed", "routed": True}],
            }
        )
    return {"version": 1, "specialists": specialists, "policies": policies}


def run(args) -> dict[str, Any]:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("needs 2 cores: one for the proxies, one for load + upstreams")
    busy = core_busy(cores[:2])
    # The machine is shared and other jobs pin themselves too: the proxies get the core
    # that was idler just before the run.
    proxy_core, client_core = sorted(cores[:2], key=lambda c: busy[c])
    os.sched_setaffinity(0, {client_core})  # children inherit this unless taskset
    # The machine is shared: a higher priority (inherited by every process started here,
    # proxies included) keeps other jobs from taking turns on the measured cores.
    with contextlib.suppress(OSError):
        os.nice(-10)
    litellm_exe = None if args.skip_litellm else ensure_litellm()
    work = Path(tempfile.mkdtemp(prefix="slmfleet-bench-"))
    procs: list[subprocess.Popen] = []
    triton: PinnedTriton | None = None
    loads: list[float] = []
    try:
        fast_grpc_port = fast_http_port = None
        if "fast" in args.upstreams:
            fast_grpc_port, fast_http_port = free_port(), free_port()
            fast = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "benchmarks" / "_fast_upstream.py"),
                    "--grpc-port",
                    str(fast_grpc_port),
                    "--http-port",
                    str(fast_http_port),
                ],
                stdout=subprocess.PIPE,
                start_new_session=True,
            )
            procs.append(fast)
            if fast.stdout.readline().strip() != b"ready":
                raise RuntimeError("fast upstream did not start")
        if "triton" in args.upstreams:
            repo = write_model_repository(
                work / "models", {"generalist": default_fleet()["generalist"]}
            )
            triton = PinnedTriton(repo, core=client_core, log_path=work / "triton.log")
            triton.start()
        ups: dict[str, tuple[str, str]] = {}
        if fast_grpc_port:
            ups["fast"] = (f"127.0.0.1:{fast_grpc_port}", "fast")
        if triton is not None:
            ups["triton"] = (triton.grpc_url, "generalist")
        workload = Workload()
        cfg = router_config(workload, ups)
        (work / "router.json").write_bytes(orjson.dumps(cfg))
        router_port = free_port()
        router_cmd = [
            "taskset",
            "-c",
            str(proxy_core),
            sys.executable,
            "-m",
            "slmfleet.router",
            "--config",
            str(work / "router.json"),
            "--host",
            "127.0.0.1",
            "--port",
            str(router_port),
            "--log-level",
            "info",  # as deployed: one JSON access line per request (to /dev/null here)
        ]
        env = dict(os.environ, PYTHONPATH=str(ROOT / "operator"), SLMFLEET_API_KEYS=API_KEY)
        router = subprocess.Popen(
            router_cmd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(work / "router.log").open("wb"),
            start_new_session=True,
        )
        procs.append(router)
        litellm = None
        litellm_port = free_port()
        if litellm_exe is not None:
            (work / "litellm.yaml").write_text(
                litellm_config(fast_http_port, triton.http_port if triton else None)
            )
            lenv = dict(
                os.environ,
                LITELLM_LOG="ERROR",
                LITELLM_TELEMETRY="False",
                LITELLM_LOCAL_MODEL_COST_MAP="True",
                DISABLE_ADMIN_UI="True",
                NO_DOCS="True",
            )
            for k in ("DATABASE_URL", "LITELLM_MASTER_KEY", "REDIS_HOST"):
                lenv.pop(k, None)
            litellm = subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    str(proxy_core),
                    str(litellm_exe),
                    "--config",
                    str(work / "litellm.yaml"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(litellm_port),
                    "--num_workers",
                    "1",
                ],
                env=lenv,
                stdout=(work / "litellm.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=work,
            )
            procs.append(litellm)
        wait_http(f"http://127.0.0.1:{router_port}/readyz", 600, router)
        if litellm is not None:
            try:
                wait_http(f"http://127.0.0.1:{litellm_port}/health/liveliness", 300, litellm)
            except RuntimeError:
                print((work / "litellm.log").read_text()[-3000:], file=sys.stderr)
                raise
        loads.append(os.getloadavg()[0])
        raw = uvloop.run(
            _measure_all(
                args,
                workload,
                ups,
                router_port,
                litellm_port if litellm else None,
                router.pid,
                litellm.pid if litellm else None,
                loads,
                proxy_core,
            )
        )
        loads.append(os.getloadavg()[0])
    finally:
        for p in reversed(procs):
            stop_proc(p)
        if triton is not None:
            triton.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "raw": raw,
        "loads": loads,
        "core_busy_before": {str(c): round(v, 3) for c, v in busy.items()},
        "litellm_exe": litellm_exe,
        "cores": {"proxy": proxy_core, "client_and_upstreams": client_core},
    }


async def _measure_all(
    args, workload, ups, router_port, litellm_port, router_pid, litellm_pid, loads, proxy_core
):
    targets: dict[str, dict[str, Any]] = {}
    pools: list[HTTPPool] = []
    metrics = f"http://127.0.0.1:{router_port}/metrics"

    def pool(port: int) -> HTTPPool:
        pools.append(HTTPPool(port, args.conns))
        return pools[-1]

    for u, (endpoint, model) in ups.items():
        path = "/v1/chat/completions"
        targets[u] = {
            "direct": {"endpoint": endpoint, "model": model},
            "router": {
                "call": http_caller(pool(router_port), path, workload.bodies(f"routed-{u}")),
                "mix_call": http_caller(
                    pool(router_port), path, workload.bodies(f"routed-{u}", LONG_EVERY)
                ),
                "pid": router_pid,
                "metrics": metrics,
                "policy": f"routed-{u}",
            },
            "router_plain": {
                "call": http_caller(pool(router_port), path, chat_body(f"bench-{u}")),
                "pid": router_pid,
                "metrics": metrics,
                "policy": f"bench-{u}",
            },
        }
        if litellm_port:
            targets[u]["litellm"] = {
                "call": http_caller(pool(litellm_port), path, chat_body(f"bench-{u}")),
                "pid": litellm_pid,
            }

    async def sample_load() -> None:
        while True:
            await asyncio.sleep(5)
            loads.append(os.getloadavg()[0])

    sampler = asyncio.create_task(sample_load())
    rates = {"fast": args.rates, "triton": args.triton_rates}
    try:
        return await measure(args, targets, rates, proxy_core)
    finally:
        sampler.cancel()
        for p in pools:
            p.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-seq", type=int, default=400)
    ap.add_argument("--rates", type=int, nargs="+", default=[100, 500])
    ap.add_argument(
        "--triton-rates",
        type=int,
        nargs="+",
        default=[20, 50],
        help="fixed rates on the real Triton: its Python-backend stand-in streams ~20 "
        "responses per answer and tops out near 100 RPS",
    )
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--grace", type=float, default=5.0)
    ap.add_argument(
        "--mix-rate",
        type=int,
        default=100,
        help="the fixed rate (one of --rates) of the run with 5%% 3,000-character prompts, "
        "compared with the all-short run at that rate",
    )
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--conc", type=int, default=32)
    ap.add_argument("--conc-slow", type=int, default=16)
    ap.add_argument("--upstreams", nargs="+", default=list(UPSTREAMS), choices=UPSTREAMS)
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "router_overhead"))
    args = ap.parse_args()
    t0 = time.monotonic()
    got = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The measurements first: a report bug must not lose half an hour of them.
    out.with_suffix(".raw.json").write_text(json.dumps(got, indent=1, default=str) + "\n")
    summary = summarize(
        got["raw"], {"fast": args.rates, "triton": args.triton_rates}, args.mix_rate
    )
    result = {
        "summary": summary,
        "verdicts": verdicts(summary),
        "machine": machine(),
        "load_average_1m": got["loads"],
        "cores": got["cores"],
        "core_busy_before": got["core_busy_before"],
        "versions": versions(got["litellm_exe"]),
        "method": {
            k: getattr(args, k)
            for k in (
                "repeats",
                "n_seq",
                "rates",
                "triton_rates",
                "seconds",
                "grace",
                "conns",
                "conc",
                "conc_slow",
                "mix_rate",
            )
        },
        "duration_s": round(time.monotonic() - t0, 1),
        "raw": got["raw"],
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".raw.json").unlink(missing_ok=True)
    write_md(out.with_suffix(".md"), result)
    print()
    print(table(summary))
    print()
    for v in result["verdicts"]:
        print("-", v)
    print(f"load average (1 min) during the run: {min(got['loads']):.2f}..{max(got['loads']):.2f}")
    print(f"saved {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
