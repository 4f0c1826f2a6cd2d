"""Scale from zero locally: the part that exists today, and what it costs.

The target (issue 10): on ``slmfleet up``, a request for a specialist at zero replicas
gets its first token within 5 s, the model having been unloaded when idle and loaded on
demand through Triton's explicit model control. The router's half (hold the request,
signal demand, serve it once the model is ready, 503 + Retry-After on timeout) is not
integrated yet, so this benchmark measures the floor that half will add to, on real
parts: the real Triton server (explicit model control, as ``slmfleet up`` runs it) and
the real router, through the official openai client.

Per trial: unload the stand-in model (repository API) and wait until Triton reports it
unavailable; then, at t0 (a request "arrives"), ask Triton to load it, wait for
``/v2/models/<m>/ready``, and stream one chat completion through the router; report t0
-> model ready and t0 -> first token. NOT measured: the router holding the request and
the autoscaler noticing the demand (the integration's part: one scrape tick of the
``waiting`` gauge at most, 5 s by default, unless the router asks Triton directly).

Usage: python benchmarks/autoscale_from_zero.py [--trials 5]
Results: benchmarks/results/autoscale_from_zero.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai

from slmfleet.local import StandIn, TritonServer, write_model_repository
from slmfleet.local.router import RouterProcess
from slmfleet.local.triton import free_port

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
MODEL = "sleepy"


def post(url: str) -> None:
    req = urllib.request.Request(url, data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=120) as resp:
        resp.read()


def ready(triton: TritonServer) -> bool:
    try:
        with urllib.request.urlopen(f"{triton.http_url}/v2/models/{MODEL}/ready", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def config(endpoint: str) -> dict:
    sid = f"local/{MODEL}"
    return {
        "version": 1,
        "specialists": [{"id": sid, "endpoint": endpoint, "tritonModel": MODEL,
                         "backend": "python", "ready": True}],
        "policies": [{"modelName": MODEL, "id": f"local/{MODEL}", "specialists": [sid],
                      "routing": {"semantic": {"enabled": False}},
                      "cascade": [{"name": "routed", "routed": True}]}],
    }  # fmt: skip


def trial(triton: TritonServer, client: openai.OpenAI) -> dict:
    post(f"{triton.http_url}/v2/repository/models/{MODEL}/unload")
    while ready(triton):
        time.sleep(0.05)
    t0 = time.monotonic()
    post(f"{triton.http_url}/v2/repository/models/{MODEL}/load")  # returns once loaded
    while not ready(triton):
        time.sleep(0.01)
    t_ready = time.monotonic()
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "order id AB-12345"}], stream=True
    )
    t_first = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and t_first is None:
            t_first = time.monotonic()
    return {"load_s": round(t_ready - t0, 3), "first_token_s": round(t_first - t0, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="slmfleet-from-zero-") as tmp:
        work = Path(tmp)
        repo = write_model_repository(work / "models", {MODEL: StandIn("extractor")})
        with TritonServer(repo, log_path=work / "triton.log") as triton:
            (work / "router.json").write_text(json.dumps(config(triton.grpc_url)))
            router = RouterProcess(["--config", str(work / "router.json")], port=free_port(),
                                   log_path=work / "router.log")  # fmt: skip
            router.start()
            try:
                client = openai.OpenAI(base_url=router.url + "/v1", api_key="-", max_retries=0)
                for _ in range(args.trials):
                    rows.append(trial(triton, client))
                    print(rows[-1], flush=True)
            finally:
                router.stop()
    first = [r["first_token_s"] for r in rows]
    out = {
        "method": __doc__,
        "trials": rows,
        "first_token_s": {"median": statistics.median(first), "max": max(first)},
        "load_average": os.getloadavg(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "autoscale_from_zero.json").write_text(json.dumps(out, indent=2))
    text = "\n".join([
        "# Scale from zero, local (Triton explicit model control; router hold not integrated)",
        "",
        "| trial | unloaded -> model ready (s) | unloaded -> first token (s) |",
        "|---|---|---|",
        *(f"| {i} | {r['load_s']} | {r['first_token_s']} |" for i, r in enumerate(rows, 1)),
        "",
        f"Median first token {out['first_token_s']['median']} s, max "
        f"{out['first_token_s']['max']} s (target <= 5 s for the whole path; the router's "
        "hold and the demand signal are not included). CPU stand-in model; load average "
        f"{tuple(round(x, 2) for x in out['load_average'])}.",
        "",
    ])  # fmt: skip
    (RESULTS / "autoscale_from_zero.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
