"""Load over every replica: 4 -> 8 real Triton servers under steady load.

Eight ``tritonserver`` processes (nvidia-pytriton wheel, CPU) serve the same stand-in
(``generalist``, 10 ms per token, 4 tokens an answer: ~40 ms a request, one model
instance each). The router (``python -m slmfleet.router``, as deployed) starts with
four of them listed in its config file (``SpecialistConfig.replicas``, how the local
fleet lists its own servers) under a steady open-loop load; then the file lists all
eight (the router reloads it). Every second, each server's own count of completed
requests (Triton's ``nv_inference_request_success``) is read.

Reported: each replica's share of the requests served from 10 s to 20 s after the
scale-up, against its fair share (1/8; target within +-20%), how long each new replica
took to serve its first request, and errors. Output: benchmarks/results/router_spread.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from _bench_procs import free_port, machine, stop_proc, wait_http  # noqa: E402
from _loadgen import HTTPPool, http_caller, open_loop  # noqa: E402

from slmfleet.local import TritonServer, write_model_repository  # noqa: E402
from slmfleet.local.models import StandIn  # noqa: E402
from slmfleet.router.triton.balance import within_fair_share  # noqa: E402

_SUCCESS = re.compile(r'^nv_inference_request_success\{model="gen",version="1"\} (\S+)$', re.M)
TOLERANCE = 0.20


def served(server: TritonServer) -> int:
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    found = _SUCCESS.search(text)
    return int(float(found.group(1))) if found else 0


def config(replicas: list[str]) -> bytes:
    return orjson.dumps(
        {
            "version": 1,
            "specialists": [
                {
                    "id": "bench/gen",
                    "endpoint": "gen.bench.svc:8001",
                    "replicas": replicas,
                    "tritonModel": "gen",
                    "backend": "python",
                    "ready": True,
                }
            ],
            "policies": [
                {
                    "modelName": "gen",
                    "id": "bench/gen",
                    "specialists": ["bench/gen"],
                    "routing": {"semantic": {"enabled": False}},
                    "cascade": [{"name": "routed", "routed": True}],
                }
            ],
        }
    )


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


async def drive(args, port: int, servers: list[TritonServer], cfg: Path) -> dict:
    body = orjson.dumps(
        {"model": "gen", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    )
    pool = HTTPPool(port, 256)
    call = http_caller(pool, "/v1/chat/completions", itertools.repeat(("short", body)))
    samples: list[tuple[float, list[int]]] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            counts = await asyncio.to_thread(lambda: [served(s) for s in servers])
            samples.append((time.monotonic(), counts))
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample())
    t0 = time.monotonic()
    total = args.before_s + args.after_s
    load = asyncio.create_task(open_loop(call, args.rps, total, 10.0))
    await asyncio.sleep(args.before_s)
    write_atomic(cfg, config([s.grpc_url for s in servers]))
    scaled_at = time.monotonic()
    result = await load
    stop.set()
    await sampler
    pool.close()
    return {"load": result, "samples": samples, "t0": t0, "scaled_at": scaled_at}


def analyse(run: dict, n_before: int, window: tuple[float, float]) -> dict:
    samples, scaled = run["samples"], run["scaled_at"]

    def at(t: float) -> list[int]:
        return min(samples, key=lambda s: abs(s[0] - t))[1]

    a, b = at(scaled + window[0]), at(scaled + window[1])
    counts = [y - x for x, y in zip(a, b, strict=True)]
    total = sum(counts)
    fair = total / len(counts) if counts else 0
    first = {}
    base = at(scaled)
    for i in range(n_before, len(base)):
        t = next((ts for ts, c in samples if ts >= scaled and c[i] > base[i]), None)
        first[i] = None if t is None else round(t - scaled, 2)
    per_second = []
    for (t1, c1), (t2, c2) in itertools.pairwise(samples):
        per_second.append(
            {
                "t": round(t2 - scaled, 1),
                "rps": [round((y - x) / (t2 - t1), 1) for x, y in zip(c1, c2, strict=True)],
            }
        )
    return {
        "window_s_after_scale_up": list(window),
        "counts": counts,
        "shares": [round(c / total, 4) if total else 0 for c in counts],
        "relative_deviation_from_fair": [
            round((c - fair) / fair, 3) if fair else None for c in counts
        ],
        "within_20_percent": within_fair_share(counts, TOLERANCE),
        "seconds_to_first_request_of_new_replicas": first,
        "per_second": per_second,
    }


def write_md(path: Path, r: dict) -> None:
    a = r["analysis"]
    dev = a["relative_deviation_from_fair"]
    lines = [
        "# Load over every replica: 4 -> 8 real Triton servers under steady load",
        "",
        "Generated by `benchmarks/router_spread.py` (`make bench`); raw per-second counts in "
        "`router_spread.json`.",
        "",
        f"Steady open-loop load of {r['method']['rps']} RPS (~40 ms a request); 4 replicas "
        f"for {r['method']['before_s']} s, then the router's config lists 8. Shares of the "
        f"requests each replica served {a['window_s_after_scale_up'][0]:g}-"
        f"{a['window_s_after_scale_up'][1]:g} s after the scale-up (Triton's own counts):",
        "",
        "| replica | " + " | ".join(f"{i}{' (new)' if i >= 4 else ''}" for i in range(8)) + " |",
        "|---|" + "---|" * 8,
        "| requests | " + " | ".join(str(c) for c in a["counts"]) + " |",
        "| share | " + " | ".join(f"{s:.1%}" for s in a["shares"]) + " |",
        "| vs fair share (12.5%) | " + " | ".join(f"{d:+.0%}" for d in dev) + " |",
        "",
        f"Target: every replica within +-20% of its fair share 10 s after the scale-up: "
        f"{'met' if a['within_20_percent'] else 'NOT met'} (largest deviation "
        f"{max(abs(d) for d in dev):.0%}).",
        f"New replicas served their first request "
        f"{', '.join(f'{v} s' for v in a['seconds_to_first_request_of_new_replicas'].values())}"
        " after the config change (sampled every second).",
        f"Load: {r['load']['completed']} requests completed, {r['load']['errors']} errors, "
        f"{r['load']['unfinished']} unfinished ({r['load'].get('error_kinds')}); "
        f"p50 {r['load']['p50_ms']:.1f} ms, p99 {r['load']['p99_ms']:.1f} ms.",
        "",
        "## Method",
        "",
        f"- Machine: {r['machine']['cpu']}, {r['machine']['cpus']} cores, shared with other "
        f"work; 1-minute load average {r['load_average_1m']}.",
        "- Eight `tritonserver` processes, each with the `generalist` stand-in (Python "
        "backend, one instance, `token_delay_ms` 10) and `max_tokens` 4 per request; the "
        "router as deployed (`python -m slmfleet.router --config FILE`), balancing each "
        "request to the replica with the fewest requests in flight (ties in turn); the load "
        "generator is `benchmarks/_loadgen.py`'s open loop.",
        "",
    ]
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rps", type=float, default=80.0)
    ap.add_argument("--before-s", type=float, default=8.0)
    ap.add_argument("--after-s", type=float, default=22.0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "router_spread"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="slmfleet-spread-"))
    servers: list[TritonServer] = []
    router = None
    loads = [os.getloadavg()[0]]
    try:
        repo = write_model_repository(
            work / "models", {"gen": StandIn("generalist", {"token_delay_ms": "10"})}
        )
        for i in range(8):
            s = TritonServer(repo, log_path=work / f"triton-{i}.log", startup_timeout=300)
            servers.append(s)
            s.start()
            print(f"triton {i} ready on {s.grpc_url}", flush=True)
        cfg = work / "router.json"
        write_atomic(cfg, config([s.grpc_url for s in servers[:4]]))
        port = free_port()
        router = subprocess.Popen(
            [sys.executable, "-m", "slmfleet.router", "--config", str(cfg), "--host",
             "127.0.0.1", "--port", str(port), "--poll-interval", "0.2", "--no-access-log"],
            env=dict(os.environ, PYTHONPATH=str(ROOT / "operator")),
            stdout=subprocess.DEVNULL, stderr=(work / "router.log").open("wb"),
            start_new_session=True,
        )  # fmt: skip
        wait_http(f"http://127.0.0.1:{port}/readyz", 120, router)
        run = uvloop.run(drive(args, port, servers, cfg))
        loads.append(os.getloadavg()[0])
    finally:
        stop_proc(router)
        if (work / "router.log").exists():
            errs = [ln for ln in (work / "router.log").read_text().splitlines() if "rror" in ln]
            print("router log errors:", *errs[-10:], sep="\n")
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)
    analysis = analyse(run, 4, (10.0, 20.0))
    load = {k: v for k, v in run["load"].items() if k != "by_tag"}
    result = {
        "analysis": analysis,
        "load": load,
        "method": {"rps": args.rps, "before_s": args.before_s, "after_s": args.after_s},
        "machine": machine(),
        "load_average_1m": [round(x, 2) for x in loads],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    write_md(out.with_suffix(".md"), result)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
