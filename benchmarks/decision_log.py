"""Decision log and tracing costs (issue 11): what the request path pays, and what the
writer sustains, on real SQLite and real PostgreSQL, side by side in one run.

Measured:

- request-path cost per decision: building the record from a router ``Decision``
  (``record_from_decision``; content off and hashed) and ``DecisionWriter.submit``
  while the writer thread drains into each store; each operation timed alone with
  ``perf_counter_ns`` (the timer's own cost is reported and not subtracted);
- event-loop lag: an asyncio loop (uvloop, like the router) wakes every 1 ms and
  records how late each wake-up is, while decisions are submitted from the loop at a
  fixed rate; "none" is the same loop with the writer off. This is where a writer
  thread holding the GIL would show;
- writer throughput: 100,000 decisions submitted as fast as the writer takes them
  (never dropping), until all are committed: decisions per second per store;
- tracing: one request span + two hop spans + finish, off (the default: no-op) and on
  (SDK + batch processor with an exporter that discards, i.e. the in-process cost).

Output: a table on stdout, benchmarks/results/decision_log.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT))

from slmfleet.router.engine import Decision  # noqa: E402
from slmfleet.telemetry.record import record_from_decision  # noqa: E402
from slmfleet.telemetry.settings import ContentPolicy, DecisionLogSettings  # noqa: E402
from slmfleet.telemetry.store import open_store  # noqa: E402
from slmfleet.telemetry.tracing import Tracing  # noqa: E402
from slmfleet.telemetry.writer import DecisionWriter  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PROMPT = "I was charged twice for order 1234, please refund the second charge. " * 4


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def decision(i: int) -> Decision:
    d = Decision(f"req-{i}")
    d.policy = d.metric_policy = "support"
    d.route, d.route_source, d.confidence = "shop/billing", "classifier", 0.87
    d.tier, d.target = "small", "shop/billing"
    d.prompt_tokens, d.completion_tokens = 60, 24
    d.cost_usd = 0.000012
    d.escalations = ["routing:ok"] if i % 5 == 0 else []
    d.upstream_s = 0.004
    return d


def timer_overhead(n: int = 100_000) -> float:
    t = []
    for _ in range(n):
        a = time.perf_counter_ns()
        t.append(time.perf_counter_ns() - a)
    return pct(t, 0.5)


def build_cost(content: ContentPolicy, n: int) -> dict[str, float]:
    ds = [decision(i) for i in range(n)]
    t = []
    for d in ds:
        a = time.perf_counter_ns()
        record_from_decision(
            d, started_at=1.0, duration_s=0.005, content=content, prompt=PROMPT, answer="ok"
        )
        t.append(time.perf_counter_ns() - a)
    return {"p50_ns": pct(t, 0.5), "p99_ns": pct(t, 0.99), "n": n}


def _records(n: int, start: int = 0) -> list[Any]:
    return [
        record_from_decision(
            decision(i), started_at=time.time(), duration_s=0.005, content=ContentPolicy()
        )
        for i in range(start, start + n)
    ]


def submit_cost(url: str, n: int, rate: float) -> dict[str, float]:
    """submit() timed alone at ``rate`` per second while the writer drains."""
    store = open_store(url)
    w = DecisionWriter(store, DecisionLogSettings()).start()
    recs = _records(n)
    t = []
    gap = 1.0 / rate
    nxt = time.perf_counter()
    for r in recs:
        # Sleep (releasing the GIL, as an idle event loop does) until the next send time.
        left = nxt - time.perf_counter()
        if left > 0:
            time.sleep(left)
        a = time.perf_counter_ns()
        w.submit(r)
        t.append(time.perf_counter_ns() - a)
        nxt += gap
    w.close()
    out = {
        "p50_ns": pct(t, 0.5),
        "p99_ns": pct(t, 0.99),
        "max_ns": max(t),
        "n": n,
        "rate": rate,
        "dropped": sum(w.dropped.values()),
        "written": w.written,
    }
    store.close()
    return out


async def _lag(writer: DecisionWriter | None, seconds: float, rate: float) -> dict[str, float]:
    lags: list[float] = []
    stop = time.perf_counter() + seconds
    recs = _records(int(seconds * rate) + 10, start=10_000_000)

    async def ticker() -> None:
        while time.perf_counter() < stop:
            a = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append((time.perf_counter() - a - 0.001) * 1000)

    async def producer() -> None:
        i = 0
        gap = 1.0 / rate
        nxt = time.perf_counter()
        while time.perf_counter() < stop:
            nxt += gap
            if writer is not None:
                writer.submit(recs[i])
            i += 1
            await asyncio.sleep(max(0.0, nxt - time.perf_counter()))

    await asyncio.gather(ticker(), producer())
    return {"p50_ms": pct(lags, 0.5), "p99_ms": pct(lags, 0.99), "p999_ms": pct(lags, 0.999)}


def loop_lag(url: str | None, seconds: float, rate: float) -> dict[str, float]:
    import uvloop

    store = open_store(url) if url else None
    w = DecisionWriter(store, DecisionLogSettings()).start() if store else None
    try:
        return uvloop.run(_lag(w, seconds, rate))
    finally:
        if w is not None:
            w.close()
        if store is not None:
            store.close()


def throughput(url: str, n: int) -> dict[str, float]:
    store = open_store(url)
    w = DecisionWriter(store, DecisionLogSettings(flush_interval_s=0.05)).start()
    recs = _records(n, start=20_000_000)
    t0 = time.perf_counter()
    for r in recs:
        while not w.submit(r):
            time.sleep(0.0005)
    w.wait_flushed(300)
    dt = time.perf_counter() - t0
    w.close()
    assert store.count_decisions() >= n
    store.close()
    return {"decisions": n, "seconds": round(dt, 3), "per_s": round(n / dt)}


def tracing_cost(n: int) -> dict[str, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Discard(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    out = {}
    rec = _records(1)[0]
    for name, tr in (("off", Tracing.from_env({})), ("on", Tracing(provider))):
        t = []
        for i in range(n):
            a = time.perf_counter_ns()
            with tr.request([], model="support", request_id=f"r{i}") as rs:
                with rs.hop("small", target="shop/billing") as hop:
                    hop.usage(input_tokens=60, output_tokens=24)
                    hop.escalated(["low_answer_confidence"])
                with rs.hop("large", target="shop/generalist") as hop:
                    hop.usage(input_tokens=60, output_tokens=30)
                rs.finish(rec)
            t.append(time.perf_counter_ns() - a)
        out[name] = {"p50_ns": pct(t, 0.5), "p99_ns": pct(t, 0.99), "n": n}
    provider.shutdown()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller samples (a smoke run)")
    args = ap.parse_args()
    n_ops = 20_000 if args.quick else 100_000
    n_tp = 20_000 if args.quick else 100_000
    lag_s = 3.0 if args.quick else 8.0

    from tests.fixtures.postgres import PostgresServer, _bindir

    bindir = _bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries are missing: make system-deps")
    tmp = Path(tempfile.mkdtemp(prefix="slmfleet-bench-"))
    pgroot = Path(tempfile.mkdtemp(prefix="slmfleet-pg-"))
    os.chmod(pgroot, 0o755)
    pg = PostgresServer(pgroot, bindir).init().start()
    load = []
    try:
        stores = {"sqlite": f"sqlite:///{tmp / 'bench.db'}", "postgres": pg.url}
        res: dict[str, Any] = {"timer_overhead_ns": timer_overhead()}
        res["build"] = {
            "content off": build_cost(ContentPolicy(), n_ops),
            "content hashed": build_cost(ContentPolicy(content="hashed"), n_ops),
        }
        res["submit"] = {k: submit_cost(u, n_ops, 5000.0) for k, u in stores.items()}
        load.append(os.getloadavg()[0])
        # Interleaved repeats (none, sqlite, postgres, none, ...): a shared machine's load
        # drifts; the median of the repeats is reported, each repeat kept in the JSON.
        runs: dict[str, list[dict[str, float]]] = {"none": [], **{k: [] for k in stores}}
        for _ in range(1 if args.quick else 3):
            runs["none"].append(loop_lag(None, lag_s, 2000.0))
            for k, u in stores.items():
                runs[k].append(loop_lag(u, lag_s, 2000.0))
        res["loop_lag"] = {
            k: {m: statistics.median(r[m] for r in v) for m in v[0]} | {"repeats": v}
            for k, v in runs.items()
        }
        load.append(os.getloadavg()[0])
        res["throughput"] = {k: throughput(u, n_tp) for k, u in stores.items()}
        res["tracing"] = tracing_cost(n_ops // 2)
        load.append(os.getloadavg()[0])
    finally:
        pg.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    res["machine"] = {
        "cpu": _cpu(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_1m": load,
        "quick": args.quick,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "decision_log.json").write_text(json.dumps(res, indent=2) + "\n")
    md = render(res)
    (RESULTS / "decision_log.md").write_text(md)
    print(md)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def render(r: dict[str, Any]) -> str:
    us = lambda ns: f"{ns / 1000:.2f}"  # noqa: E731
    lines = [
        "# Decision log and tracing costs (issue 11)",
        "",
        "Generated by `benchmarks/decision_log.py` (`make bench`); raw numbers in "
        "`decision_log.json`.",
        "",
        "## Request path (per decision, microseconds)",
        "",
        "| step | p50 | p99 |",
        "|---|---|---|",
    ]
    for name, v in r["build"].items():
        lines.append(f"| build the record ({name}) | {us(v['p50_ns'])} | {us(v['p99_ns'])} |")
    for name, v in r["submit"].items():
        lines.append(
            f"| submit, writer draining into {name} ({v['rate']:.0f}/s, {v['dropped']} dropped) "
            f"| {us(v['p50_ns'])} | {us(v['p99_ns'])} |"
        )
    t = r["tracing"]
    lines += [
        f"| tracing off: request + 2 hops + finish | {us(t['off']['p50_ns'])} | "
        f"{us(t['off']['p99_ns'])} |",
        f"| tracing on (SDK, batch processor, discarding exporter) | {us(t['on']['p50_ns'])} | "
        f"{us(t['on']['p99_ns'])} |",
        "",
        f"Each operation timed alone; the timer itself costs {us(r['timer_overhead_ns'])} "
        "us (p50), included above.",
        "",
        "## Event-loop lag with decisions submitted at 2,000/s (ms late per 1 ms wake-up; "
        "median of interleaved repeats)",
        "",
        "| writer | p50 | p99 | p99.9 |",
        "|---|---|---|---|",
    ]
    for name, v in r["loop_lag"].items():
        lines.append(f"| {name} | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} | {v['p999_ms']:.3f} |")
    lines += [
        "",
        "## Writer throughput (decisions committed per second)",
        "",
        "| store | decisions | seconds | per second |",
        "|---|---|---|---|",
    ]
    for name, v in r["throughput"].items():
        lines.append(f"| {name} | {v['decisions']} | {v['seconds']} | {v['per_s']} |")
    m = r["machine"]
    lines += [
        "",
        "## Method",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; 1-minute load "
        f"average at the phases: {', '.join(f'{x:.2f}' for x in m['load_1m'])} (a shared "
        "machine: other jobs run beside this one).",
        "- Stores: SQLite file (WAL, synchronous=FULL) in a temporary directory; "
        "PostgreSQL 15 from Debian (initdb + pg_ctl on a free port, fsync on), local TCP.",
        "- Writer defaults: buffer 10,000 records, batches of up to 500, flush every 200 ms.",
        "- Records: a routed decision (content off), built by `record_from_decision` from "
        "the router's `Decision`; the JSON encoding and SQL run in the writer thread.",
        "- Loop lag: uvloop; a task sleeps 1 ms in a loop and records the extra delay; a "
        "second task submits decisions on a fixed schedule. `none`: the same, writer off.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
