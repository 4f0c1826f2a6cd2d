"""Routing quality of the domain classifier on CLINC150: accuracy vs out-of-scope escalation.

10 CLINC150 domains = 10 specialists whose ``DomainConfig.examples`` are the domain's
train.jsonl queries (all 1,500 per domain, no description or keywords); out_of_scope
queries must escalate. Measured on one pinned core: fit time, the in-scope accuracy /
OOS recall curve over the confidence threshold, and per-request decision latency.
Hyperparameters come from a split of train (see ``split_train``); the reported operating
point's threshold comes from oos_train; val is only scored.

A separate section measures the optional out-of-domain examples (``negatives``): the
same classifier fitted with oos_train.jsonl as negatives. Those are then training data,
so its threshold comes from 5-fold cross-validation on oos_train instead (fit with four
fifths as negatives, score the held-out fifth; the lowest threshold escalating >= 80% of
the pooled held-out queries); val is again only scored.

Data: $SLMFLEET_DATA or ../shared/data/clinc150 next to the repo (never copied in).
The sizes users write (5 examples an intent, the router benchmark's 50 a domain) are
scored in ``_sizes_quality.py``; the defaults come from ``classifier_tuning.py``. The
learning loop's settings (operating points from the recommender, few-shot, learning
curve, calibration) are in ``routing_learning.py`` and reported in the same files.

Run: ``.venv/bin/python benchmarks/routing_quality.py`` (about fifteen minutes on one core).
"""

from __future__ import annotations

import os

# One core, one BLAS thread: set before numpy loads so the latency is a one-core number.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

import _quality_report as quality_report  # noqa: E402
import _sizes_quality as sizes_quality  # noqa: E402
import _staged_quality as staged_quality  # noqa: E402
from _clinc_splits import regimes  # noqa: E402

from slmfleet.api.routerconfig import DomainConfig  # noqa: E402
from slmfleet.router import classify  # noqa: E402
from slmfleet.router.classify import ClassifierParams, DomainClassifier  # noqa: E402
from slmfleet.router.embed import default_encoder  # noqa: E402

DATA = Path(
    os.environ.get("SLMFLEET_DATA")
    or next(
        (
            p / "shared" / "data" / "clinc150"
            for p in Path(__file__).resolve().parents
            if (p / "shared" / "data" / "clinc150").is_dir()
        ),
        Path(__file__).resolve().parents[2] / "shared" / "data" / "clinc150",
    )
)
RESULTS = ROOT / "benchmarks" / "results"
TARGET_RECALL = 0.80
LATENCY_SAMPLE = 600
NEG_FOLDS = 5


def load(split: str) -> list[dict]:
    with open(DATA / f"{split}.jsonl") as f:
        return [json.loads(line) for line in f]


def curve_json(rows: list[tuple[float, float, float]]) -> list[dict[str, float]]:
    return [
        {"threshold": t, "in_scope_accuracy": round(a, 4), "oos_recall": round(r, 3)}
        for t, a, r in rows
    ]


def curve(conf_in, correct, conf_oos, thresholds):
    """(threshold, in-scope accuracy, OOS recall) rows: accepted-and-right / escalated."""
    return [
        (float(t), float(np.mean(correct & (conf_in >= t))), float(np.mean(conf_oos < t)))
        for t in thresholds
    ]


def split_train(train: list[dict]) -> tuple[list[dict], list[dict]]:
    """Tuning split of train: every 5th example of each intent is held out (20%)."""
    seen: dict[str, int] = defaultdict(int)
    fit, hold = [], []
    for r in train:
        (hold if seen[r["intent"]] % 5 == 4 else fit).append(r)
        seen[r["intent"]] += 1
    return fit, hold


def domains_of(rows: list[dict]) -> dict[str, DomainConfig]:
    examples: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        examples[sid(r["domain"])].append(r["text"])
    return {s: DomainConfig(examples=ex) for s, ex in examples.items()}


def sid(domain: str) -> str:
    return f"clinc/{domain.replace('_', '-')}"


def scored(c: DomainClassifier, in_rows: list[dict], oos_rows: list[dict]):
    rin = c.predict_many([r["text"] for r in in_rows])
    conf_in = np.array([r.confidence for r in rin])
    correct = np.array([r.best == sid(v["domain"]) for r, v in zip(rin, in_rows, strict=True)])
    conf_oos = np.array([r.confidence for r in c.predict_many([r["text"] for r in oos_rows])])
    return conf_in, correct, conf_oos


def oos_threshold(conf_oos: np.ndarray, thresholds: np.ndarray) -> float:
    """The lowest grid threshold escalating >= TARGET_RECALL of the given OOS queries."""
    return next(float(t) for t in thresholds if np.mean(conf_oos < t) >= TARGET_RECALL)


def oos_folds(oos_rows: list[dict]) -> list[tuple[list[str], list[str]]]:
    """(negatives, held-out) texts per fold: every NEG_FOLDS-th query is held out."""
    texts = [r["text"] for r in oos_rows]
    return [
        ([t for i, t in enumerate(texts) if i % NEG_FOLDS != f], texts[f::NEG_FOLDS])
        for f in range(NEG_FOLDS)
    ]


def cv_negatives(domains, enc, oos_rows: list[dict], in_rows: list[dict] | None = None):
    """Fit once per fold with the other folds' OOS queries as negatives; return the pooled
    held-out OOS confidences and, if given, per-fold (confidence, correct) on in_rows."""
    conf_oos, per_fold = [], []
    for negs, held in oos_folds(oos_rows):
        c = DomainClassifier.fit(domains, encoder=enc, negatives=negs)
        conf_oos.append(np.array([r.confidence for r in c.predict_many(held)]))
        if in_rows is not None:
            ci, co, _ = scored(c, in_rows, [])
            per_fold.append((ci, co))
    return np.concatenate(conf_oos), per_fold


def best_at_recall(rows):
    ok = [r for r in rows if r[2] >= TARGET_RECALL]
    t = max(ok, key=lambda r: r[1]) if ok else None
    return {"threshold": t[0], "in_scope_accuracy": t[1], "oos_recall": t[2]} if t else None


def latency_run(clf: DomainClassifier, enc, sample: list[str]) -> dict:
    for t in sample[:50]:
        clf.predict(t)
    lat, enc_lat = [], []
    load0 = os.getloadavg()[0]
    for t in sample:
        s = time.perf_counter()
        clf.predict(t)
        lat.append(time.perf_counter() - s)
        s = time.perf_counter()
        enc.encode_one(t)
        enc_lat.append(time.perf_counter() - s)
    ms = lambda xs, q: round(float(np.percentile(xs, q)) * 1e3, 3)  # noqa: E731
    return {
        "decision_p50": ms(lat, 50),
        "decision_p99": ms(lat, 99),
        "encode_p50": ms(enc_lat, 50),
        "encode_p99": ms(enc_lat, 99),
        "load_average_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> None:
    train, val = load("train"), load("val")
    oos_train, oos_val = load("oos_train"), load("oos_val")
    domains = domains_of(train)
    thresholds = np.round(np.arange(0.0, 1.0001, 0.005), 3)

    enc = default_encoder()
    enc.encode_one("warm up")
    classify.clear_embedding_cache()
    t0 = time.perf_counter()
    clf = DomainClassifier.fit(domains, encoder=enc)
    fit_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    DomainClassifier.fit(domains, encoder=enc)
    fit_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    tfidf_clf = DomainClassifier.fit(domains, embed=False)
    fit_tfidf = time.perf_counter() - t0

    report: dict = {
        "data": {
            "domains": len(domains),
            "examples_per_domain": {s: len(d.examples) for s, d in domains.items()},
            "val_in_scope": len(val),
            "oos_val": len(oos_val),
            "oos_train": len(oos_train),
        },
        "params": vars(ClassifierParams())
        | {"encoder": enc.name, "backend": enc.backend, "int8": getattr(enc, "int8", False)},
    }

    # Tuning split (train only): where the hyperparameters were chosen.
    fit_rows, hold = split_train(train)
    tune_clf = DomainClassifier.fit(domains_of(fit_rows), encoder=enc)
    ci, co, cn = scored(tune_clf, hold, oos_train)
    tune_rows = curve(ci, co, cn, thresholds)
    report["tuning_split"] = {
        "fit": f"{len(fit_rows)} train examples (80% of each intent)",
        "in_scope": f"{len(hold)} held-out train examples",
        "oos": f"{len(oos_train)} oos_train",
        "raw_accuracy_no_threshold": float(co.mean()),
        "best_at_80_recall": best_at_recall(tune_rows),
    }

    for name, c in (("embed+tfidf", clf), ("tfidf_only", tfidf_clf)):
        conf_in, correct, conf_ov = scored(c, val, oos_val)
        conf_ot = np.array([r.confidence for r in c.predict_many([r["text"] for r in oos_train])])
        rows = curve(conf_in, correct, conf_ov, thresholds)
        # The reported operating point: threshold from training data only (full-train model,
        # the lowest threshold escalating >= 80% of oos_train), fixed before val is scored.
        t_tr = oos_threshold(conf_ot, thresholds)
        at_tr = curve(conf_in, correct, conf_ov, [t_tr])[0]
        report[name] = {
            "operating_point_intervals": sizes_quality.point(t_tr, conf_in, correct, conf_ov),
            "raw_accuracy_no_threshold": float(correct.mean()),
            "operating_point_threshold_from_oos_train": {
                "threshold": t_tr,
                "oos_train_recall": float(np.mean(conf_ot < t_tr)),
                "in_scope_accuracy": at_tr[1],
                "oos_recall": at_tr[2],
            },
            "operating_point_tuned_on_val": best_at_recall(rows),
            "curve": curve_json(rows),
        }

    # -- Out-of-domain examples: oos_train as negatives (see the module docstring) -------
    neg_texts = [r["text"] for r in oos_train]
    t0 = time.perf_counter()
    neg_clf = DomainClassifier.fit(domains, encoder=enc, negatives=neg_texts)
    fit_neg = time.perf_counter() - t0
    # Tuning split again (train split + oos_train folds): where negative_weight was chosen.
    cn, folds = cv_negatives(domains_of(fit_rows), enc, oos_train, hold)
    t_tune = oos_threshold(cn, thresholds)
    tune_neg = {
        "threshold_from_held_out_oos_train": t_tune,
        "held_out_oos_train_recall": float(np.mean(cn < t_tune)),
        "in_scope_accuracy": float(np.mean([np.mean(co & (ci >= t_tune)) for ci, co in folds])),
        "raw_accuracy_no_threshold": float(np.mean([co.mean() for _, co in folds])),
    }
    # The reported operating point: full-train domains, threshold from held-out oos_train.
    cn, _ = cv_negatives(domains, enc, oos_train)
    t_neg = oos_threshold(cn, thresholds)
    conf_in, correct, conf_ov = scored(neg_clf, val, oos_val)
    rows = curve(conf_in, correct, conf_ov, thresholds)
    at_neg = curve(conf_in, correct, conf_ov, [t_neg])[0]
    report["embed+tfidf+negatives"] = {
        "operating_point_intervals": sizes_quality.point(t_neg, conf_in, correct, conf_ov),
        "negatives": f"{len(neg_texts)} oos_train queries",
        "params": {k: v for k, v in vars(ClassifierParams()).items() if k.startswith("negative")},
        "tuning_split_cv": tune_neg,
        "raw_accuracy_no_threshold": float(correct.mean()),
        "operating_point_threshold_from_held_out_oos_train": {
            "threshold": t_neg,
            "held_out_oos_train_recall": float(np.mean(cn < t_neg)),
            "folds": NEG_FOLDS,
            "in_scope_accuracy": at_neg[1],
            "oos_recall": at_neg[2],
        },
        "operating_point_tuned_on_val": best_at_recall(rows),
        "curve": curve_json(rows),
    }

    # Decision latency: one predict() per request, the router's path, on one pinned core.
    # Other work shares the machine: three runs, the one with the median p50 is reported.
    rng = np.random.default_rng(0)
    pool = [r["text"] for r in val] + [r["text"] for r in oos_val]
    sample = [pool[i] for i in rng.choice(len(pool), LATENCY_SAMPLE, replace=False)]
    runs = [latency_run(clf, enc, sample) for _ in range(3)]
    med = sorted(runs, key=lambda r: r["decision_p50"])[1]
    report["latency_ms"] = med | {
        "requests": LATENCY_SAMPLE,
        "runs_decision_p50": [r["decision_p50"] for r in runs],
        "runs_decision_p99": [r["decision_p99"] for r in runs],
        "runs_load_average_1m": [r["load_average_1m"] for r in runs],
        "cores": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }
    runs = [latency_run(neg_clf, enc, sample) for _ in range(3)]
    med = sorted(runs, key=lambda r: r["decision_p50"])[1]
    report["latency_ms_with_negatives"] = med | {
        "runs_decision_p50": [r["decision_p50"] for r in runs],
        "runs_decision_p99": [r["decision_p99"] for r in runs],
    }
    # The router's staged path (cheap TF-IDF stage first): the cut from train, then val.
    report["staged_cut_choice"] = staged_quality.choose_cut(
        train,
        oos_train,
        enc=enc,
        domains_of=domains_of,
        sid=sid,
        recall=TARGET_RECALL,
        regimes=lambda rows: regimes(rows, split_train),
    )
    report["staged_on_val"] = staged_quality.on_val(
        clf, val, oos_val, oos_train, sid=sid, recall=TARGET_RECALL, sample=sample
    )
    report["sizes"] = sizes_quality.run(
        train, val, oos_train, oos_val, enc=enc, sid=sid, cv_negatives=cv_negatives
    )
    report["fit_seconds"] = {
        "cold_15k_examples": round(fit_cold, 2),
        "refit_cached_embeddings": round(fit_warm, 2),
        "tfidf_only": round(fit_tfidf, 2),
        "with_negatives_cached_embeddings": round(fit_neg, 2),
    }
    import routing_learning  # the learning-loop settings (a)-(d)

    report["learning"] = routing_learning.run(
        clf, neg_clf, domains, enc, train, val, oos_train, oos_val
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "routing_quality.json").write_text(json.dumps(report, indent=1) + "\n")
    text = quality_report.markdown(report) + "\n".join(
        routing_learning.markdown(report["learning"])
    )
    (RESULTS / "routing_quality.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
