"""The learning-loop section of the routing benchmark's report (routing_learning.py)."""

from __future__ import annotations


def _latency_lines(lat: dict | None) -> list[str]:
    if not lat:
        return []
    ok = lat["decision_with_calibrator_p50"] <= 5
    return [
        f"Decision latency on one pinned core with the routing calibrator applied "
        f"({lat['requests']} val/oos_val requests, one at a time, each encoded afresh): "
        f"p50 {lat['decision_with_calibrator_p50']} ms, p99 "
        f"{lat['decision_with_calibrator_p99']} ms (the same decisions uncalibrated: p50 "
        f"{lat['decision_p50']} ms; the calibrator alone p50 {lat['calibrator_p50_us']} us). "
        f"Target p50 <= 5 ms: {'met' if ok else 'NOT met'}. 1-minute load average "
        f"{lat['load_average_1m'][0]}-{lat['load_average_1m'][1]} around it.",
    ]


def _pct(x: float) -> str:
    return f"{x:.2%}"


def _ci(iv) -> str:
    return f"[{iv[0]:.2%}, {iv[1]:.2%}]"


def markdown(r: dict, *, shots: int) -> list[str]:
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
        f"{shots} of each intent)",
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
        *_latency_lines(r.get("latency_with_calibrator")),
        "",
        f"These settings took {r['seconds']} s on one pinned core; 1-minute load average "
        f"{r.get('load_average_1m_start', '?')} at their start, "
        f"{r.get('load_average_1m_end', '?')} at their end (2 cores shared with other work). "
        "Quality figures are deterministic (fixed splits and seeds); timings are upper "
        "bounds.",
        "",
    ]
    return lines
