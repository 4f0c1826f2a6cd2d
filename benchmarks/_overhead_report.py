"""Summaries, tables, verdicts and the Markdown report of router_overhead.py."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

SYSTEMS = ("direct", "router", "router_plain", "litellm")
LABELS = {
    "direct": "direct",
    "router": "**router, routing on**",
    "router_plain": "router, routing off",
    "litellm": "litellm",
}
MIX = "mix"


def _f(x: float | None, nd: int = 2) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _med(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def _phase(rep: dict[str, Any], key: str) -> dict[str, Any]:
    return rep["sequential"] if key == "seq" else rep[key]


def summarize(raw: dict, rates_by: dict[str, list[int]], mix_rate: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for u, systems in raw.items():
        rates = rates_by[u]
        su: dict[str, Any] = {"rates": rates, "mix_rate": mix_rate}
        for s, reps in systems.items():
            row: dict[str, Any] = {
                "seq_p50_ms": _med([r["sequential"]["p50_ms"] for r in reps]),
                "seq_p99_ms": _med([r["sequential"]["p99_ms"] for r in reps]),
                "max_rps": _med([r["max"]["rps"] for r in reps]),
                "max_rps_runs": [round(r["max"]["rps"], 1) for r in reps],
            }
            cpu = [r["max"].get("proxy_cpu_pct") for r in reps]
            if any(c is not None for c in cpu):
                row["proxy_cpu_pct_at_max"] = _med(cpu)
                row["rps_per_cpu_s"] = _med([r["max"].get("rps_per_cpu_s") for r in reps])
                row["rps_per_cpu_s_runs"] = [round(r["max"]["rps_per_cpu_s"] or 0, 1) for r in reps]
            for rate in rates:
                k = f"rps_{rate}"
                runs = [r[k] for r in reps if "skipped" not in r[k]]
                if not runs:
                    row[f"{k}_skipped"] = reps[0][k]["skipped"]
                    continue
                row[f"{k}_p50_ms"] = _med([r["p50_ms"] for r in runs])
                row[f"{k}_p99_ms"] = _med([r["p99_ms"] for r in runs])
                row[f"{k}_achieved"] = _med([r["achieved_rps"] for r in runs])
                row[f"{k}_failed"] = sum(r["errors"] + r["unfinished"] for r in runs)
                selfs = [r["router_self_added"] for r in runs if "router_self_added" in r]
                if selfs:
                    for q in ("p50", "p99"):
                        row[f"{k}_router_self_{q}_le_ms"] = _med([x[f"{q}_le_ms"] for x in selfs])
            mixes = [r[MIX] for r in reps if MIX in r]
            if mixes:
                short = [m["by_tag"].get("short", {}) for m in mixes]
                long_ = [m["by_tag"].get("long", {}) for m in mixes]
                row["mix_short_p50_ms"] = _med([x.get("p50_ms") for x in short])
                row["mix_short_p99_ms"] = _med([x.get("p99_ms") for x in short])
                row["mix_long_p50_ms"] = _med([x.get("p50_ms") for x in long_])
                row["mix_long_p99_ms"] = _med([x.get("p99_ms") for x in long_])
                row["mix_achieved"] = _med([m["achieved_rps"] for m in mixes])
                row["mix_failed"] = sum(m["errors"] + m["unfinished"] for m in mixes)
                base = f"rps_{mix_rate}"
                ratios = [
                    m["by_tag"]["short"]["p99_ms"] / r[base]["p99_ms"]
                    for m, r in zip(mixes, reps, strict=False)
                    if m["by_tag"].get("short", {}).get("p99_ms") and r[base].get("p99_ms")
                ]
                row["mix_short_p99_over_all_short"] = _med(ratios)
                row["mix_short_p99_over_all_short_runs"] = [round(x, 2) for x in ratios]
            counts = [r["classifier"] for r in reps if r.get("classifier")]
            if counts:
                total = {k: sum(c.get(k, 0.0) for c in counts) for k in counts[0]}
                stages = ("cache", "cheap", "static", "full")
                decided = sum(v for k, v in total.items() if k in stages)
                row["classifier_stages"] = total
                if decided:
                    for k in stages:
                        row[f"{k}_fraction"] = total.get(k, 0.0) / decided
            su[s] = row
        if "direct" in su:
            for s, row in su.items():
                if s not in SYSTEMS or s == "direct":
                    continue
                # Added latency: per repeat (direct and proxy measured back to back), then
                # the median of those paired differences.
                for key in ["seq"] + [f"rps_{r}" for r in rates]:
                    for q in ("p50", "p99"):
                        diffs = []
                        for r, dr in zip(raw[u][s], raw[u]["direct"], strict=False):
                            a, b = _phase(r, key).get(f"{q}_ms"), _phase(dr, key).get(f"{q}_ms")
                            if a is not None and b is not None:
                                diffs.append(a - b)
                        row[f"{key}_added_{q}_ms"] = _med(diffs)
                        row[f"{key}_added_{q}_ms_per_rep"] = [round(x, 3) for x in diffs]
        for mine in ("router", "router_plain"):
            if mine in su and "litellm" in su and su["litellm"]["max_rps"]:
                su[f"{mine}_over_litellm_rps"] = su[mine]["max_rps"] / su["litellm"]["max_rps"]
                a, b = su[mine].get("rps_per_cpu_s"), su["litellm"].get("rps_per_cpu_s")
                if a and b:
                    su[f"{mine}_over_litellm_rps_per_cpu_s"] = a / b
        out[u] = su
    return out


def table(summary: dict[str, Any]) -> str:
    return "\n\n".join(_table(u, su) for u, su in summary.items())


def _table(u: str, su: dict[str, Any]) -> str:
    rates = su["rates"]
    head = ["upstream", "system", "seq p50", "seq p99"]
    for r in rates:
        head += [f"{r} RPS p50", f"{r} RPS p99"]
    head += ["max RPS/core"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in SYSTEMS:
        row = su.get(s)
        if row is None:
            continue
        cells = [u, LABELS[s]]
        for key in ["seq"] + [f"rps_{r}" for r in rates]:
            for q in ("p50", "p99"):
                if row.get(f"{key}_skipped"):
                    cells.append("n/a (over upstream max)")
                    continue
                v = row.get(f"{key}_{q}_ms")
                add = row.get(f"{key}_added_{q}_ms")
                cell = _f(v)
                if add is not None:
                    cell += f" (+{_f(add)})" if add >= 0 else f" ({_f(add)})"
                if key != "seq":
                    ach = row.get(f"{key}_achieved")
                    r = int(key.split("_")[1])
                    if ach is not None and ach < 0.95 * r:
                        cell += f" [{ach:.0f} RPS done]"
                cells.append(cell)
        mx = _f(row["max_rps"], 0)
        if row.get("proxy_cpu_pct_at_max") is not None:
            mx += (
                f" (cpu {row['proxy_cpu_pct_at_max']:.0f}%;"
                f" {_f(row.get('rps_per_cpu_s'), 0)}/CPU-s)"
            )
        cells.append(mx)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def verdicts(summary: dict[str, Any]) -> list[str]:
    """The issue's targets, with semantic routing on (fast upstream: the proxy is the
    bottleneck), then the same for routing off, then the LiteLLM ratio."""
    out = []
    fast = summary.get("fast", {})
    for s, label in (("router", "routing on"), ("router_plain", "routing off")):
        r = fast.get(s)
        if not r:
            continue
        per_cpu = r.get("rps_per_cpu_s")
        if per_cpu is not None:
            out.append(
                f"{label}: max RPS per router core {per_cpu:.0f} requests per CPU-second "
                f"(closed loop, {r['max_rps']:.0f} RPS at {r.get('proxy_cpu_pct_at_max', 0):.0f}% "
                f"CPU) (target >= 1,000: {_met(per_cpu >= 1000)})"
            )
        if r.get("rps_500_added_p50_ms") is not None:
            p50, p99 = r["rps_500_added_p50_ms"], r["rps_500_added_p99_ms"]
            ach = r.get("rps_500_achieved") or 0
            out.append(
                f"{label}: added latency at 500 RPS p50 {p50:.2f} ms (target <= 1 ms: "
                f"{_met(p50 <= 1 and ach >= 475)}), p99 {p99:.2f} ms (target <= 5 ms: "
                f"{_met(p99 <= 5 and ach >= 475)}); {ach:.0f} RPS completed, "
                f"{r.get('rps_500_failed', 0)} failed or unfinished"
            )
        if r.get("rps_500_router_self_p50_le_ms") is not None:
            out.append(
                f"{label}: the router's own added-latency histogram at 500 RPS (time in the "
                f"router minus upstream calls): p50 <= {r['rps_500_router_self_p50_le_ms']:g} ms,"
                f" p99 <= {r['rps_500_router_self_p99_le_ms']:g} ms (bucket edges)"
            )
        if r.get("mix_short_p99_over_all_short") is not None:
            x = r["mix_short_p99_over_all_short"]
            out.append(
                f"{label}: with 5% of requests carrying 3,000-character prompts at "
                f"{fast['mix_rate']} RPS, the "
                f"short requests' p99 is {r['mix_short_p99_ms']:.1f} ms, {x:.2f}x the "
                f"all-short run's (target <= 2x: {_met(x <= 2)}; per repeat "
                f"{r['mix_short_p99_over_all_short_runs']}); long requests p50 "
                f"{_f(r.get('mix_long_p50_ms'))} ms, p99 {_f(r.get('mix_long_p99_ms'))} ms"
            )
        if r.get("cheap_fraction") is not None:
            st = r["classifier_stages"]
            out.append(
                f"{label}: classifier decisions by stage over the whole run: cheap TF-IDF "
                f"stage alone {r['cheap_fraction']:.1%}, static embeddings "
                f"{r.get('static_fraction', 0.0):.1%}, embedding model (MiniLM) "
                f"{r['full_fraction']:.1%}, decision cache {r['cache_fraction']:.1%} "
                f"({int(sum(v for k, v in st.items() if k != 'shed_503'))} decisions; "
                f"{int(st.get('shed_503', 0))} requests refused with 503 by a full queue)"
            )
    for s, label in (("router", "routing on"), ("router_plain", "routing off")):
        ratio = fast.get(f"{s}_over_litellm_rps")
        if ratio is not None:
            per_cpu = fast.get(f"{s}_over_litellm_rps_per_cpu_s")
            out.append(
                f"{label}: router max RPS / LiteLLM max RPS per core (fast upstream): "
                f"{ratio:.1f}x"
                + (f"; per CPU-second of each proxy: {per_cpu:.1f}x" if per_cpu else "")
            )
    return out


def write_md(path: Path, result: dict[str, Any]) -> None:
    s, rates = result["summary"], result["method"]["rates"]  # rates: the fast upstream's
    lv = result["load_average_1m"]
    md = [
        "# Router overhead: semantic routing on (headline) and off, direct, LiteLLM",
        "",
        "Generated by `benchmarks/router_overhead.py` (`make bench`); raw numbers per repeat in "
        f"`{path.with_suffix('.json').name}`.",
        "",
        "Latencies in ms (median of "
        f"{result['method']['repeats']} repeats); `(+x)` is the latency added over calling the "
        "same upstream directly at the same offered load (median of the per-repeat "
        "differences, direct and proxy being measured back to back). `[n RPS done]` marks "
        "an offered load "
        "the system could not keep up with (latency then grows with the run's length). Max "
        "RPS/core: closed loop, with the proxy's CPU use over that window and requests per "
        "CPU-second of the proxy (its one-core ceiling, robust to other jobs taking part of "
        "the core). `n/a`: a rate above what the upstream itself sustains (direct max), not "
        "run.",
        "",
        table(s),
        "",
        "## Targets",
        "",
        *[f"- {v}" for v in result["verdicts"]],
        "",
        "## Reading the numbers",
        "",
        "- The headline is the `fast` upstream with semantic routing on: there the router "
        "is the bottleneck, and its routing is what a new user's policy costs. On the shared "
        "2-core machine other jobs take turns on the proxy's core, which shows as latency "
        "spikes in some repeats while requests per CPU-second stay steady.",
        "- Routing on: the cheap TF-IDF stage and then the static-embedding stage decide "
        "on the event loop when they are confident (~55 and ~50 us a short request); the "
        "rest go through the full classifier on the router's worker thread: the MiniLM "
        "encoder, ~1.5-2 ms of CPU per short query on this machine whatever the batch size "
        "(it is compute-bound), plus ~0.3 ms of heads. The fractions are in the targets "
        "above; the per-decision costs, the quality of each path and the cut's trade-off "
        "in `classifier_cost.md`. At 1,000 requests per CPU-second a request may cost the "
        "router 1 ms in all; with routing off at ~0.75 ms, the encoder could run on only "
        "~10% of requests, and at the quality of the full classifier the cheaper stages "
        "cannot decide that many (about 55% at 50 examples a domain). When the offered "
        "rate exceeds what routing costs, the worker's bounded queue refuses the excess "
        "with 503 (counted) instead of letting latency grow.",
        "- Every request has a gRPC stream to itself while it runs (the default), which a "
        "client that leaves (or a deadline) cancels in Triton; a stream whose request ended "
        "cleanly carries the next one, so the router opens streams only as concurrency "
        "grows (opening one per request cost ~0.2 ms of CPU more).",
        "- `triton`: realistic end-to-end latencies; its Python-backend stand-in streams "
        "~20 responses per answer and tops out near 100 RPS.",
        "- LiteLLM on `triton` goes through Triton's HTTP generate endpoint; its "
        "per-CPU-second figure is the comparable one there.",
        "",
        "## Method",
        "",
        f"- Machine: {result['machine']['cpu']}, {result['machine']['cpus']} cores, "
        f"{result['machine']['memory_gib']} GiB, kernel {result['machine']['kernel']}. "
        f"1-minute load average during the run: min {min(lv):.2f}, max {max(lv):.2f} "
        "(the machine is shared; numbers are noisy, hence medians of repeats).",
        f"- Placement: the proxy under test (router, LiteLLM: one process, one worker each) "
        f"pinned to core {result['cores']['proxy']}; the upstreams and the load generator share "
        f"core {result['cores']['client_and_upstreams']}. The direct baseline runs in a "
        "process of its own on the proxy core (`_direct_client.py`: the same phases, the "
        "router's own gRPC client, shared `ModelStreamInfer` streams, no HTTP, no routing), "
        "so it gets the same core budget as a proxy. The proxy core is the one that was "
        f"idler in the 2 s before the run (busy fraction per core: {result['core_busy_before']}).",
        "- Routed workload (`_clinc_workload.py`): 10 CLINC150 domains, one specialist each "
        "(all on the same upstream), 50 example requests per domain drawn from train.jsonl; "
        "requests are val.jsonl and the rest of train (never the fitted examples), each "
        "sent once per pass through a shuffled list of ~17,000, far more than the router's "
        "decision cache holds, so the cache does not help; `minConfidence` 0.1, out-of-domain "
        "requests fall back to one more specialist on the same upstream. Mixed run: the "
        "same, with every 20th request a distinct 3,000-character prompt.",
        "- Upstream `fast`: `benchmarks/_fast_upstream.py`, an instrument that answers "
        "instantly: Triton's gRPC `ModelStreamInfer` for the router and the direct client, "
        "the same answer as an OpenAI response over HTTP/1.1 for LiteLLM (`openai/` "
        "provider), token counts included either way (`num_output_tokens` / "
        "`num_input_tokens` when the request asks, as vLLM's backend reports them; `usage` "
        "for LiteLLM), so neither proxy counts tokens itself. Upstream `triton`: the real "
        "`tritonserver`, stand-in `generalist` (Python backend); LiteLLM reaches it with "
        "its `triton/` provider.",
        f"- Load generator: Python, uvloop, raw HTTP/1.1 keep-alive connections (httptools "
        f"parser; pool up to {result['method']['conns']}). Sequential: "
        f"{result['method']['n_seq']} requests one at a time (LiteLLM: a quarter). Fixed "
        f"rates {', '.join(map(str, rates))} RPS on `fast`, "
        f"{', '.join(map(str, result['method']['triton_rates']))} RPS on `triton`, each for "
        f"{result['method']['seconds']} s open loop, latency from each request's scheduled "
        "send time (no coordinated omission); unfinished requests are abandoned "
        f"{result['method']['grace']} s after the last send, then the next phase waits until "
        "a probe request is fast again. Max RPS (before the fixed rates): closed loop, "
        f"{result['method']['conc']} concurrent requests ({result['method']['conc_slow']} for "
        f"LiteLLM) for {result['method']['seconds']} s. All processes at nice -10.",
        "- Router: `python -m slmfleet.router` as deployed (uvicorn, uvloop, httptools, one "
        "process, defaults, log level info so the JSON access line is written, to "
        "/dev/null), API-key check on. LiteLLM: `litellm --num_workers 1`, master key set, "
        "no database, telemetry off.",
        "",
        "## Versions",
        "",
        *[f"- {k}: {v}" for k, v in result["versions"].items()],
        "",
    ]
    path.write_text("\n".join(md))
