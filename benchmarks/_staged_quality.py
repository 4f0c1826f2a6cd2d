"""The router's staged classifier on CLINC150 (a section of routing_quality.py).

The router classifies through ``StagedClassifier``: the TF-IDF stage alone when its top
probability reaches ``ClassifierParams.cheap_cut`` and the request is familiar enough
(``cheap_familiarity``: a quantile of the examples' held-out familiarity), the full
classifier otherwise. Here:

1. **Choosing the pair on train only**, in the three regimes of classifier_tuning.py
   (fit on 50 a domain, 5 an intent, or all of 80% of each intent's examples; score the
   other 20% + oos_train), and, for the out-of-scope side, the classifier fitted on all
   of train scored on oos_train. For each candidate (cut, familiarity quantile): the
   staged raw accuracy, its in-scope accuracy at its own oos_train threshold (the lowest
   escalating >= 80%, as for the full classifier), the fraction decided by the cheap
   stage, and its *extra slips*: oos_train queries the cheap stage routes that the full
   classifier escalates at its own threshold. The rule, fixed before scoring: among the
   pairs whose raw and in-scope accuracy stay within 0.1 point of the full classifier's
   and whose extra slips are at most 1 of the 100 oos_train queries in every setting,
   the one the cheap stage decides most for (mean over the regimes): the cheap stage may
   skip work, not change what is routed or what escalates.
2. **Val, scored only**: the router's staged classifier (the cheap stage, the static
   stage of static_stage_tuning.py, then the full classifier) fitted on all of train,
   with its threshold from oos_train, beside the full classifier.

The full classifier runs once per regime; every pair is then a mask over its results
and the cheap stage's (probability, familiarity), exactly what ``StagedClassifier``
computes for the same clipped text.
"""

from __future__ import annotations

import os
import time

import numpy as np

from slmfleet.router.classifier_parts import domain_texts
from slmfleet.router.classify import DomainClassifier
from slmfleet.router.classifying import normalise
from slmfleet.router.staged import StagedClassifier, static_stage_for
from slmfleet.router.tfidf import held_out_familiarity

CUTS = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99)
QUANTILES = (0.0, 0.1, 0.25)
TOLERANCE = 0.001
MAX_SLIPS = 1
THRESHOLDS = np.round(np.arange(0.0, 1.0001, 0.005), 3)


def _threshold(conf_oos: np.ndarray, recall: float) -> float:
    return next(float(t) for t in THRESHOLDS if np.mean(conf_oos < t) >= recall)


class _Run:
    """One fitted classifier's full and cheap results on in-scope + OOS texts."""

    def __init__(self, clf: DomainClassifier, domains, texts: list[str]) -> None:
        staged = StagedClassifier(clf)
        clipped = [staged.clip(normalise(t)) for t in texts]
        full = clf.predict_many(clipped)
        self.ids = clf.ids
        self.best = np.array([clf.ids.index(r.best) for r in full])
        self.conf = np.array([r.confidence for r in full])
        sig = [clf.tfidf_signals(t) for t in clipped]
        self.p = np.array([s[0].max() if s else 0.0 for s in sig])
        self.pb = np.array([int(s[0].argmax()) if s else 0 for s in sig])
        self.fam = np.array([s[1] if s else 0.0 for s in sig])
        texts_fit = [t for d in domains.values() for t in domain_texts(d)]
        held = held_out_familiarity(clf._word, texts_fit)
        self.floors = {q: float(np.quantile(held, q)) if q > 0 else 0.0 for q in QUANTILES}

    def cheap(self, cut: float, q: float) -> np.ndarray:
        return (self.p >= cut) & (self.fam >= self.floors[q])


def _metrics(run: _Run, use: np.ndarray | None, truth: np.ndarray, n_in: int, recall) -> dict:
    best = run.best if use is None else np.where(use, run.pb, run.best)
    conf = run.conf if use is None else np.where(use, run.p, run.conf)
    ok = best[:n_in] == truth
    t = _threshold(conf[n_in:], recall)
    return {
        "raw_accuracy": float(ok.mean()),
        "threshold": t,
        "in_scope_accuracy": float(np.mean(ok & (conf[:n_in] >= t))),
        "oos_recall": float(np.mean(conf[n_in:] < t)),
        "cheap_fraction_in_scope": 0.0 if use is None else float(use[:n_in].mean()),
        "cheap_fraction_oos": 0.0 if use is None else float(use[n_in:].mean()),
    }


def _slips(run: _Run, use: np.ndarray, n_in: int, recall) -> int:
    """OOS queries the cheap stage would route that the full classifier escalates."""
    t = _threshold(run.conf[n_in:], recall)
    return int(np.sum(use[n_in:] & (run.conf[n_in:] < t)))


def choose_cut(train, oos_train, *, enc, domains_of, sid, recall, regimes):
    """See the module docstring; ``regimes(train)`` -> ({name: fit rows}, held-out rows)."""
    regs, hold = regimes(train)
    texts = [r["text"] for r in hold] + [r["text"] for r in oos_train]
    n_in = len(hold)
    pairs = [(c, q) for c in CUTS for q in QUANTILES]
    out: dict = {"tolerance": TOLERANCE, "max_extra_slips": MAX_SLIPS, "regimes": {}}
    ok = set(pairs)
    cover: dict = {pair: [] for pair in pairs}
    for name, rows in regs.items():
        domains = domains_of(rows)
        clf = DomainClassifier.fit(domains, encoder=enc)
        run = _Run(clf, domains, texts)
        truth = np.array([run.ids.index(sid(r["domain"])) for r in hold])
        full = _metrics(run, None, truth, n_in, recall)
        res_pairs = {}
        for cut, q in pairs:
            use = run.cheap(cut, q)
            res = _metrics(run, use, truth, n_in, recall)
            res["extra_oos_slips"] = _slips(run, use, n_in, recall)
            res_pairs[f"{cut}/{q}"] = res
            cover[(cut, q)].append(res["cheap_fraction_in_scope"])
            if (
                res["in_scope_accuracy"] < full["in_scope_accuracy"] - TOLERANCE
                or res["raw_accuracy"] < full["raw_accuracy"] - TOLERANCE
                or res["extra_oos_slips"] > MAX_SLIPS
            ):
                ok.discard((cut, q))
        out["regimes"][name] = {"full": full, "pairs": res_pairs}
        print(f"  staged cut choice: {name} done", flush=True)
    domains = domains_of(train)
    run = _Run(DomainClassifier.fit(domains, encoder=enc), domains, [r["text"] for r in oos_train])
    slips = {f"{c}/{q}": _slips(run, run.cheap(c, q), 0, recall) for c, q in pairs}
    ok -= {(c, q) for c, q in pairs if slips[f"{c}/{q}"] > MAX_SLIPS}
    out["all_train_extra_oos_slips"] = slips
    best = max(ok, key=lambda pair: (np.mean(cover[pair]), pair)) if ok else None
    out["chosen"] = {"cheap_cut": best[0], "cheap_familiarity": best[1]} if best else None
    return out


def _score(staged: StagedClassifier, rows, sid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, correct, the stage that decided) per row."""
    res = staged.predict_staged([normalise(r["text"]) for r in rows])
    conf = np.array([r.confidence for r, _ in res])
    ok = np.array([r.best == sid(v["domain"]) for (r, _), v in zip(res, rows, strict=True)])
    return conf, ok, np.array([s for _, s in res])


def on_val(clf: DomainClassifier, val, oos_val, oos_train, *, sid, recall, sample):
    staged = StagedClassifier(clf, *static_stage_for(clf))
    ct, _, _ = _score(staged, oos_train, sid)
    t = _threshold(ct, recall)
    ci, co, stage_in = _score(staged, val, sid)
    cn, _, stage_oos = _score(staged, oos_val, sid)
    res = {
        "raw_accuracy": float(co.mean()),
        "cheap_fraction_in_scope": float(np.mean(stage_in == "cheap")),
        "cheap_fraction_oos": float(np.mean(stage_oos == "cheap")),
        "static_fraction_in_scope": float(np.mean(stage_in == "static")),
        "static_fraction_oos": float(np.mean(stage_oos == "static")),
        "operating_point_threshold_from_oos_train": {
            "threshold": t,
            "in_scope_accuracy": float(np.mean(co & (ci >= t))),
            "oos_recall": float(np.mean(cn < t)),
        },
    }
    lat = []
    for text in sample[:50]:
        staged.predict(normalise(text))
    load0 = os.getloadavg()[0]
    for text in sample:
        s = time.perf_counter()
        staged.predict(normalise(text))
        lat.append(time.perf_counter() - s)
    res["latency_ms"] = {
        "p50": round(float(np.percentile(lat, 50)) * 1e3, 3),
        "p99": round(float(np.percentile(lat, 99)) * 1e3, 3),
        "mean": round(float(np.mean(lat)) * 1e3, 3),
        "load_average_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }
    res["params"] = {
        "cheap_cut": staged.cut,
        "cheap_familiarity": clf.params.cheap_familiarity,
        "familiar_floor": clf.familiar_floor,
        "max_tokens": staged.max_tokens,
    }
    return res


def markdown(r: dict) -> list[str]:
    ch, v = r["staged_cut_choice"], r["staged_on_val"]
    full = r["embed+tfidf"]["operating_point_threshold_from_oos_train"]
    o, pv = v["operating_point_threshold_from_oos_train"], v["params"]
    lines = [
        "## The router's staged classifier (cheap TF-IDF stage, static stage, full classifier)",
        "",
        "The router classifies through `StagedClassifier` (router/staged.py): the TF-IDF "
        f"logistic regression alone when its top probability is >= `cheap_cut` "
        f"({pv['cheap_cut']}) and the share of the request's words the examples know is >= "
        f"the `cheap_familiarity` quantile ({pv['cheap_familiarity']}) of the examples' own "
        f"held-out familiarity ({pv['familiar_floor']:.2f} with all of train), else the full "
        f"classifier above; texts clipped to {pv['max_tokens']} tokens. Both chosen on train "
        "only (below); val is only scored. Between the two, the static-embedding stage "
        "(settings from static_stage_tuning.py, also train only); classifier_cost.md has "
        "each path side by side.",
        "",
        "| classifier (fit on all train) | raw acc | threshold (from oos_train) | in-scope acc "
        "| OOS recall | decided by the cheap / static stage (val in-scope / oos_val) | "
        "decision p50 / mean / p99 |",
        "|---|---|---|---|---|---|---|",
        f"| full | {r['embed+tfidf']['raw_accuracy_no_threshold']:.2%} | "
        f"{full['threshold']:.3f} | {full['in_scope_accuracy']:.2%} | {full['oos_recall']:.0%} "
        f"| - | {r['latency_ms']['decision_p50']} ms / - / {r['latency_ms']['decision_p99']} ms |",
        f"| staged (the router's path) | {v['raw_accuracy']:.2%} | {o['threshold']:.3f} | "
        f"{o['in_scope_accuracy']:.2%} | {o['oos_recall']:.0%} | "
        f"{v['cheap_fraction_in_scope']:.1%} / {v['cheap_fraction_oos']:.1%}; "
        f"{v.get('static_fraction_in_scope', 0):.1%} / {v.get('static_fraction_oos', 0):.1%} | "
        f"{v['latency_ms']['p50']} / {v['latency_ms']['mean']} / {v['latency_ms']['p99']} ms |",
        "",
        f"Choosing the pair (train split; raw and in-scope accuracy within "
        f"{ch['tolerance'] * 100:.1f} point of the full classifier's and at most "
        f"{ch['max_extra_slips']} extra slip of 100 in every setting; then the most decided "
        f"by the cheap stage): chosen {ch['chosen']}.",
        "",
        "| regime | cut / familiarity quantile | raw acc | in-scope acc at the oos_train "
        "threshold | decided by the cheap stage (in-scope / oos_train) | extra OOS slips "
        "(of 100) |",
        "|---|---|---|---|---|---|",
    ]
    for name, reg in ch["regimes"].items():
        f = reg["full"]
        lines.append(
            f"| {name} | full | {f['raw_accuracy']:.2%} | {f['in_scope_accuracy']:.2%} "
            f"(t={f['threshold']}) | - | - |"
        )
        for pair, res in reg["pairs"].items():
            lines.append(
                f"| {name} | {pair} | {res['raw_accuracy']:.2%} | "
                f"{res['in_scope_accuracy']:.2%} (t={res['threshold']}) | "
                f"{res['cheap_fraction_in_scope']:.1%} / {res['cheap_fraction_oos']:.1%} | "
                f"{res['extra_oos_slips']} |"
            )
    slips = ", ".join(f"{c}: {n}" for c, n in ch["all_train_extra_oos_slips"].items())
    lines += ["", f"Fitted on all of train, extra slips on oos_train by pair: {slips}."]
    return [*lines, ""]


__all__ = ["choose_cut", "markdown", "on_val"]
