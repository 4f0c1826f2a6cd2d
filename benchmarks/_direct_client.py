"""The direct baseline of router_overhead.py, in a process of its own.

It calls the upstream with the router's own gRPC client (no HTTP, no routing) and runs
the same phases as the proxies' load generator. Started pinned to the proxy core, so the
direct path gets the same core budget as a proxy: one core for the client side, the
other for the upstream (the proxies' load generator shares that one with the upstream).

Run: python _direct_client.py ENDPOINT MODEL PLAN_JSON; prints the results as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))

from _loadgen import (
    CALL_TIMEOUT_S,
    closed_loop,
    drain,
    grpc_caller,
    open_loop,
    sequential,
)

from slmfleet.router.triton import TritonPool


async def main(endpoint: str, model: str, plan: dict) -> dict:
    pool = TritonPool()
    call = grpc_caller(pool, endpoint, model)
    try:
        if plan.get("warmup"):
            for _ in range(30):
                await asyncio.wait_for(call(), CALL_TIMEOUT_S)
            await closed_loop(call, 8, 1.0, None)
        res: dict = {"sequential": await sequential(call, plan["n_seq"], 8.0)}
        ref_s = (res["sequential"]["p50_ms"] or 1.0) / 1000
        res["max"] = await closed_loop(call, plan["conc"], plan["seconds"], None)
        for rps in plan["rates"]:
            if rps > 0.9 * res["max"]["rps"]:
                res[f"rps_{rps}"] = {"skipped": f"upstream max {res['max']['rps']:.0f} RPS"}
                continue
            res[f"rps_{rps}"] = await open_loop(call, rps, plan["seconds"], plan["grace"])
            res[f"rps_{rps}"]["drain_s"] = await drain(call, ref_s)
        return res
    finally:
        await pool.close()


if __name__ == "__main__":
    endpoint, model, plan = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    print(json.dumps(uvloop.run(main(endpoint, model, plan))))
