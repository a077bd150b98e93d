"""Timing helper shared by the benchmarks: interleaved repeats, median, ratio vs a reference."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def compare(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each fn over `repeats` rounds; rounds interleave the fns so that machine noise
    hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def table(title: str, med: dict[str, float], reference: str, unit_work: float, unit: str) -> str:
    ref = med[reference]
    rows = [f"**{title}** (reference: {reference})", "", f"| variant | median s | {unit} | speed vs reference |",
            "|---|---:|---:|---:|"]
    for k, t in med.items():
        rows.append(f"| {k} | {t:.3f} | {unit_work / t:,.0f} | {ref / t:.2f}x |")
    return "\n".join(rows) + "\n"
