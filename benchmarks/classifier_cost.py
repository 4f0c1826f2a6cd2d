"""What a routing decision costs on one core, stage by stage, and what each path routes.

Decided one request at a time on one pinned core, as the router does: the text
normalised (``classifying.normalise``), then the classifier. Requests: val.jsonl (3,000
distinct questions, none fitted); CPU per decision is process time (robust to other
jobs sharing the machine) over a fixed sample of 1,000 of them.

1. **Paths side by side** at three example sets (_sizes_quality.example_sets: the router
   benchmark's policy of 50 a domain, 5 an intent; and all of train), one fitted
   ``DomainClassifier`` each, three paths over it:
   ``full`` (every request through the MiniLM classifier), ``cheap+full`` (the staged
   path before the static stage: TF-IDF stage, then full) and ``cheap+static+full`` (the
   router's path: ``StagedClassifier.fit``). Per path: the share each stage decides
   (val in-scope / oos_val), raw accuracy on val, in-scope accuracy on val and OOS
   recall on oos_val at the threshold escalating >= 80% of oos_train (intervals:
   Wilson 95% on 3,000, Clopper-Pearson 95% on the 100 OOS queries: wide), CPU per
   decision, and the router's estimated one-core ceiling ``1 / (base + classifier)``,
   where ``base`` is the router's CPU per request with routing off from the latest
   router_overhead.json (its ``router_plain`` row; an estimate: say so wherever it is
   quoted). Also: the static stage's own cost per request (tokenizer, gather, mean,
   heads; requests the cheap stage left), the table's distillation time and size.
2. **The cheap stage's cut**, router's path at 50 a domain: share decided per stage,
   CPU and quality for several cuts. The chosen settings were fixed on train
   (_staged_quality.py, static_stage_tuning.py); val only scores.

Run: ``.venv/bin/python benchmarks/classifier_cost.py`` (~5 minutes).
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
from routing_quality import RESULTS, domains_of, load, sid  # noqa: E402

from slmfleet.router import static_embed  # noqa: E402
from slmfleet.router.classify import ClassifierParams, DomainClassifier  # noqa: E402
from slmfleet.router.classifying import normalise  # noqa: E402
from slmfleet.router.embed import default_encoder  # noqa: E402
from slmfleet.router.staged import StagedClassifier, static_stage_for  # noqa: E402

CUTS = (0.5, 0.7, 0.85, 0.95, 1.01)
"""1.01: the cheap stage never decides (the static stage and the encoder do)."""
THRESHOLDS = np.round(np.arange(0.0, 1.0001, 0.005), 3)
COST_SAMPLE = 1000
STAGES = ("cheap", "static", "full")


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


def static_cost_us(staged: StagedClassifier, texts: list[str]) -> float | None:
    """Mean process-time us of the static stage alone (requests the cheap stage left)."""
    st = staged.static
    if st is None:
        return None
    args = []
    for t in texts:
        t = staged.clip(normalise(t))
        sig = staged.full.tfidf_signals(t)
        if sig is not None and staged.cheap(t) is None:
            args.append((t, sig[0], sig[1]))
    floor = staged.static_familiar_floor
    for a in args[:50]:
        st.decide(*a, floor)
    t0 = time.process_time()
    for a in args:
        st.decide(*a, floor)
    return (time.process_time() - t0) / max(1, len(args)) * 1e6


def quality(staged: StagedClassifier, val, oos_train, oos_val) -> dict:
    def run(rows):
        res = staged.predict_staged([normalise(r["text"]) for r in rows])
        return [r for r, _ in res], [s for _, s in res]

    rin, st_in = run(val)
    conf = np.array([r.confidence for r in rin])
    ok = np.array([r.best == sid(v["domain"]) for r, v in zip(rin, val, strict=True)])
    ct = np.array([r.confidence for r in run(oos_train)[0]])
    t = next(float(x) for x in THRESHOLDS if np.mean(ct < x) >= 0.8)
    rv, st_oos = run(oos_val)
    cv = np.array([r.confidence for r in rv])
    right, esc = int(np.sum(ok & (conf >= t))), int(np.sum(cv < t))
    return {
        "decided_in_scope": {s: st_in.count(s) / len(st_in) for s in STAGES},
        "decided_oos": {s: st_oos.count(s) / len(st_oos) for s in STAGES},
        "raw_accuracy": float(ok.mean()),
        "raw_interval": wilson(int(ok.sum()), len(ok)),
        "threshold": t,
        "in_scope_accuracy": right / len(ok),
        "in_scope_interval": wilson(right, len(ok)),
        "oos_recall": esc / len(cv),
        "oos_recall_interval": clopper_pearson(esc, len(cv)),
    }


def measure(staged: StagedClassifier, sample, val, oos_train, oos_val, base) -> dict:
    row = {"cpu_ms": round(cpu_per_decision(staged, sample), 3)}
    row |= quality(staged, val, oos_train, oos_val)
    if base is not None:
        row["estimated_rps_per_core"] = round(1000.0 / (base + row["cpu_ms"]), 0)
    return row


def main() -> None:
    train, val = load("train"), load("val")
    oos_train, oos_val = load("oos_train"), load("oos_val")
    enc = default_encoder()
    t0 = time.process_time()
    table = static_embed.distil_table(enc)
    distil_s = time.process_time() - t0
    sets = example_sets(train, sid) | {"all_train": domains_of(train)}
    rng = np.random.default_rng(0)
    sample = [val[i]["text"] for i in rng.choice(len(val), COST_SAMPLE, replace=False)]
    base, base_src = base_cpu_ms()
    load0 = os.getloadavg()[0]
    t0 = time.process_time()
    for t in sample:
        enc.encode_one(normalise(t))
    encode_ms = (time.process_time() - t0) / len(sample) * 1e3
    paths: dict = {}
    for name in ("50_per_domain", "5_per_intent", "all_train"):
        clf = DomainClassifier.fit(sets[name], encoder=enc)
        full = StagedClassifier(clf)
        full.cut = 1.01
        routes = {
            "full": full,
            "cheap+full": StagedClassifier(clf),
            "cheap+static+full": StagedClassifier(clf, *static_stage_for(clf)),
        }
        paths[name] = {}
        for path, staged in routes.items():
            row = measure(staged, sample, val, oos_train, oos_val, base)
            row["static_stage_us"] = static_cost_us(staged, sample)
            paths[name][path] = row
            print(name, path, json.dumps(row), flush=True)
    clf = DomainClassifier.fit(sets["50_per_domain"], encoder=enc)
    static, floor = static_stage_for(clf)
    rows = []
    for cut in CUTS:
        staged = StagedClassifier(clf, static, floor)
        staged.cut = cut
        row = {"cut": cut} | measure(staged, sample, val, oos_train, oos_val, base)
        rows.append(row)
        print(json.dumps(row), flush=True)
    p = ClassifierParams()
    out = {
        "policy": "50 train examples a domain (_clinc_workload.py), 10 domains",
        "chosen_cut": p.cheap_cut,
        "static_params": {
            k: getattr(p, k)
            for k in (
                "static_cut",
                "static_tfidf_weight",
                "static_weighting",
                "static_similarity",
                "static_familiarity",
                "static_agreement",
                "static_dims",
            )
        },
        "encoder": enc.name,
        "encode_one_cpu_ms": round(encode_ms, 3),
        "static_table": {
            "shape": list(table.shape),
            "dtype": str(table.dtype),
            "mb": round(table.nbytes / 1e6, 1),
            "distil_cpu_s": round(distil_s, 1),
        },
        "base_cpu_ms": base,
        "base_source": base_src,
        "load_average_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "core": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "paths": paths,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "classifier_cost.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "classifier_cost.md").write_text(markdown(out))
    print(markdown(out))


def _quality_cells(x: dict) -> str:
    lo, hi = x["oos_recall_interval"]
    ri, ii = x["raw_interval"], x["in_scope_interval"]
    return (
        f"{x['raw_accuracy']:.2%} [{ri[0]:.2%}, {ri[1]:.2%}] | {x['in_scope_accuracy']:.2%} "
        f"[{ii[0]:.2%}, {ii[1]:.2%}] ({x['threshold']:.3f}) | {x['oos_recall']:.0%} "
        f"[{lo:.0%}, {hi:.0%}]"
    )


def _shares(d: dict) -> str:
    return " / ".join(f"{d[s]:.1%}" for s in STAGES)


def markdown(r: dict) -> str:
    base, t = r["base_cpu_ms"], r["static_table"]
    lines = [
        "# What a routing decision costs (one core), stage by stage",
        "",
        "Generated by `benchmarks/classifier_cost.py` (method in its docstring). Requests: "
        f"val.jsonl, one at a time, the router's path. Encoder {r['encoder']}: "
        f"{r['encode_one_cpu_ms']} ms of CPU per request alone. Static table: "
        f"{t['shape'][0]:,} x {t['shape'][1]} {t['dtype']} ({t['mb']} MB), distilled in "
        f"{t['distil_cpu_s']} s of CPU. 1-minute load average "
        f"{r['load_average_1m'][0]}-{r['load_average_1m'][1]} on 2 shared cores.",
        "",
        "The estimated router ceiling adds the router's own CPU per request with routing off "
        + (f"({base:.3f} ms, from {r['base_source']})" if base else "(n/a)")
        + ": an estimate, not a measurement of the router; `router_overhead.py` measures it.",
        "",
        "## Paths side by side",
        "",
        f"Static stage settings (train-chosen): {r['static_params']}.",
        "",
        "| examples | path | decided by cheap / static / full (val in-scope) | same on "
        "oos_val | classifier CPU / decision | static stage alone | est. router RPS/core "
        "| raw acc | in-scope acc (threshold) | OOS recall |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, paths in r["paths"].items():
        for path, x in paths.items():
            us = x["static_stage_us"]
            lines.append(
                f"| {name} | {path} | {_shares(x['decided_in_scope'])} | "
                f"{_shares(x['decided_oos'])} | {x['cpu_ms']:.3f} ms | "
                + (f"{us:.0f} us" if us is not None else "-")
                + f" | {x.get('estimated_rps_per_core', 'n/a')} | {_quality_cells(x)} |"
            )
    lines += [
        "",
        "## The cheap stage's cut (router's path, 50 a domain)",
        "",
        "| cheap cut | decided by cheap / static / full (val in-scope) | classifier CPU / "
        "decision | est. router RPS/core | raw acc | in-scope acc (threshold) | OOS recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in r["rows"]:
        cut = "never" if x["cut"] > 1 else f"{x['cut']}"
        if x["cut"] == r["chosen_cut"]:
            cut += " **chosen**"
        lines.append(
            f"| {cut} | {_shares(x['decided_in_scope'])} | {x['cpu_ms']:.3f} ms | "
            f"{x.get('estimated_rps_per_core', 'n/a')} | {_quality_cells(x)} |"
        )
    return "\n".join([*lines, ""])


if __name__ == "__main__":
    main()
