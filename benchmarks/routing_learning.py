"""The learning-loop settings of the routing benchmark (called by routing_quality.py).

(a) full data, operating point from the recommender on train + oos_train only;
(b) few-shot: 5 examples per intent (75 per domain), as users write them;
(c) learning curve: start few-shot, replay the rest of train as feedback-labelled
    traffic, re-learn every ROUND requests with the learning package, score val;
(d) calibration of the routing confidence: calibrator fitted on a train split, ECE on
    val + oos_val before and after.
Nothing is chosen on val / oos_val: they are only scored. Intervals: Wilson for
accuracies, Clopper-Pearson (exact) for the out-of-scope recall, both 95%.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

import numpy as np
from routing_quality import cv_negatives, domains_of, scored, sid, split_train

from slmfleet.learn.bounds import cp_interval, wilson
from slmfleet.learn.calibrate import apply_many, fit_best, reliability
from slmfleet.learn.outcomes import OUT_OF_DOMAIN, OutcomeRecord
from slmfleet.learn.recommend import recommend_routing
from slmfleet.learn.relearn import candidates, extended
from slmfleet.learn.risk import RiskSpec
from slmfleet.router.classify import ClassifierParams, DomainClassifier

RISK = RiskSpec.model_validate({"confidence": 0.95, "outOfDomain": {"minRecall": 0.8}})
SHOTS = 5
ROUND = 500
ROUNDS = 8  # 4,000 feedback-labelled requests


def few_shot(train: list[dict], shots: int = SHOTS) -> tuple[list[dict], list[dict]]:
    """(the first ``shots`` examples of each intent, the rest in file order)."""
    seen: dict[str, int] = defaultdict(int)
    few, rest = [], []
    for r in train:
        (few if seen[r["intent"]] < shots else rest).append(r)
        seen[r["intent"]] += 1
    return few, rest


def ood_records(conf: np.ndarray) -> list[OutcomeRecord]:
    return [
        OutcomeRecord(
            request_id=f"o{i}",
            policy="clinc",
            routing_confidence=float(c),
            route_source="classifier",
            true_route=OUT_OF_DOMAIN,
        )
        for i, c in enumerate(conf)
    ]


def in_records(conf: np.ndarray, correct: np.ndarray) -> list[OutcomeRecord]:
    return [
        OutcomeRecord(
            request_id=f"i{i}",
            policy="clinc",
            routing_confidence=float(c),
            route_source="classifier",
            route="x" if ok else "y",
            true_route="x",
        )
        for i, (c, ok) in enumerate(zip(conf, correct, strict=True))
    ]


def operating_point(threshold, conf_in, correct, conf_oos) -> dict:
    """Scores at a fixed threshold on val/oos_val, with intervals."""
    n_in, n_oos = len(conf_in), len(conf_oos)
    right = int(np.sum(correct & (conf_in >= threshold)))
    esc = int(np.sum(conf_oos < threshold))
    return {
        "threshold": threshold,
        "in_scope_accuracy": right / n_in,
        "in_scope_interval": wilson(right, n_in),
        "oos_recall": esc / n_oos,
        "oos_recall_interval": cp_interval(esc, n_oos),
        "raw_accuracy": float(correct.mean()),
        "raw_interval": wilson(int(correct.sum()), n_in),
    }


def recommended(conf_oos_train: np.ndarray, conf_in=None, correct=None) -> dict:
    recs = ood_records(conf_oos_train)
    if conf_in is not None:
        recs += in_records(conf_in, correct)
    r = recommend_routing(recs, RISK)
    assert r is not None
    return {
        "threshold": r.proposed,
        "point": r.point,
        "bound": r.bound,
        "refused": r.refused,
        "samples": r.samples,
    }


def full_data(clf, neg_clf, domains, enc, train, val, oos_train, oos_val) -> dict:
    """(a): threshold from the recommender on oos_train (out of sample for the model
    without negatives; 5-fold cross-fitted for the model that learns them)."""
    out = {}
    conf_ot = np.array([r.confidence for r in clf.predict_many([r["text"] for r in oos_train])])
    fit_rows, hold = split_train(train)
    tune = DomainClassifier.fit(domains_of(fit_rows), encoder=enc)
    ti, to, _ = scored(tune, hold, [])
    rec = recommended(conf_ot, ti, to)
    ci, co, cv = scored(clf, val, oos_val)
    out["embed+tfidf"] = {"recommender": rec} | operating_point(rec["threshold"], ci, co, cv)
    cn, _ = cv_negatives(domains, enc, oos_train)
    rec = recommended(cn)
    ci, co, cv = scored(neg_clf, val, oos_val)
    out["embed+tfidf+negatives"] = {"recommender": rec} | operating_point(
        rec["threshold"], ci, co, cv
    )
    return out


def few_shot_setting(enc, train, val, oos_train, oos_val) -> dict:
    """(b): 75 examples per domain, with the classifier's defaults (chosen on train
    splits at this size among others: router/classifier_params.py)."""
    few, _ = few_shot(train)
    doms = domains_of(few)
    out: dict = {"examples_per_domain": len(few) // len(doms)}
    for name, params in (("defaults", ClassifierParams()),):
        for neg in (False, True):
            t0 = time.perf_counter()
            if neg:
                clf = DomainClassifier.fit(
                    doms, encoder=enc, params=params, negatives=[r["text"] for r in oos_train]
                )
                cn, _ = cv_negatives_params(doms, enc, oos_train, params)
            else:
                clf = DomainClassifier.fit(doms, encoder=enc, params=params)
                cn = np.array(
                    [r.confidence for r in clf.predict_many([r["text"] for r in oos_train])]
                )
            fit_s = time.perf_counter() - t0
            rec = recommended(cn)
            ci, co, cv = scored(clf, val, oos_val)
            thr = rec["threshold"] if rec["threshold"] is not None else 1.0
            key = f"{name}{'+negatives' if neg else ''}"
            out[key] = {"recommender": rec, "fit_seconds": round(fit_s, 2)} | operating_point(
                thr, ci, co, cv
            )
    return out


def cv_negatives_params(domains, enc, oos_rows, params, folds: int = 5):
    """cv_negatives with explicit classifier parameters."""
    texts = [r["text"] for r in oos_rows]
    conf = []
    for f in range(folds):
        negs = [t for i, t in enumerate(texts) if i % folds != f]
        c = DomainClassifier.fit(domains, encoder=enc, params=params, negatives=negs)
        conf.append(np.array([r.confidence for r in c.predict_many(texts[f::folds])]))
    return np.concatenate(conf), None


def learning_curve(enc, train, val, oos_train, params: ClassifierParams) -> dict:
    """(c): feedback on the rest of train (shuffled, seed 0) and on oos_train (as
    out-of-domain), re-learned every ROUND requests through learn.relearn."""
    few, rest = few_shot(train)
    rng = np.random.default_rng(0)
    traffic = [("in", r) for r in rest] + [("oos", r) for r in oos_train]
    order = rng.permutation(len(traffic))
    traffic = [traffic[i] for i in order]
    domains = domains_of(few)
    negatives: list[str] = []
    points = []
    vtexts = [r["text"] for r in val]
    vtruth = np.array([sid(r["domain"]) for r in val])

    def score(doms, negs) -> tuple[float, tuple[float, float], float]:
        t0 = time.perf_counter()
        clf = DomainClassifier.fit(doms, encoder=enc, params=params, negatives=negs)
        fit_s = time.perf_counter() - t0
        best = np.array([p.best for p in clf.predict_many(vtexts)])
        k = int((best == vtruth).sum())
        return k / len(val), wilson(k, len(val)), fit_s

    acc, ci, fit_s = score(domains, negatives)
    points.append({"feedback": 0, "raw_accuracy": acc, "interval": ci, "fit_seconds": fit_s})
    for rnd in range(1, ROUNDS + 1):
        batch = traffic[(rnd - 1) * ROUND : rnd * ROUND]
        recs = [
            OutcomeRecord(
                request_id=f"t{rnd}-{i}",
                policy="clinc",
                routing_text=r["text"],
                source="feedback",
                true_route=OUT_OF_DOMAIN if kind == "oos" else sid(r["domain"]),
            )
            for i, (kind, r) in enumerate(batch)
        ]
        c = candidates(recs, domains, negatives)
        domains = extended(domains, c)
        negatives = [*negatives, *c.negatives]
        acc, ci, fit_s = score(domains, negatives)
        points.append(
            {
                "feedback": rnd * ROUND,
                "raw_accuracy": acc,
                "interval": ci,
                "learned": c.count,
                "learned_negatives": len(c.negatives),
                "fit_seconds": round(fit_s, 2),
            }
        )
        print(f"  learning curve: {rnd * ROUND} feedback -> raw {acc:.4f}", flush=True)
    return {"round": ROUND, "params": vars(params), "points": points}


def calibration(clf, enc, train, val, oos_train, oos_val) -> dict:
    """(d): the routing confidence as P(routed to the right domain); calibrator chosen by
    held-out likelihood on the train split (80% fitted, 20% + oos_train scored), ECE on
    val + oos_val (15 bins too, as ECE depends on binning)."""
    fit_rows, hold = split_train(train)
    tune = DomainClassifier.fit(domains_of(fit_rows), encoder=enc)
    ti, to, tn = scored(tune, hold, oos_train)
    conf_t = np.concatenate([ti, tn])
    right_t = np.concatenate([to, np.zeros(len(tn), bool)])
    fitted = fit_best(conf_t, right_t)
    ci, co, cv = scored(clf, val, oos_val)
    conf_v = np.concatenate([ci, cv])
    right_v = np.concatenate([co, np.zeros(len(cv), bool)])
    after = apply_many(fitted.calibrator, conf_v)
    t0 = time.perf_counter()
    for c in conf_v[:2000]:
        apply_many(fitted.calibrator, [c])
    apply_us = (time.perf_counter() - t0) / min(2000, len(conf_v)) * 1e6
    return {
        "method": fitted.calibrator.method,
        "held_out_nll": fitted.held_out_nll,
        "calibrator": fitted.calibrator.wire() | {"knotsX": "...", "knotsY": "..."}
        if fitted.calibrator.method == "isotonic"
        else fitted.calibrator.wire(),
        "fitted_on": len(conf_t),
        "ece_before": reliability(conf_v, right_v).ece,
        "ece_after": reliability(after, right_v).ece,
        "ece15_before": reliability(conf_v, right_v, 15).ece,
        "ece15_after": reliability(after, right_v, 15).ece,
        "ece_train_split_cv_after": fitted.after_cv.ece,
        "apply_us": round(apply_us, 2),
        "scored": len(conf_v),
    }


def run(clf, neg_clf, domains, enc, train, val, oos_train, oos_val) -> dict:
    out: dict = {"load_average_1m_start": round(os.getloadavg()[0], 2)}
    t0 = time.perf_counter()
    out["full_data_recommended"] = full_data(
        clf, neg_clf, domains, enc, train, val, oos_train, oos_val
    )
    out["calibration"] = calibration(clf, enc, train, val, oos_train, oos_val)
    out["few_shot"] = few_shot_setting(enc, train, val, oos_train, oos_val)
    out["learning_curve"] = learning_curve(enc, train, val, oos_train, ClassifierParams())
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    return out


def _pct(x: float) -> str:
    return f"{x:.2%}"


def _ci(iv) -> str:
    return f"[{iv[0]:.2%}, {iv[1]:.2%}]"


def markdown(r: dict) -> list[str]:
    fd, cal, fs, lc = (
        r["full_data_recommended"],
        r["calibration"],
        r["few_shot"],
        r["learning_curve"],
    )
    lines = [
        "## The learning loop (issue 12): operating points from the recommender",
        "",
        "Every threshold below comes from `slmfleet.learn.recommend.recommend_routing` with "
        "the risk *escalate >= 80% of out-of-scope requests, with 95% confidence* "
        "(Clopper-Pearson lower bound on oos_train, fixed-sequence over the threshold grid), "
        "computed from train + oos_train only; val / oos_val are only scored. Intervals: "
        "Wilson 95% for accuracies, Clopper-Pearson 95% for the OOS recall (oos_val has only "
        "100 queries: its interval is wide, and the lower bound is what the target can claim).",
        "",
        "### (a) Full data (1,500 examples per domain)",
        "",
        "| classifier | threshold | oos_train recall (lower bound) | raw acc [95% CI] "
        "| in-scope acc [95% CI] | OOS recall on oos_val [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for name, x in fd.items():
        rec = x["recommender"]
        lines.append(
            f"| {name} | {x['threshold']:.3f} | {rec['point']:.0%} ({rec['bound']:.1%}) | "
            f"{_pct(x['raw_accuracy'])} {_ci(x['raw_interval'])} | "
            f"{_pct(x['in_scope_accuracy'])} {_ci(x['in_scope_interval'])} | "
            f"{x['oos_recall']:.0%} {_ci(x['oos_recall_interval'])} |"
        )
    best = max(fd.values(), key=lambda x: x["in_scope_accuracy"])
    met = best["in_scope_accuracy"] >= 0.98 and best["oos_recall"] >= 0.8
    lines += [
        "",
        f"Target >= 98.0% in-scope at >= 80% OOS recall: {'met' if met else 'NOT met'} "
        f"(best: {_pct(best['in_scope_accuracy'])} at {best['oos_recall']:.0%} recall, recall "
        f"lower bound {best['oos_recall_interval'][0]:.1%}). The recommender asks for 80% "
        "*with 95% confidence* on 100 oos_train queries, so it picks a stricter threshold "
        "than the point estimate would (the earlier operating point claimed 80% and "
        "escalated ~69% of an independent held-back set).",
        "",
        f"### (b) Few-shot ({fs['examples_per_domain']} examples per domain: the first "
        f"{SHOTS} of each intent)",
        "",
        "| parameters | threshold | raw acc [95% CI] | in-scope acc [95% CI] "
        "| OOS recall [95% CI] | fit (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name, x in fs.items():
        if not isinstance(x, dict):
            continue
        lines.append(
            f"| {name} | {x['threshold']:.3f} | {_pct(x['raw_accuracy'])} "
            f"{_ci(x['raw_interval'])} | {_pct(x['in_scope_accuracy'])} "
            f"{_ci(x['in_scope_interval'])} | {x['oos_recall']:.0%} "
            f"{_ci(x['oos_recall_interval'])} | {x['fit_seconds']} |"
        )
    top = max((x for x in fs.values() if isinstance(x, dict)), key=lambda x: x["raw_accuracy"])
    lines += [
        "",
        f"Targets: >= 95% raw: {'met' if top['raw_accuracy'] >= 0.95 else 'NOT met'} (best "
        f"{_pct(top['raw_accuracy'])}); >= 90% in-scope at >= 80% OOS recall: "
        + (
            "met"
            if any(
                x["in_scope_accuracy"] >= 0.9 and x["oos_recall"] >= 0.8
                for x in fs.values()
                if isinstance(x, dict)
            )
            else "NOT met"
        )
        + ". The classifier's defaults (`router/classifier_params.py`) were chosen on "
        "splits of train at this size and others, never on val.",
        "",
        f"### (c) Learning curve (start few-shot, re-learn every {lc['round']} "
        "feedback-labelled requests)",
        "",
        "Traffic: the rest of train (shuffled) plus oos_train, each request's feedback giving "
        "its true domain (or out-of-domain); `learn.relearn.candidates` turns them into "
        "examples / out-of-domain examples and the classifier is refitted; val scored after "
        "each round (raw accuracy: routed to the right domain, no threshold).",
        "",
        "| feedback requests | raw acc [95% CI] | learned this round | fit (s) |",
        "|---|---|---|---|",
    ]
    for p in lc["points"]:
        lines.append(
            f"| {p['feedback']} | {_pct(p['raw_accuracy'])} {_ci(p['interval'])} | "
            f"{p.get('learned', '-')} | {p['fit_seconds']:.1f} |"
        )
    at3k = next((p for p in lc["points"] if p["feedback"] >= 3000), lc["points"][-1])
    lines += [
        "",
        f"Target >= 97.5% raw after 3,000 feedback-labelled requests: "
        f"{'met' if at3k['raw_accuracy'] >= 0.975 else 'NOT met'} "
        f"({_pct(at3k['raw_accuracy'])} {_ci(at3k['interval'])}).",
        "",
        "### (d) Calibration of the routing confidence",
        "",
        f"The confidence as P(routed to the right domain); calibrator chosen by 5-fold "
        f"held-out likelihood on the train split ({cal['fitted_on']} outcomes: 20% of train "
        "scored by a model fitted on the other 80%, plus oos_train), then applied to the "
        f"full-train classifier on val + oos_val ({cal['scored']} queries).",
        "",
        "| method | ECE before (10 bins) | ECE after | ECE before (15 bins) | ECE after "
        "| apply cost |",
        "|---|---|---|---|---|---|",
        f"| {cal['method']} | {cal['ece_before']:.4f} | {cal['ece_after']:.4f} | "
        f"{cal['ece15_before']:.4f} | {cal['ece15_after']:.4f} | {cal['apply_us']} us |",
        "",
        "Target ECE <= 0.03 after calibration: "
        f"{'met' if cal['ece_after'] <= 0.03 else 'NOT met'}.",
        "",
        f"These settings took {r['seconds']} s on one pinned core; 1-minute load average "
        f"{r.get('load_average_1m_start', '?')} at their start, "
        f"{r.get('load_average_1m_end', '?')} at their end (2 cores shared with other work). "
        "Quality figures are deterministic (two runs gave the same numbers); timings are "
        "upper bounds.",
        "",
    ]
    return lines
