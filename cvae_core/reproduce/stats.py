"""What every report needs: means ± standard deviations over seeds, tests of a difference, Markdown tables and
plots whose bytes depend on their data only (so ``--report-only`` rewrites a report byte for byte)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def group(trials: Iterable[dict], by: Callable[[dict], Any]) -> dict[Any, list[dict]]:
    """Trials grouped by ``by(settings)``, in first-seen order (the trials come sorted by their settings)."""
    out: dict[Any, list[dict]] = defaultdict(list)
    for t in trials:
        out[by(t["settings"])].append(t)
    return dict(out)


def values(trials: Iterable[dict], metric: str) -> list[float]:
    """The finite values of `metric` over the trials (a metric a trial lacks, or NaN, is left out)."""
    out = []
    for t in trials:
        v = t["metrics"].get(metric)
        if isinstance(v, (int, float)) and math.isfinite(v):
            out.append(float(v))
    return out


def by_seed(trials: Iterable[dict], metric: str | Callable[[dict], Any]) -> dict[int, float]:
    """seed -> the value of `metric` (a key of the metrics, or a function of them) in each trial where it is a finite
    number (a trial that lacks it is left out)."""
    out = {}
    for t in trials:
        try:
            v = metric(t["metrics"]) if callable(metric) else t["metrics"].get(metric)
        except (KeyError, TypeError):
            continue
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[t["settings"]["seed"]] = float(v)
    return out


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[list[float], list[float], float]:
    """The values of two ``by_seed`` maps at the seeds both have (in seed order), and the paired t-test's p."""
    common = sorted(set(a) & set(b))
    xa, xb = [a[s] for s in common], [b[s] for s in common]
    return xa, xb, paired_p(xa, xb)


def mean_std(xs: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation (NaN for one value), n); NaNs for no value."""
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    a = np.asarray(xs, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if n > 1 else math.nan, n


def fmt(x: float, digits: int = 2) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def pm(xs: Sequence[float], digits: int = 2) -> str:
    """"m ± s" over seeds ("m" alone for one seed, "–" for none)."""
    m, s, n = mean_std(xs)
    if n == 0:
        return "–"
    return fmt(m, digits) if n == 1 else f"{fmt(m, digits)} ± {fmt(s, digits)}"


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value of mean(a) = mean(b); NaN with fewer than two values on a side."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return math.nan
    if np.std(a) == 0 and np.std(b) == 0:
        return 1.0 if np.mean(a) == np.mean(b) else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def paired_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided paired t-test p-value (a[i] and b[i] share a seed); NaN with fewer than two pairs."""
    from scipy import stats

    if len(a) != len(b) or len(a) < 2:
        return math.nan
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if np.all(d == d[0]):
        return 0.0 if d[0] != 0 else 1.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a (one seed)"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_is(p: float) -> str:
    """The p-value in a sentence: "p < 0.001", "p = 0.042", "p n/a (one seed)"."""
    text = fmt_p(p)
    return f"p {text}" if text.startswith("<") or text.startswith("n/a") else f"p = {text}"


def verdict(p: float, alpha: float = 0.05) -> str:
    if not math.isfinite(p):
        return "not testable with one seed"
    return "significant" if p < alpha else "not significant"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[bool] | None = None) -> str:
    """A Markdown table; `right` marks right-aligned (numeric) columns (default: all but the first)."""
    right = right if right is not None else [False] + [True] * (len(headers) - 1)
    line = "|" + "|".join("---:" if r else "---" for r in right) + "|"
    body = ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(["| " + " | ".join(headers) + " |", line, *body])


def save_plot(fig, path: Path) -> str:
    """Write a matplotlib figure as a PNG whose bytes depend on the figure only (no date or software stamp) and close
    it; returns the file name, for a Markdown link next to the report."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path.name


def figure(width: float = 6.0, height: float = 4.0):
    """A new figure and axes, with the non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "cvae"
    return plt.subplots(figsize=(width, height))
