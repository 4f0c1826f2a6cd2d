"""The CLINC150 example sets the routing benchmarks fit on: the sizes users write."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np
from scipy.stats import beta


def first_per_intent(rows: list[dict], k: int) -> list[dict]:
    """The first ``k`` examples of each intent, in file order (5 -> 75 a domain)."""
    seen: dict[str, int] = defaultdict(int)
    out = []
    for r in rows:
        if seen[r["intent"]] < k:
            out.append(r)
        seen[r["intent"]] += 1
    return out


def per_domain(rows: list[dict], n: int, seed: int = 0) -> list[dict]:
    """``n`` random examples of each domain."""
    rng = np.random.default_rng(seed)
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["domain"]].append(r)
    return [by[d][i] for d in sorted(by) for i in rng.choice(len(by[d]), n, replace=False)]


def regimes(
    train: list[dict], split_train: Callable[[list[dict]], tuple[list[dict], list[dict]]]
) -> tuple[dict[str, list[dict]], list[dict]]:
    """Development regimes on train only: ({name: fit rows}, held-out rows). All three
    draw from the 80% part of ``split_train``; the held-out 20% scores them."""
    fit, hold = split_train(train)
    return {
        "50_per_domain": per_domain(fit, 50),
        "5_per_intent": first_per_intent(fit, 5),
        "all": fit,
    }, hold


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (float(c - h), float(c + h))


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact 95% interval of a proportion k/n (small samples: the OOS recall on 100)."""
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return (lo, hi)
