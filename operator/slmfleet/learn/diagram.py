"""Evidence pictures: reliability diagrams and threshold curves as PNG (matplotlib, Agg).

matplotlib is imported lazily: the router never needs it, and ``slmfleet calibrate``
says which package to install when it is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .calibrate import Reliability


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "reliability diagrams need matplotlib: pip install 'slmfleet[learn]'"
        ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def reliability_png(
    path: str | Path,
    title: str,
    before: Reliability,
    after: Reliability | None = None,
    *,
    method: str | None = None,
) -> Path:
    """Bars of observed accuracy per confidence bin (with Wilson intervals) against the
    diagonal, before and, when given, after calibration; bin counts underneath."""
    plt = _pyplot()
    panels = [("raw", before)] + ([(f"calibrated ({method})", after)] if after else [])
    fig, axes = plt.subplots(
        2,
        len(panels),
        figsize=(4.6 * len(panels), 5.6),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1]},
    )
    for col, (name, rel) in enumerate(panels):
        ax, cnt = axes[0][col], axes[1][col]
        width = rel.bins[0].hi - rel.bins[0].lo if rel.bins else 0.1
        xs = [b.lo + width / 2 for b in rel.bins if b.count]
        accs = [b.accuracy for b in rel.bins if b.count]
        err = [
            [max(0.0, b.accuracy - b.interval[0]) for b in rel.bins if b.count],
            [max(0.0, b.interval[1] - b.accuracy) for b in rel.bins if b.count],
        ]
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
        ax.bar(xs, accs, width=width * 0.9, color="#4C72B0", alpha=0.8, label="observed accuracy")
        ax.errorbar(xs, accs, yerr=err, fmt="none", ecolor="black", capsize=2, lw=0.8)
        ax.plot(
            [b.mean_confidence for b in rel.bins if b.count],
            accs,
            "o",
            color="#DD8452",
            ms=4,
            label="mean confidence of bin",
        )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{name}: ECE {rel.ece:.3f}, n={rel.samples}", fontsize=10)
        ax.set_ylabel("fraction correct")
        if col == 0:
            ax.legend(fontsize=7, loc="upper left")
        cnt.bar(
            [b.lo + width / 2 for b in rel.bins],
            [b.count for b in rel.bins],
            width=width * 0.9,
            color="grey",
        )
        cnt.set_xlim(0, 1)
        cnt.set_xlabel("confidence")
        cnt.set_ylabel("count")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def threshold_png(
    path: str | Path,
    title: str,
    thresholds: Sequence[float],
    series: dict[str, Sequence[float]],
    *,
    chosen: float | None = None,
    target: tuple[str, float] | None = None,
) -> Path:
    """Curves over the threshold (e.g. error among accepted, its bound, escalation rate),
    the chosen threshold as a vertical line and the target as a horizontal one."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, ys in series.items():
        ax.plot(thresholds, ys, label=name, lw=1.4)
    if target is not None:
        ax.axhline(target[1], color="red", ls=":", lw=1, label=target[0])
    if chosen is not None:
        ax.axvline(chosen, color="black", ls="--", lw=1, label=f"proposed {chosen:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("threshold")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
