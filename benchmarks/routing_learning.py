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

import _learning_report
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


_OUTCOMES: dict = {}


def _routing_outcomes(clf, enc, train, oos_train) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, top domain right) on the train split: 20% of train scored by a
    model fitted on the other 80%, plus oos_train (always wrong). Computed once."""
    if "train_split" not in _OUTCOMES:
        fit_rows, hold = split_train(train)
        tune = DomainClassifier.fit(domains_of(fit_rows), encoder=enc)
        ti, to, tn = scored(tune, hold, oos_train)
        _OUTCOMES["train_split"] = (
            np.concatenate([ti, tn]),
            np.concatenate([to, np.zeros(len(tn), bool)]),
        )
    return _OUTCOMES["train_split"]


def calibration(clf, enc, train, val, oos_train, oos_val) -> dict:
    """(d): the routing confidence as P(routed to the right domain); calibrator chosen by
    held-out likelihood on the train split (80% fitted, 20% + oos_train scored), ECE on
    val + oos_val (15 bins too, as ECE depends on binning)."""
    conf_t, right_t = _routing_outcomes(clf, enc, train, oos_train)
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


def calibrated_latency(clf, cal, texts: list[str]) -> dict:
    """Decision latency on one core with the routing calibrator applied as the router
    does (``router.calibration.calibrated_scores`` on every specialist's score), side by
    side with the same decisions uncalibrated (one pass: each request is classified once,
    then calibrated; the embedding cache is cleared first so every text is encoded)."""
    from slmfleet.api.learning import Calibration
    from slmfleet.router import classify
    from slmfleet.router.calibration import calibrated_scores

    policy = Calibration(routing=cal)
    classify.clear_embedding_cache()
    for t in texts[:20]:
        calibrated_scores(policy, clf.predict(t).scores)
    classify.clear_embedding_cache()
    raw, calibrated, apply_only = [], [], []
    load0 = os.getloadavg()[0]
    for t in texts:
        t0 = time.perf_counter()
        r = clf.predict(t)
        t1 = time.perf_counter()
        calibrated_scores(policy, r.scores)
        t2 = time.perf_counter()
        raw.append(t1 - t0)
        calibrated.append(t2 - t0)
        apply_only.append(t2 - t1)
    ms = lambda xs, q: round(float(np.percentile(xs, q)) * 1e3, 3)  # noqa: E731
    return {
        "requests": len(texts),
        "decision_p50": ms(raw, 50),
        "decision_with_calibrator_p50": ms(calibrated, 50),
        "decision_with_calibrator_p99": ms(calibrated, 99),
        "calibrator_p50_us": round(float(np.percentile(apply_only, 50)) * 1e6, 2),
        "load_average_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


def run(clf, neg_clf, domains, enc, train, val, oos_train, oos_val) -> dict:
    out: dict = {"load_average_1m_start": round(os.getloadavg()[0], 2)}
    t0 = time.perf_counter()
    out["full_data_recommended"] = full_data(
        clf, neg_clf, domains, enc, train, val, oos_train, oos_val
    )
    out["calibration"] = calibration(clf, enc, train, val, oos_train, oos_val)
    fitted = fit_best(*_routing_outcomes(clf, enc, train, oos_train))
    pool = [r["text"] for r in val] + [r["text"] for r in oos_val]
    rng = np.random.default_rng(1)
    texts = [pool[i] for i in rng.choice(len(pool), 600, replace=False)]
    out["latency_with_calibrator"] = calibrated_latency(clf, fitted.calibrator, texts)
    out["few_shot"] = few_shot_setting(enc, train, val, oos_train, oos_val)
    out["learning_curve"] = learning_curve(enc, train, val, oos_train, ClassifierParams())
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    return out


def markdown(r: dict) -> list[str]:
    """The report section (``_learning_report``)."""
    return _learning_report.markdown(r, shots=SHOTS)
