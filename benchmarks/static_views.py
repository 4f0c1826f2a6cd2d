"""Would better static embeddings let the router skip its encoder often enough?

The headline with semantic routing on (router_overhead.md) is bounded by how many
requests reach the MiniLM encoder (~1.6 ms of CPU for a short one) because the cheaper
stages are not sure enough. The static stage's quality is the lever: this runs the
static stage's own tuning grid (static_stage_tuning.py: CLINC150 train splits only, the
same rule that chose the router's settings) once per static embedding of
_static_views.py: the router's ``distilled`` table, WordLlama's trained table (a PyPI
wheel), and ``both`` side by side. Per view it reports the chosen setting, how many
in-scope requests the static stage then decides in each regime, what is left to the
encoder, the static view's cost per request (in-process, one core), and a projection
of the headline: router_overhead.json's measured requests per CPU-second with routing
off and on, with only the share of requests reaching the encoder and the static
stage's cost changed. The projection is arithmetic on measured parts, not a measurement.

Run: ``.venv/bin/python benchmarks/static_views.py`` (~10 minutes; downloads the
WordLlama wheel once with pip). Output: benchmarks/results/static_views.{json,md}.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

import static_stage_tuning  # noqa: E402
from _clinc_splits import regimes  # noqa: E402
from _static_views import VIEWS, view  # noqa: E402
from routing_quality import RESULTS, domains_of, load, split_train  # noqa: E402

from slmfleet.router.classify import DomainClassifier  # noqa: E402
from slmfleet.router.classifying import normalise  # noqa: E402
from slmfleet.router.embed import default_encoder  # noqa: E402
from slmfleet.router.static_stage import StaticStage  # noqa: E402

REGIME = "50_per_domain"
"""The regime of the headline's workload (50 examples a domain)."""
TIMED = 2000


def view_cost_us(emb, stage: StaticStage, texts: list[str]) -> float:
    """CPU microseconds per text of the static view: tokenise, weighted mean, the LR."""
    t = time.process_time()
    for text in texts:
        q = emb.vectors([emb.ids(text)], stage.weights)
        stage.probabilities(q)
    return 1e6 * (time.process_time() - t) / len(texts)


def costs(views: dict) -> dict[str, float]:
    """Per view, the static stage's cost per request on held-out train texts (50 a
    domain), and the TF-IDF stage's (``tfidf``), in microseconds."""
    train = load("train")
    regs, hold = regimes(train, split_train)
    clf = DomainClassifier.fit(domains_of(regs[REGIME]), encoder=default_encoder())
    texts = [normalise(r["text"]) for r in hold][:TIMED]
    t = time.process_time()
    for text in texts:
        clf.tfidf_signals(text)
    out = {"tfidf": 1e6 * (time.process_time() - t) / len(texts)}
    for name, emb in views.items():
        stage = StaticStage.fit(emb, clf.texts, clf._bounds, clf._n_neg, clf.params)
        view_cost_us(emb, stage, texts[:200])  # warm
        out[name] = view_cost_us(emb, stage, texts)
    return out


def chosen_row(run: dict, regime: str) -> dict | None:
    c = run["chosen"]
    if c is None:
        return None
    key = "/".join(map(str, c.values()))
    return run["regimes"][regime]["candidates"][key]


def project(headline: dict, runs: dict, cost_us: dict[str, float]) -> dict[str, float]:
    """Requests per router CPU-second if only the encoder's share and the static view's
    cost changed (module docstring)."""
    fast = headline["summary"]["fast"]
    on, off = 1.0 / fast["router"]["rps_per_cpu_s"], 1.0 / fast["router_plain"]["rps_per_cpu_s"]
    st = fast["router"]["classifier_stages"]
    n = st["cheap"] + st["static"] + st["full"]
    f_full, f_static_tried = st["full"] / n, (st["static"] + st["full"]) / n
    base = chosen_row(runs["distilled"], REGIME)
    left0 = 1 - base["cheap_fraction_in_scope"] - base["static_fraction_in_scope"]
    # routing's cost over routing off = TF-IDF + static (where tried) + encoder (where left):
    # the encoder's cost per request it sees, from the measured headline.
    tfidf_s = cost_us["tfidf"] * 1e-6
    full_s = (on - off - tfidf_s - f_static_tried * cost_us["distilled"] * 1e-6) / f_full
    static_s = f_static_tried * cost_us["distilled"] * 1e-6
    out = {
        "encoder_path_ms": round(full_s * 1e3, 3),
        "encoder_share_now": round(f_full, 4),
        # the share of requests the encoder path could see at 1,000 per CPU-second
        "encoder_share_for_1000": round((1e-3 - off - tfidf_s - static_s) / full_s, 4),
    }
    for name, run in runs.items():
        row = chosen_row(run, REGIME)
        if row is None:
            continue
        left = 1 - row["cheap_fraction_in_scope"] - row["static_fraction_in_scope"]
        f = f_full * left / left0
        c = off + tfidf_s + f_static_tried * cost_us[name] * 1e-6 + f * full_s
        out[name] = round(1.0 / c)
    return out


def markdown(r: dict) -> str:
    lines = [
        "# Static embeddings for the static stage: distilled, WordLlama, both",
        "",
        "Generated by `benchmarks/static_views.py` (method in its docstring); "
        f"{r['seconds']} s. Each view's settings chosen by the static stage's own rule on "
        "CLINC150 train splits (val untouched); full tables in "
        "`static_stage_tuning[_VIEW].md`.",
        "",
        "| view | chosen (weighting / TF-IDF weight / cut / similarity q / familiarity q / "
        "agreement) | static decides, in-scope (50 a domain / 5 an intent / all) | left to "
        "MiniLM at 50 a domain | raw / in-scope acc at 50 a domain (full classifier) | "
        "static view us/request | projected requests per CPU-second |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in VIEWS:
        run = r["runs"][name]
        if run["chosen"] is None:
            lines.append(f"| {name} | none eligible | - | - | - | - | - |")
            continue
        rows = {g: chosen_row(run, g) for g in run["regimes"]}
        b = rows[REGIME]
        full = run["regimes"][REGIME]["full"]
        left = 1 - b["cheap_fraction_in_scope"] - b["static_fraction_in_scope"]
        lines.append(
            f"| {name} | {'/'.join(map(str, run['chosen'].values()))} | "
            + " / ".join(f"{rows[g]['static_fraction_in_scope']:.1%}" for g in rows)
            + f" | {left:.1%} | {b['raw_accuracy']:.2%} / {b['in_scope_accuracy']:.2%} "
            f"({full['raw_accuracy']:.2%} / {full['in_scope_accuracy']:.2%}) | "
            f"{r['cost_us'][name]:.0f} | {r['projection'].get(name, '-')} |"
        )
    p = r["projection"]
    lines += [
        "",
        "Projection: router_overhead.json's requests per CPU-second with routing off and "
        f"on, the encoder path's cost per request it sees derived from them "
        f"({p['encoder_path_ms']} ms), the share of requests reaching it scaled by each "
        "view's 'left to MiniLM' against the distilled view's, and each view's own cost "
        "where the static stage runs. The target is 1,000: with every other cost as "
        f"measured, only {p['encoder_share_for_1000']:.1%} of requests could reach the "
        f"encoder path (the headline run: {p['encoder_share_now']:.1%}).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    t0 = time.time()
    runs = {name: static_stage_tuning.main(name) for name in VIEWS}
    enc = default_encoder()
    cost_us = costs({name: view(name, enc) for name in VIEWS})
    headline = json.loads((RESULTS / "router_overhead.json").read_text())
    out = {
        "runs": {
            k: {"chosen": v["chosen"], "regimes": v["regimes"], "eligible": v["eligible_count"]}
            for k, v in runs.items()
        },
        "cost_us": {k: round(v, 1) for k, v in cost_us.items()},
        "projection": project(headline, runs, cost_us),
        "seconds": round(time.time() - t0, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "headline_rps_per_cpu_s": headline["summary"]["fast"]["router"]["rps_per_cpu_s"],
    }
    (RESULTS / "static_views.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "static_views.md").write_text(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
