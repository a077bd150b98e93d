"""scripts/lt_experiment.py without training: the grid, the crash-safe runs.jsonl and the report, which must rebuild the
committed docs/lt_experiment tables from the committed runs.jsonl alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _helpers import load_script

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "lt_experiment"


@pytest.fixture(scope="module")
def lt():
    return load_script("lt_experiment")


def test_grid(lt):
    runs = lt.grid(steps=1200)
    keys = [lt.run_key(r, 1200, "mlp") for r in runs]
    assert len(keys) == len(set(keys)) == 4 * 5 * 3 + 2 * 6 * 3 + 2 * 3 * 3  # main, beta sweep, checks
    main = [r for r in runs if r["beta"] == 1.0 and "steps" not in r and "arch" not in r]
    assert {(r["model"], r["rho"]) for r in main} == {(m, rho) for m in lt.MODELS for rho in lt.RHOS}
    assert {r["steps"] for r in runs if "steps" in r} == {2400, 4800}
    assert all(r["model"] in lt.CONDITIONAL and r["rho"] == 100 for r in runs if "steps" in r or "arch" in r)


def test_runs_jsonl_resume(lt, tmp_path):
    st = dict(lt.SETTINGS, device="cpu")
    path = tmp_path / "runs.jsonl"
    line = dict(model="ct3vae", rho=50.0, seed=1, beta=0.2, steps=st["steps"], arch="mlp",
                settings={k: st[k] for k in lt.MATCH_KEYS})
    lt.append_run(path, line)
    lt.append_run(path, dict(line, seed=2, settings=dict(line["settings"], hidden=512)))  # other settings
    with open(path, "a") as f:
        f.write('{"model": "vae", "rho"')  # a line torn by a crash
    runs = lt.read_runs(path, st)
    assert [r["seed"] for r in runs] == [1]
    done = {lt.run_key(r, st["steps"], st["arch"]) for r in runs}
    todo = [r for r in lt.grid(steps=st["steps"]) if lt.run_key(r, st["steps"], st["arch"]) not in done]
    assert len(todo) == len(lt.grid(steps=st["steps"])) - 1
    assert dict(model="ct3vae", rho=50, seed=1, beta=0.2) not in todo


@pytest.mark.skipif(not (DOCS / "runs.jsonl").is_file(), reason="no committed runs")
def test_report_rebuilds_committed_tables(lt, tmp_path):
    out = tmp_path / "lt"
    out.mkdir()
    shutil.copy(DOCS / "runs.jsonl", out / "runs.jsonl")
    saved = json.loads((DOCS / "settings.json").read_text())
    st = {k: saved[k] for k in (*lt.MATCH_KEYS, "optimizer", "device")}
    lt.report(out, st, tmp_path / "gap.png", tmp_path / "beta.png", tuple(saved["rhos"]), tuple(saved["seeds"]),
              tuple(saved["betas"]))
    for name in ("table.md", "beta_sweep.md", "steps_check.md"):
        assert (out / name).read_text() == (DOCS / name).read_text(), name
