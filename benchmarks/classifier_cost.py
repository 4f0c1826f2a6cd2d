"""What a routing decision costs on one core, and the cheap stage's trade-off curve.

The router benchmark's policy (_clinc_workload.py: 10 CLINC150 domains, 50 train
examples each), decided one request at a time on one pinned core, as the router does:
the text normalised (``classifying.normalise``), the cheap TF-IDF stage, the full
classifier for the rest. Requests: val.jsonl (3,000 distinct questions, none fitted).
CPU per decision is process time (robust to other jobs sharing the machine).

For each candidate cut of the cheap stage: the fraction it decides, the classifier's
CPU per decision, quality on val (raw accuracy; in-scope accuracy and OOS recall on
oos_val at the threshold escalating >= 80% of oos_train), and the router's estimated
one-core ceiling ``1 / (base + classifier)``, where ``base`` is the router's CPU per
request with routing off from the latest router_overhead.json (its ``router_plain`` row;
an estimate: say so wherever it is quoted). The chosen cut (``ClassifierParams.
cheap_cut``) was fixed on train (_staged_quality.py); val only scores the curve.

Run: ``.venv/bin/python benchmarks/classifier_cost.py`` (~3 minutes).
Output: benchmarks/results/classifier_cost.{json,md}.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from _clinc_splits import clopper_pearson, wilson  # noqa: E402
from _sizes_quality import example_sets  # noqa: E402
from routing_quality import RESULTS, load, sid  # noqa: E402

from slmfleet.router.classify import ClassifierParams, DomainClassifier  # noqa: E402
from slmfleet.router.classifying import normalise  # noqa: E402
from slmfleet.router.embed import default_encoder  # noqa: E402
from slmfleet.router.staged import StagedClassifier  # noqa: E402

CUTS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.01)
"""1.01: the cheap stage never decides (every request through the encoder)."""
THRESHOLDS = np.round(np.arange(0.0, 1.0001, 0.005), 3)
COST_SAMPLE = 1000


def base_cpu_ms() -> tuple[float | None, str]:
    """The router's CPU per request with routing off, from router_overhead.json."""
    path = RESULTS / "router_overhead.json"
    try:
        r = json.loads(path.read_text())
        rate = r["summary"]["fast"]["router_plain"]["rps_per_cpu_s"]
        return 1000.0 / rate, f"{path.name} (router_plain: {rate:.0f} requests/CPU-s)"
    except (OSError, KeyError, ValueError, ZeroDivisionError):
        return None, "no router_overhead.json"


def cpu_per_decision(staged: StagedClassifier, texts: list[str]) -> float:
    """Mean process-time ms of one decision, the router's path, one at a time."""
    for t in texts[:50]:
        staged.predict(normalise(t))
    t0 = time.process_time()
    for t in texts:
        staged.predict(normalise(t))
    return (time.process_time() - t0) / len(texts) * 1e3


def quality(staged: StagedClassifier, val, oos_train, oos_val) -> dict:
    def run(rows):
        res = staged.predict_staged([normalise(r["text"]) for r in rows])
        return [r for r, _ in res], np.array([s == "cheap" for _, s in res])

    rin, cheap = run(val)
    conf = np.array([r.confidence for r in rin])
    ok = np.array([r.best == sid(v["domain"]) for r, v in zip(rin, val, strict=True)])
    ct = np.array([r.confidence for r in run(oos_train)[0]])
    t = next(float(x) for x in THRESHOLDS if np.mean(ct < x) >= 0.8)
    cv = np.array([r.confidence for r in run(oos_val)[0]])
    right, esc = int(np.sum(ok & (conf >= t))), int(np.sum(cv < t))
    return {
        "cheap_fraction": float(cheap.mean()),
        "raw_accuracy": float(ok.mean()),
        "raw_interval": wilson(int(ok.sum()), len(ok)),
        "threshold": t,
        "in_scope_accuracy": right / len(ok),
        "in_scope_interval": wilson(right, len(ok)),
        "oos_recall": esc / len(cv),
        "oos_recall_interval": clopper_pearson(esc, len(cv)),
    }


def main() -> None:
    train, val = load("train"), load("val")
    oos_train, oos_val = load("oos_train"), load("oos_val")
    enc = default_encoder()
    domains = example_sets(train, sid)["50_per_domain"]
    clf = DomainClassifier.fit(domains, encoder=enc)
    rng = np.random.default_rng(0)
    sample = [val[i]["text"] for i in rng.choice(len(val), COST_SAMPLE, replace=False)]
    base, base_src = base_cpu_ms()
    load0 = os.getloadavg()[0]
    t0 = time.process_time()
    for t in sample:
        enc.encode_one(normalise(t))
    encode_ms = (time.process_time() - t0) / len(sample) * 1e3
    rows = []
    for cut in CUTS:
        staged = StagedClassifier(clf)
        staged.cut = cut
        row = {"cut": cut, "cpu_ms": round(cpu_per_decision(staged, sample), 3)}
        row |= quality(staged, val, oos_train, oos_val)
        if base is not None:
            row["estimated_rps_per_core"] = round(1000.0 / (base + row["cpu_ms"]), 0)
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {
        "policy": "50 train examples a domain (_clinc_workload.py), 10 domains",
        "chosen_cut": ClassifierParams().cheap_cut,
        "encoder": enc.name,
        "encode_one_cpu_ms": round(encode_ms, 3),
        "base_cpu_ms": base,
        "base_source": base_src,
        "load_average_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "core": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "classifier_cost.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "classifier_cost.md").write_text(markdown(out))
    print(markdown(out))


def markdown(r: dict) -> str:
    base = r["base_cpu_ms"]
    lines = [
        "# What a routing decision costs (one core), and the cheap stage's trade-off",
        "",
        "Generated by `benchmarks/classifier_cost.py` (method in its docstring). Policy: "
        f"{r['policy']}; requests: val.jsonl, one at a time, the router's path. Encoder "
        f"{r['encoder']}: {r['encode_one_cpu_ms']} ms of CPU per request alone. 1-minute load "
        f"average {r['load_average_1m'][0]}-{r['load_average_1m'][1]} on 2 shared cores.",
        "",
        "The estimated router ceiling adds the router's own CPU per request with routing off "
        + (f"({base:.3f} ms, from {r['base_source']}, measured under load)" if base else "(n/a)")
        + ": an estimate, not a measurement of the router; `router_overhead.py` measures it.",
        "",
        "| cut | decided by the cheap stage | classifier CPU / decision | est. router RPS/core "
        "| raw acc | in-scope acc (threshold) | OOS recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        cut = "never (encoder always)" if x["cut"] > 1 else f"{x['cut']}"
        if x["cut"] == r["chosen_cut"]:
            cut += " **chosen**"
        lo, hi = x["oos_recall_interval"]
        lines.append(
            f"| {cut} | {x['cheap_fraction']:.1%} | {x['cpu_ms']:.3f} ms | "
            f"{x.get('estimated_rps_per_core', 'n/a')} | {x['raw_accuracy']:.2%} "
            f"[{x['raw_interval'][0]:.2%}, {x['raw_interval'][1]:.2%}] | "
            f"{x['in_scope_accuracy']:.2%} ({x['threshold']:.3f}) | {x['oos_recall']:.0%} "
            f"[{lo:.0%}, {hi:.0%}] |"
        )
    return "\n".join([*lines, ""])


if __name__ == "__main__":
    main()
