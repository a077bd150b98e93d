"""scripts/flow_experiment.py without training: the committed docs/flow_experiment/table.md is what the report
rebuilds from the committed runs.jsonl alone, the runs are the 4 models x 3 seeds of one setting, and the reading
of it in docs/results/flow-prior.md holds in those numbers (means over the seeds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _helpers import load_script

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "flow_experiment"


@pytest.fixture(scope="module")
def fx():
    return load_script("flow_experiment")


def _runs() -> list[dict]:
    return [json.loads(line) for line in (DOCS / "runs.jsonl").read_text().splitlines() if line.strip()]


def test_report_rebuilds_the_committed_table(fx, tmp_path):
    for name in ("runs.jsonl", "settings.json"):
        shutil.copy(DOCS / name, tmp_path / name)
    assert fx.report(tmp_path) == (DOCS / "table.md").read_text()
    runs = _runs()
    assert sorted((r["variant"], r["seed"]) for r in runs) == sorted(
        (v, s) for v in fx.VARIANTS for s in fx.SEEDS)
    assert all(r["steps"] == 3000 and r["status"] == "finished" and r["attr_samples"] == 2560 for r in runs)


def test_report_ignores_runs_of_other_settings(fx, tmp_path):
    shutil.copy(DOCS / "settings.json", tmp_path / "settings.json")
    other = dict(_runs()[0], settings={"steps": 40, "subset": [2000, 2000]}, attr_accuracy=0.0)
    (tmp_path / "runs.jsonl").write_text("\n".join(json.dumps(r) for r in [*_runs(), other]) + "\n")
    assert fx.report(tmp_path) == (DOCS / "table.md").read_text()


def _mean(variant: str, key: str) -> float:
    return float(np.mean([r[key] for r in _runs() if r["variant"] == variant]))


def test_readme_reading_of_the_experiment():
    flow, sigma, cvae, two = "flow_cvae", "sigma_cvae", "cvae", "flow_cvae (two-stage)"
    # the learned prior fixes sigma_cvae's samples...
    assert _mean(flow, "attr_accuracy") > 0.98 and _mean(sigma, "attr_accuracy") < 0.72
    assert _mean(flow, "classifier_fid") < 14 and _mean(sigma, "classifier_fid") > 85
    # ...on every kind of cell alike: held-out no worse than common, for both
    for v in (flow, sigma):
        assert _mean(v, "heldout_attr_accuracy") >= _mean(v, "common_attr_accuracy") - 0.01
    # rare combinations are the slightly harder ones
    for v in (flow, cvae, two):
        assert _mean(v, "rare_attr_accuracy") < _mean(v, "common_attr_accuracy")
    # cvae ignores z (a rate under 3 nats) and still gets the attributes, blurrily
    assert _mean(cvae, "rate") < 3 and _mean(cvae, "attr_accuracy") > 0.97 and _mean(cvae, "classifier_fid") > 50
    # no likelihood gain: the flow's -ELBO is within 15 nats of sigma_cvae's; two-stage is over 50 nats worse
    assert abs(_mean(flow, "neg_elbo_train_sigma") - _mean(sigma, "neg_elbo_train_sigma")) < 15
    assert _mean(two, "neg_elbo_train_sigma") - _mean(flow, "neg_elbo_train_sigma") > 50
    assert _mean(two, "attr_accuracy") > 0.98 and _mean(two, "classifier_fid") < 20
