"""Router overhead: the router in front of a real Triton versus calling Triton directly.

Starts tritonserver (CPU stand-in fleet) and the router (``python -m slmfleet.router``)
pinned to one core; the load generator runs on another core and speaks raw HTTP/1.1
keep-alive (so client overhead stays out of the numbers) and gRPC streaming to Triton
with the same protobufs the router uses. Reports, for sequential requests and at a fixed
rate (default 500 RPS): p50/p99 latency direct and through the router, their difference
(added latency), the router's own added-latency histogram, and the router's max RPS
with closed-loop concurrency. Results: benchmarks/results/router_overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from tritonclient.grpc import service_pb2_grpc  # noqa: E402

from slmfleet.local import TritonServer, default_fleet, write_model_repository  # noqa: E402
from slmfleet.router.upstream import CHANNEL_OPTIONS, build_request  # noqa: E402

MODEL = "extractor"
PROMPT = "order id AB-12345"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] * 1000 if xs else float("nan")


class RawHTTP:
    """Minimal keep-alive HTTP/1.1 client: one connection, one request at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.w is None:
            self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)
        self.w.write(
            b"POST " + path.encode() + b" HTTP/1.1\r\nhost: r\r\ncontent-type: "
            b"application/json\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        head = await self.r.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        m = re.search(rb"(?i)content-length: (\d+)", head)
        data = await self.r.readexactly(int(m.group(1))) if m else b""
        return status, data


async def direct_call(stub) -> None:
    call = stub.ModelStreamInfer(iter((build_request(MODEL, PROMPT, {}, ""),)), timeout=10)
    while True:
        msg = await call.read()
        if msg is grpc.aio.EOF:
            break
        if msg.error_message:
            raise RuntimeError(msg.error_message)
        p = msg.infer_response.parameters.get("triton_final_response")
        if p is not None and p.bool_param:
            break
    call.cancel()


BODY = orjson.dumps({"model": "bench", "messages": [{"role": "user", "content": PROMPT}]})


async def sequential(fn, n: int) -> list[float]:
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        await fn()
        lat.append(time.perf_counter() - t)
    return lat


async def fixed_rate(make_fn, rps: float, seconds: float, conns: int) -> tuple[list[float], int]:
    """Open loop: a request every 1/rps s on a pool of connections; latency from schedule."""
    fns = [make_fn() for _ in range(conns)]
    free: asyncio.Queue = asyncio.Queue()
    for f in fns:
        free.put_nowait(f)
    lat: list[float] = []
    errors = 0
    total = int(rps * seconds)
    start = time.perf_counter()

    async def one(i: int) -> None:
        nonlocal errors
        due = start + i / rps
        fn = await free.get()
        try:
            await fn()
            lat.append(time.perf_counter() - due)
        except Exception:
            errors += 1
        finally:
            free.put_nowait(fn)

    tasks = []
    for i in range(total):
        delay = start + i / rps - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return lat, errors


async def max_rps(make_fn, conc: int, seconds: float) -> float:
    done = 0
    end = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        fn = make_fn()
        while time.perf_counter() < end:
            await fn()
            done += 1

    t = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(conc)))
    return done / (time.perf_counter() - t)


def router_added_hist(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    buckets = [
        (float(m.group(1)), float(m.group(2)))
        for m in re.finditer(
            r'slmfleet_router_added_latency_seconds_bucket\{le="([0-9.e+-]+)",policy="bench"\} '
            r"([0-9.e+]+)",
            text,
        )
    ]
    total = buckets[-1][1] if buckets else 0
    out = {}
    for q in (0.5, 0.99):
        le = next((b for b, c in buckets if c >= q * total), float("nan"))
        out[f"p{int(q * 100)}_le_ms"] = le * 1000
    return out


async def run(args, triton: TritonServer, router_port: int) -> dict:
    channel = grpc.aio.insecure_channel(triton.grpc_url, options=CHANNEL_OPTIONS)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

    def make_direct():
        return lambda: direct_call(stub)

    def make_router():
        c = RawHTTP(router_port)

        async def f():
            status, _ = await c.post("/v1/chat/completions", BODY)
            if status != 200:
                raise RuntimeError(status)

        return f

    # warm up
    await sequential(make_direct(), 50)
    await sequential(make_router(), 50)
    res: dict = {"model": MODEL, "requests_sequential": args.n}
    d = await sequential(make_direct(), args.n)
    r = await sequential(make_router(), args.n)
    res["sequential"] = {
        "direct_p50_ms": pct(d, 50),
        "direct_p99_ms": pct(d, 99),
        "router_p50_ms": pct(r, 50),
        "router_p99_ms": pct(r, 99),
        "added_p50_ms": pct(r, 50) - pct(d, 50),
        "added_p99_ms": pct(r, 99) - pct(d, 99),
    }
    d, de = await fixed_rate(make_direct, args.rps, args.seconds, args.conns)
    r, re_ = await fixed_rate(make_router, args.rps, args.seconds, args.conns)
    res[f"at_{int(args.rps)}_rps"] = {
        "direct_p50_ms": pct(d, 50),
        "direct_p99_ms": pct(d, 99),
        "direct_errors": de,
        "router_p50_ms": pct(r, 50),
        "router_p99_ms": pct(r, 99),
        "router_errors": re_,
        "added_p50_ms": pct(r, 50) - pct(d, 50),
        "added_p99_ms": pct(r, 99) - pct(d, 99),
    }
    res["router_self_reported_added"] = router_added_hist(router_port)
    res["max_rps"] = {
        "direct": await max_rps(make_direct, args.conc, args.seconds),
        "router_one_core": await max_rps(make_router, args.conc, args.seconds),
        "concurrency": args.conc,
    }
    await channel.close()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--rps", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--conc", type=int, default=16)
    ap.add_argument("--router-core", type=int, default=0)
    ap.add_argument("--client-core", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/router_overhead.json"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="slmfleet-bench-"))
    repo = write_model_repository(work / "models", {MODEL: default_fleet()[MODEL]})
    cores = os.cpu_count() or 1
    with TritonServer(repo, log_path=work / "triton.log") as triton:
        cfg = {
            "version": 1,
            "specialists": [
                {
                    "id": "bench/x",
                    "endpoint": triton.grpc_url,
                    "tritonModel": MODEL,
                    "backend": "python",
                    "ready": True,
                }
            ],
            "policies": [
                {
                    "modelName": "bench",
                    "id": "bench/p",
                    "specialists": ["bench/x"],
                    "routing": {"semantic": {"enabled": False}},
                    "cascade": [{"name": "routed", "routed": True}],
                }
            ],
        }
        (work / "router.json").write_bytes(orjson.dumps(cfg))
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "slmfleet.router",
            "--config",
            str(work / "router.json"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        if cores > 1:
            cmd = ["taskset", "-c", str(args.router_core), *cmd]
            os.sched_setaffinity(0, {args.client_core % cores})
        env = dict(os.environ, PYTHONPATH=str(ROOT / "operator"))
        router = subprocess.Popen(cmd, env=env)
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            res = asyncio.run(run(args, triton, port))
        finally:
            router.terminate()
            router.wait(timeout=30)
    res["machine"] = {
        "cpus": cores,
        "router_pinned_core": args.router_core,
        "note": "tritonserver shares the client core; LiteLLM not measured",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
