"""The router's staged classifier on CLINC150 (a section of routing_quality.py).

The router classifies through ``StagedClassifier``: the TF-IDF stage alone when its top
probability reaches ``ClassifierParams.cheap_cut``, the full classifier otherwise. Here:

1. **Choosing the cut on train only**, in two regimes: all train examples (fit on 80% of
   each intent, score the other 20% + oos_train) and 50 examples a domain (fit on 50 a
   domain from those 80%, score 2,000 of the held-out 20% + oos_train); and, for the
   out-of-scope side, the classifier fitted on all of train scored on oos_train. For
   each candidate cut: the staged in-scope accuracy at the oos_train threshold (lowest
   threshold escalating >= 80% of oos_train, as for the full classifier), the fraction
   decided by the cheap stage, and its *extra slips*: oos_train queries the cheap stage
   routes that the full classifier escalates at its own threshold. The chosen cut is the
   lowest with accuracy within 0.1 point of the full classifier's and no extra slip, in
   every setting: the cheap stage may skip work, not change what escalates.
2. **Val, scored only**: the staged classifier fitted on all of train, with its
   threshold from oos_train, beside the full classifier (today's path).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

import numpy as np

from slmfleet.router.classify import DomainClassifier
from slmfleet.router.staged import StagedClassifier

CUTS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99)
TOLERANCE = 0.001
THRESHOLDS = np.round(np.arange(0.0, 1.0001, 0.01), 2)


def _threshold(conf_oos: np.ndarray, recall: float) -> float:
    return next(float(t) for t in THRESHOLDS if np.mean(conf_oos < t) >= recall)


def _extra_slips(clf: DomainClassifier, cut: float, rows_oos, recall) -> int:
    """OOS queries the cheap stage would route that the full classifier escalates."""
    texts = [r["text"] for r in rows_oos]
    conf = np.array([r.confidence for r in clf.predict_many(texts)])
    t = _threshold(conf, recall)
    staged = _staged(clf, cut)
    cheap = np.array([staged.cheap(staged.clip(x.lower())) is not None for x in texts])
    return int(np.sum(cheap & (conf < t)))


def _score(clf, rows_in, rows_oos, sid, recall):
    """(raw acc, threshold, in-scope acc at it, OOS recall at it, cheap fraction in, oos)."""
    texts_in = [r["text"] for r in rows_in]
    texts_oos = [r["text"] for r in rows_oos]
    if isinstance(clf, StagedClassifier):
        rin, roos = clf.predict_staged(texts_in), clf.predict_staged(texts_oos)
        cheap_in = np.mean([s == "cheap" for _, s in rin])
        cheap_oos = np.mean([s == "cheap" for _, s in roos])
        rin, roos = [r for r, _ in rin], [r for r, _ in roos]
    else:
        rin, roos = clf.predict_many(texts_in), clf.predict_many(texts_oos)
        cheap_in = cheap_oos = 0.0
    ci = np.array([r.confidence for r in rin])
    co = np.array([r.best == sid(v["domain"]) for r, v in zip(rin, rows_in, strict=True)])
    cn = np.array([r.confidence for r in roos])
    t = _threshold(cn, recall)
    return {
        "raw_accuracy": float(co.mean()),
        "threshold": t,
        "in_scope_accuracy": float(np.mean(co & (ci >= t))),
        "oos_recall": float(np.mean(cn < t)),
        "cheap_fraction_in_scope": float(cheap_in),
        "cheap_fraction_oos": float(cheap_oos),
    }


def _staged(clf: DomainClassifier, cut: float) -> StagedClassifier:
    s = StagedClassifier(clf)
    s.cut = cut
    return s


def choose_cut(train, oos_train, *, enc, domains_of, split_train, sid, recall):
    fit_rows, hold = split_train(train)
    rng = np.random.default_rng(0)
    by_domain: dict[str, list[dict]] = defaultdict(list)
    for r in fit_rows:
        by_domain[r["domain"]].append(r)
    small = [rs[i] for rs in by_domain.values() for i in rng.choice(len(rs), 50, replace=False)]
    sample = [hold[i] for i in rng.choice(len(hold), 2000, replace=False)]
    regimes = {"1500_per_domain": (fit_rows, hold), "50_per_domain": (small, sample)}
    out: dict = {"tolerance": TOLERANCE, "regimes": {}}
    ok_everywhere = set(CUTS)
    for name, (rows, scored_rows) in regimes.items():
        clf = DomainClassifier.fit(domains_of(rows), encoder=enc)
        full = _score(clf, scored_rows, oos_train, sid, recall)
        cuts = {}
        for cut in CUTS:
            cuts[str(cut)] = res = _score(_staged(clf, cut), scored_rows, oos_train, sid, recall)
            res["extra_oos_slips"] = _extra_slips(clf, cut, oos_train, recall)
            if (
                res["in_scope_accuracy"] < full["in_scope_accuracy"] - TOLERANCE
                or res["extra_oos_slips"]
            ):
                ok_everywhere.discard(cut)
        out["regimes"][name] = {"full": full, "cuts": cuts}
    clf = DomainClassifier.fit(domains_of(train), encoder=enc)
    slips = {str(cut): _extra_slips(clf, cut, oos_train, recall) for cut in CUTS}
    ok_everywhere -= {cut for cut in CUTS if slips[str(cut)]}
    out["all_train_extra_oos_slips"] = slips
    out["chosen_cut"] = min(ok_everywhere) if ok_everywhere else None
    return out


def on_val(clf: DomainClassifier, val, oos_val, oos_train, *, sid, recall, sample):
    staged = StagedClassifier(clf)
    conf_ot = np.array([r.confidence for r in staged.predict_many([r["text"] for r in oos_train])])
    t = _threshold(conf_ot, recall)
    res = _score(staged, val, oos_val, sid, recall)
    # re-score at the oos_train threshold (the reported operating point)
    rin = staged.predict_many([r["text"] for r in val])
    ci = np.array([r.confidence for r in rin])
    co = np.array([r.best == sid(v["domain"]) for r, v in zip(rin, val, strict=True)])
    cn = np.array([r.confidence for r in staged.predict_many([r["text"] for r in oos_val])])
    res["operating_point_threshold_from_oos_train"] = {
        "threshold": t,
        "in_scope_accuracy": float(np.mean(co & (ci >= t))),
        "oos_recall": float(np.mean(cn < t)),
    }
    lat = []
    for text in sample[:50]:
        staged.predict(text)
    load0 = os.getloadavg()[0]
    for text in sample:
        s = time.perf_counter()
        staged.predict(text)
        lat.append(time.perf_counter() - s)
    res["latency_ms"] = {
        "p50": round(float(np.percentile(lat, 50)) * 1e3, 3),
        "p99": round(float(np.percentile(lat, 99)) * 1e3, 3),
        "mean": round(float(np.mean(lat)) * 1e3, 3),
        "load_average_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }
    res["params"] = {"cheap_cut": staged.cut, "max_tokens": staged.max_tokens}
    return res


def markdown(r: dict) -> list[str]:
    ch, v = r["staged_cut_choice"], r["staged_on_val"]
    full = r["embed+tfidf"]["operating_point_threshold_from_oos_train"]
    o = v["operating_point_threshold_from_oos_train"]
    lines = [
        "## The router's staged classifier (cheap TF-IDF stage, then the full classifier)",
        "",
        "The router classifies through `StagedClassifier` (router/staged.py): the TF-IDF "
        f"logistic regression alone when its top probability is >= the cut "
        f"(`ClassifierParams.cheap_cut` = {v['params']['cheap_cut']}), else the full "
        "classifier above; texts clipped to "
        f"{v['params']['max_tokens']} tokens. The cut was chosen on train only (below); val "
        "is only scored.",
        "",
        "| classifier (fit on all train) | raw acc | threshold (from oos_train) | in-scope acc "
        "| OOS recall | decided by the cheap stage (val in-scope / oos_val) | decision p50 / "
        "mean / p99 |",
        "|---|---|---|---|---|---|---|",
        f"| full (today's path) | {r['embed+tfidf']['raw_accuracy_no_threshold']:.2%} | "
        f"{full['threshold']:.2f} | {full['in_scope_accuracy']:.2%} | {full['oos_recall']:.0%} "
        f"| - | {r['latency_ms']['decision_p50']} ms / - / {r['latency_ms']['decision_p99']} ms |",
        f"| staged (the router's path) | {v['raw_accuracy']:.2%} | {o['threshold']:.2f} | "
        f"{o['in_scope_accuracy']:.2%} | {o['oos_recall']:.0%} | "
        f"{v['cheap_fraction_in_scope']:.1%} / {v['cheap_fraction_oos']:.1%} | "
        f"{v['latency_ms']['p50']} / {v['latency_ms']['mean']} / {v['latency_ms']['p99']} ms |",
        "",
        f"Choosing the cut (train split; tolerance {ch['tolerance'] * 100:.1f} point of "
        f"in-scope accuracy against the full classifier): chosen {ch['chosen_cut']}.",
        "",
        "| regime | cut | in-scope acc at the oos_train threshold | decided by the cheap "
        "stage (in-scope / oos_train) | extra OOS slips (of 100) |",
        "|---|---|---|---|---|",
    ]
    for name, reg in ch["regimes"].items():
        f = reg["full"]
        lines.append(
            f"| {name} | full | {f['in_scope_accuracy']:.2%} (t={f['threshold']}) | - | - |"
        )
        for cut, res in reg["cuts"].items():
            lines.append(
                f"| {name} | {cut} | {res['in_scope_accuracy']:.2%} (t={res['threshold']}) | "
                f"{res['cheap_fraction_in_scope']:.1%} / {res['cheap_fraction_oos']:.1%} | "
                f"{res['extra_oos_slips']} |"
            )
    slips = ", ".join(f"{c}: {n}" for c, n in ch["all_train_extra_oos_slips"].items())
    lines += [
        "",
        f"Fitted on all of train, extra slips on oos_train by cut: {slips}.",
    ]
    return [*lines, ""]


__all__ = ["choose_cut", "markdown", "on_val"]
