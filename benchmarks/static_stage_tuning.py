"""Where the static stage's settings come from: a grid on CLINC150 *train* only.

The staged classifier (router/staged.py) runs the cheap TF-IDF stage (its cut and
familiarity fixed earlier, _staged_quality.py), then the static-embedding stage
(router/static_stage.py), then the full classifier. This chooses the static stage's
``static_weighting``, ``static_tfidf_weight``, ``static_cut``, ``static_similarity``,
``static_familiarity`` and ``static_agreement`` (ClassifierParams) the way
_staged_quality.py chose the cheap stage's, on data val never touches:

* the three regimes of classifier_tuning.py (fit on 50 a domain, 5 an intent, or all of
  80% of each intent's train examples; score the other 20% + oos_train), and the
  classifier fitted on all of train scored on oos_train;
* per candidate: the staged path's raw accuracy, its in-scope accuracy at its own
  oos_train threshold (the lowest escalating >= 80%), the fraction the static stage
  decides, and the *extra slips*: oos_train queries the cheap or the static stage routes
  that the full classifier escalates at its own threshold;
* the rule, fixed before the grid ran: among the candidates whose raw and in-scope
  accuracy stay within TOLERANCE (0.15 point) of the full classifier's and whose extra
  slips (both quick stages together) are at most MAX_SLIPS (1 of the 100 oos_train
  queries, the cheap stage's own bound) in every setting, the one whose static stage
  decides the most in-scope requests (mean over the regimes); ties: the higher cut.

The full classifier, the TF-IDF signals and the static vectors are computed once per
regime (and weighting); each candidate is then a mask over them, exactly what
``StagedClassifier.quick`` computes for the same clipped text.

Run: ``.venv/bin/python benchmarks/static_stage_tuning.py [VIEW]`` (~2-5 minutes on one
core). Output: benchmarks/results/static_stage_tuning.{json,md}; with another VIEW of
_static_views.py (``wordllama``, ``both``: what the stage would gain from other static
embeddings, benchmarks/static_views.py), static_stage_tuning_VIEW.{json,md}.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import itertools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from _clinc_splits import regimes  # noqa: E402
from _static_views import view  # noqa: E402
from classifier_tuning import MemoEncoder  # noqa: E402
from routing_quality import RESULTS, domains_of, load, sid, split_train  # noqa: E402

from slmfleet.router.classify import ClassifierParams, DomainClassifier  # noqa: E402
from slmfleet.router.classifying import normalise  # noqa: E402
from slmfleet.router.embed import default_encoder  # noqa: E402
from slmfleet.router.staged import StagedClassifier  # noqa: E402
from slmfleet.router.static_stage import StaticStage, held_out_similarity  # noqa: E402
from slmfleet.router.tfidf import held_out_familiarity  # noqa: E402

WEIGHTINGS = ("none", "idf")
TFIDF_WEIGHTS = (0.0, 0.25, 0.5)
CUTS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SIM_QUANTILES = (0.0, 0.05, 0.1, 0.25, 0.4, 0.5)
FAM_QUANTILES = (0.0, 0.1, 0.25)
AGREEMENT = (False, True)
TOLERANCE = 0.0015
MAX_SLIPS = 1
THRESHOLDS = np.round(np.arange(0.0, 1.0001, 0.005), 3)


def _threshold(conf_oos: np.ndarray) -> float:
    return next(float(t) for t in THRESHOLDS if np.mean(conf_oos < t) >= 0.8)


class Run:
    """One fitted classifier's full, cheap and static signals on the given texts."""

    def __init__(self, clf: DomainClassifier, emb: Any, texts: list[str]) -> None:
        staged = StagedClassifier(clf)
        clipped = [staged.clip(normalise(t)) for t in texts]
        full = clf.predict_many(clipped)
        self.best = np.array([clf.ids.index(r.best) for r in full])
        self.conf = np.array([r.confidence for r in full])
        sig = [clf.tfidf_signals(t) for t in clipped]
        self.p_tf = np.stack([s[0] for s in sig])
        self.fam = np.array([s[1] for s in sig])
        self.cheap = (self.p_tf.max(1) >= staged.cut) & (self.fam >= clf.familiar_floor)
        held = held_out_familiarity(clf._word, clf.texts[: int(clf._bounds[-1])])
        self.fam_floor = {q: float(np.quantile(held, q)) if q else 0.0 for q in FAM_QUANTILES}
        self.static: dict[str, tuple] = {}
        ids = emb.ids_many(clipped)
        for wt in WEIGHTINGS:
            params = replace(clf.params, static_weighting=wt)
            st = StaticStage.fit(emb, clf.texts, clf._bounds, clf._n_neg, params)
            assert st is not None
            q = emb.vectors(ids, st.weights)
            p_st = st.probabilities(q)
            sims = np.zeros_like(p_st)
            for d in range(st.n_dom):
                block = q @ st.rows[st.bounds[d] : st.bounds[d + 1]].T
                kk = min(params.knn_k, block.shape[1])
                sims[:, d] = np.partition(block, block.shape[1] - kk, axis=1)[:, -kk:].mean(1)
            hs = held_out_similarity(st.rows[: int(st.bounds[-1])], st.bounds, params.knn_k)
            floors = {s: float(np.quantile(hs, s)) if s else -1.0 for s in SIM_QUANTILES}
            self.static[wt] = (p_st, sims, floors, q.any(axis=1))

    def staged(self, cand: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(best, confidence, decided by the static stage) of the staged path."""
        wt, a, cut, sq, fq, agree = cand
        p_st, sims, floors, has = self.static[wt]
        p = a * self.p_tf + (1 - a) * p_st
        b = p.argmax(1)
        pb = p[np.arange(len(b)), b]
        sb = sims[np.arange(len(b)), b]
        st = ~self.cheap & has & (pb >= cut) & (sb >= floors[sq]) & (self.fam >= self.fam_floor[fq])
        if agree:
            st &= b == self.p_tf.argmax(1)
        best = np.where(self.cheap, self.p_tf.argmax(1), np.where(st, b, self.best))
        conf = np.where(self.cheap, self.p_tf.max(1), np.where(st, pb, self.conf))
        return best, conf, st

    def slips(self, cand: tuple | None, oos: slice) -> int:
        """OOS queries a quick stage routes that the full classifier escalates."""
        t = _threshold(self.conf[oos])
        quick = self.cheap.copy()
        if cand is not None:
            quick |= self.staged(cand)[2]
        return int(np.sum(quick[oos] & (self.conf[oos] < t)))


def metrics(run: Run, cand: tuple | None, truth: np.ndarray, n_in: int) -> dict:
    if cand is None:
        best, conf, st = run.best, run.conf, np.zeros(len(run.best), bool)
    else:
        best, conf, st = run.staged(cand)
    ok = best[:n_in] == truth
    t = _threshold(conf[n_in:])
    return {
        "raw_accuracy": float(ok.mean()),
        "in_scope_accuracy": float(np.mean(ok & (conf[:n_in] >= t))),
        "threshold": t,
        "static_fraction_in_scope": float(st[:n_in].mean()),
        "cheap_fraction_in_scope": float(run.cheap[:n_in].mean()),
        "static_fraction_oos": float(st[n_in:].mean()),
    }


def main(static_view: str = "distilled") -> dict:
    """Run the grid with the static stage on ``static_view`` (_static_views.VIEWS; the
    router's is ``distilled``), write its results, return them."""
    t0 = time.time()
    train, oos_train = load("train"), load("oos_train")
    base = default_encoder()
    enc = MemoEncoder(base)
    emb = view(static_view, base)
    regs, hold = regimes(train, split_train)
    texts = [r["text"] for r in hold] + [r["text"] for r in oos_train]
    n_in = len(hold)
    axes = (WEIGHTINGS, TFIDF_WEIGHTS, CUTS, SIM_QUANTILES, FAM_QUANTILES, AGREEMENT)
    cands = list(itertools.product(*axes))
    ok = set(cands)
    cover: dict[tuple, list[float]] = {c: [] for c in cands}
    out: dict = {
        "view": static_view,
        "tolerance": TOLERANCE,
        "max_slips": MAX_SLIPS,
        "regimes": {},
    }
    for name, rows in regs.items():
        clf = DomainClassifier.fit(domains_of(rows), encoder=enc)
        run = Run(clf, emb, texts)
        truth = np.array([clf.ids.index(sid(r["domain"])) for r in hold])
        full = metrics(run, None, truth, n_in)
        full["cheap_slips"] = run.slips(None, slice(n_in, None))
        res = {}
        for c in cands:
            m = metrics(run, c, truth, n_in)
            m["slips"] = run.slips(c, slice(n_in, None))
            res[c] = m
            cover[c].append(m["static_fraction_in_scope"])
            if (
                m["raw_accuracy"] < full["raw_accuracy"] - TOLERANCE
                or m["in_scope_accuracy"] < full["in_scope_accuracy"] - TOLERANCE
                or m["slips"] > MAX_SLIPS
            ):
                ok.discard(c)
        out["regimes"][name] = {"full": full, "candidates": res}
        print(f"{name}: done ({time.time() - t0:.0f} s), {len(ok)} candidates left", flush=True)
    clf = DomainClassifier.fit(domains_of(train), encoder=enc)
    run = Run(clf, emb, [r["text"] for r in oos_train])
    all_slips = {c: run.slips(c, slice(0, None)) for c in cands}
    ok -= {c for c in cands if all_slips[c] > MAX_SLIPS}
    out["all_train_cheap_slips"] = run.slips(None, slice(0, None))
    chosen = max(ok, key=lambda c: (np.mean(cover[c]), c[2])) if ok else None
    keys = (
        "static_weighting",
        "static_tfidf_weight",
        "static_cut",
        "static_similarity",
        "static_familiarity",
        "static_agreement",
    )
    out["chosen"] = dict(zip(keys, chosen, strict=True)) if chosen else None
    out["defaults"] = {k: getattr(ClassifierParams(), k) for k in keys}
    out["seconds"] = round(time.time() - t0, 1)
    out["load_average_1m"] = round(os.getloadavg()[0], 2)
    # Keep the json small: the chosen candidate and its neighbours along each axis.
    keep = {chosen} if chosen else set()
    if chosen:
        for i, axis in enumerate(axes):
            keep |= {(*chosen[:i], v, *chosen[i + 1 :]) for v in axis}
    for name in out["regimes"]:
        res = out["regimes"][name]["candidates"]
        out["regimes"][name]["candidates"] = {
            "/".join(map(str, c)): res[c] | {"all_train_slips": all_slips[c], "eligible": c in ok}
            for c in sorted(keep, key=str)
        }
    out["eligible_count"] = len(ok)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "static_stage_tuning" + ("" if static_view == "distilled" else f"_{static_view}")
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(out))
    print(markdown(out))
    return out


def markdown(r: dict) -> str:
    lines = [
        "# The static stage's settings, chosen on CLINC150 train only",
        "",
        f"Static embeddings: `{r.get('view', 'distilled')}` (benchmarks/_static_views.py). "
        "Generated by `benchmarks/static_stage_tuning.py` (method and rule in its docstring); "
        f"{r['seconds']} s, 1-minute load average {r['load_average_1m']} at the end. Rule: raw "
        f"and in-scope accuracy within {r['tolerance'] * 100:.2f} point of the full "
        f"classifier's and at most {r['max_slips']} extra oos_train slip (cheap + static) in "
        "every setting, then the most in-scope requests decided by the static stage.",
        "",
        f"Chosen: {r['chosen']} ({r['eligible_count']} candidates eligible); "
        f"ClassifierParams defaults: {r['defaults']}.",
        "",
        "Rows: the full classifier, then the chosen candidate and its neighbours along each "
        "axis (weighting / TF-IDF weight / cut / similarity quantile / familiarity quantile "
        "/ agreement).",
        "",
        "| regime | candidate | raw acc | in-scope acc (threshold) | cheap / static decide "
        "(in-scope) | static on oos_train | extra slips (all-train fit) | eligible |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, reg in r["regimes"].items():
        f = reg["full"]
        lines.append(
            f"| {name} | full | {f['raw_accuracy']:.2%} | {f['in_scope_accuracy']:.2%} "
            f"({f['threshold']}) | {f['cheap_fraction_in_scope']:.1%} / - | - | "
            f"{f['cheap_slips']} (cheap alone) | - |"
        )
        for c, m in reg["candidates"].items():
            lines.append(
                f"| {name} | {c} | {m['raw_accuracy']:.2%} | {m['in_scope_accuracy']:.2%} "
                f"({m['threshold']}) | {m['cheap_fraction_in_scope']:.1%} / "
                f"{m['static_fraction_in_scope']:.1%} | {m['static_fraction_oos']:.0%} | "
                f"{m['slips']} ({m['all_train_slips']}) | {'yes' if m['eligible'] else 'no'} |"
            )
    lines += [
        "",
        f"Fitted on all of train, the cheap stage alone: {r['all_train_cheap_slips']} extra slips.",
    ]
    return "\n".join([*lines, ""])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "distilled")
