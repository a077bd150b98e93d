"""bench/bench_generate.py runs (one repeat, no timing asserted) and its table has every row with a number, so the
Generate and Compare budgets in the docs cannot rot."""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))


def test_the_generate_bench_measures_every_budget(monkeypatch):
    import bench_generate

    monkeypatch.setattr(bench_generate, "GRID_RUNS", dict(list(bench_generate.GRID_RUNS.items())[:1]))
    text = bench_generate.main(repeats=1)
    rows = [r for r in text.splitlines() if r.startswith("| ") and not r.startswith("| what")]
    want = ["64-sample grid decoded + PNG, MLP", "β move to a shipped run not shown before",
            "β move to a run shown before", "τ move to a new value", "rerun, nothing moved", "Compare, four runs",
            "Compare, four runs: rerun"]
    for label in want:
        row = next((r for r in rows if label in r), None)
        assert row is not None, (label, text)
        seconds = float(row.split("|")[2])
        assert 0 < seconds < 60, row
    budgets = re.findall(r"\| < ([0-9.]+) \| (yes|NO) \|", text)
    assert [float(b) for b, _ in budgets] == [0.015, 0.15, 0.05, 0.05, 0.05, 1.5, 0.05]
