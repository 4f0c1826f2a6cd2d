"""Pools on the real tritonserver: adding a member to a running pool, and a cold member's
first request.

Real parts: the wheel's tritonserver (CPU, explicit model control), the repository
sidecar's code laying members out from a claim directory, the operator's residency code
(``PoolLoop``: the router's metrics -> demand -> ``lru.plan`` -> Triton's repository API),
the real router and the official openai client (see benchmarks/_pool_rig.py). Members
are Python-backend CPU stand-ins: a real model's weights load takes longer (vLLM: tens
of seconds for a 1-3B model); the figures are the machinery's own cost.

1. Add a member (no restart): with the server running and its members loaded, a new
   member is laid out (``sync_once``) and loaded by the residency loop; measured: layout
   time, the load call, and the time until the router answers from it. The server's pid
   is checked unchanged.
2. Cold load on first request: a pool of capacity 2 x 1Gi holding 3 members; requests
   go round-robin, so every request names the member evicted least recently (it is
   cold). Measured: request -> full answer through the router (held while loading) and
   Triton's load time within it; warm requests (the same member twice) as the reference.

Usage: python benchmarks/pool_load.py [--adds 6] [--cold 9]
Results: benchmarks/results/pool_load.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pool_rig import Rig, member

from slmfleet.api.pool import SLMPoolSpec

RESULTS = Path(__file__).resolve().parent / "results"


def ask(client: openai.OpenAI, model: str) -> float:
    t0 = time.monotonic()
    out = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"question for {model}"}], timeout=180
    )
    assert (out.choices[0].message.content or "").endswith(f"{model} answers")
    return time.monotonic() - t0


def wait(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.05)


def summary(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"n": len(xs), "median": round(statistics.median(xs), 3), "min": round(xs[0], 3),
            "max": round(xs[-1], 3)}  # fmt: skip


def add_members(adds: int, root: Path) -> dict:
    names = [f"m{i}" for i in range(adds + 1)]
    pool = SLMPoolSpec.model_validate({"resources": {"memory": f"{adds + 1}Gi"}})
    rig = Rig(root, pool, names).start()
    assert rig.triton is not None and rig.loop is not None and rig.router is not None
    client = openai.OpenAI(base_url=rig.router.url + "/v1", api_key="-", max_retries=0)
    rows = []
    try:
        pid = rig.triton.pid
        members = [member(names[0])]
        rig.place(members)
        rig.loop.start()
        wait(lambda: rig.loop.states().get(names[0]) == "Loaded")
        for name in names[1:]:
            members.append(member(name))
            t0 = time.monotonic()
            rig.place(members)
            layout = time.monotonic() - t0
            wait(lambda n=name: rig.loop.states().get(n) == "Loaded")
            loaded = time.monotonic() - t0
            answer = ask(client, name)
            load = next(c.seconds for c in reversed(rig.changes) if c.member == name)
            rows.append({"member": name, "layout_s": round(layout, 3), "load_call_s":
                         round(load, 3), "to_loaded_s": round(loaded, 3),
                         "then_answer_s": round(answer, 3)})  # fmt: skip
            print(rows[-1], flush=True)
        assert rig.triton.pid == pid and rig.triton.is_alive(), "the server restarted"
    finally:
        rig.stop()
    return {
        "rows": rows,
        "to_loaded_s": summary([r["to_loaded_s"] for r in rows]),
        "load_call_s": summary([r["load_call_s"] for r in rows]),
        "server_restarts": 0,
    }


def cold_first_requests(cold: int, root: Path) -> dict:
    names = ["a", "b", "c"]
    pool = SLMPoolSpec.model_validate(
        {"resources": {"memory": "2Gi"}, "residency": {"overcommit": True}}
    )
    rig = Rig(root, pool, names).start()
    assert rig.loop is not None and rig.router is not None
    client = openai.OpenAI(base_url=rig.router.url + "/v1", api_key="-", max_retries=0)
    cold_rows, warm = [], []
    try:
        rig.place([member(n) for n in names])
        rig.loop.start()
        wait(lambda: list(rig.loop.states().values()).count("Loaded") == 2)
        for i in range(cold):
            name = next(n for n, s in rig.loop.states().items() if s != "Loaded")
            before = len(rig.changes)
            took = ask(client, name)
            loads = [c for c in rig.changes[before:] if c.member == name and c.action == "load"]
            cold_rows.append({"member": name, "first_request_s": round(took, 3),
                              "load_s": round(loads[0].seconds, 3) if loads else None})  # fmt: skip
            warm.append(ask(client, name))
            print(cold_rows[-1], f"warm {warm[-1]:.3f}", flush=True)
            if i % 3 == 2:
                time.sleep(0.5)
    finally:
        rig.stop()
    return {"rows": cold_rows,
            "first_request_s": summary([r["first_request_s"] for r in cold_rows]),
            "load_s": summary([r["load_s"] for r in cold_rows if r["load_s"] is not None]),
            "warm_request_s": summary(warm)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adds", type=int, default=6)
    parser.add_argument("--cold", type=int, default=9)
    args = parser.parse_args()
    before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="slmfleet-pool-") as tmp:
        add = add_members(args.adds, Path(tmp) / "add")
        cold = cold_first_requests(args.cold, Path(tmp) / "cold")
    out = {"method": __doc__, "add_member": add, "cold_first_request": cold,
           "load_average_before": before, "load_average_after": os.getloadavg()}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "pool_load.json").write_text(json.dumps(out, indent=2))
    a, c = add, cold
    text = "\n".join([
        "# Pools: adding a member, and a cold member's first request (real tritonserver)",
        "",
        "Python-backend CPU stand-ins: the machinery's own cost; a real model's weight "
        "load adds to both figures.",
        "",
        "| measure | n | median (s) | min | max |",
        "|---|---|---|---|---|",
        *(f"| {label} | {s['n']} | {s['median']} | {s['min']} | {s['max']} |" for label, s in [
            ("add a member: ConfigMap -> loaded (no restart)", a["to_loaded_s"]),
            ("  of which Triton's load call", a["load_call_s"]),
            ("cold member: request -> answer (held, LRU unload, load)", c["first_request_s"]),
            ("  of which Triton's load call", c["load_s"]),
            ("warm member: request -> answer", c["warm_request_s"]),
        ]),
        "",
        f"Server restarts while adding {len(a['rows'])} members: 0 (same pid). Load average "
        f"before {tuple(round(x, 2) for x in before)}, after "
        f"{tuple(round(x, 2) for x in out['load_average_after'])}: a shared 2-core machine.",
        "",
    ])  # fmt: skip
    (RESULTS / "pool_load.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
