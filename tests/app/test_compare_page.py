"""Compare page (AppTest) on the shipped runs and beta sweeps: two runs by default, the URL round trip, warnings for
bad URL values, and the rate-distortion numbers against the runs' own metrics.json read here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from _apptest import open_page, plotly_values, texts

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cvae_core.registry import build_model  # noqa: E402
from cvae_core.runs.folder import save_run  # noqa: E402
from pages import _cmp  # noqa: E402

PAGE = str(REPO / "pages/compare.py")
SWEEPS = REPO / "checkpoints" / "sweeps"
TIMEOUT = 120


@pytest.fixture(autouse=True)
def saved_runs(tmp_path, monkeypatch):
    """The shipped runs as they are, saved runs in a tmp folder."""
    monkeypatch.setenv("CVAE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("CVAE_CHECKPOINTS_DIR", raising=False)
    return tmp_path / "runs"


def metrics(name: str) -> dict:
    return json.loads((SWEEPS / name / "metrics.json").read_text())


def test_the_default_view_compares_bs_vae_with_its_baseline_at_beta_1():
    at = open_page(PAGE, TIMEOUT)
    assert not at.exception and not at.warning, texts(at.warning)
    assert at.multiselect(key="compare_runs").value == ["bs_beta1", "sse_beta1"]
    assert at.query_params["runs"] == "bs_beta1,sse_beta1"
    table = at.dataframe[0].value
    assert list(table["run"]) == ["bs_beta1", "sse_beta1"] and len(at.get("image")) == 2
    assert list(table["rate"]) == pytest.approx([metrics("bs_beta1")["rate"], metrics("sse_beta1")["rate"]])


def test_the_rd_curve_and_the_equal_rate_table_are_the_sweeps_numbers():
    at = open_page(PAGE, TIMEOUT)
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    family_of = {"bs_vae": "bs", 2 ** -0.5: "sse", 1.0: "sigma1"}
    by_family: dict[str, list[tuple[float, float]]] = {"bs": [], "sse": [], "sigma1": []}
    for run in SWEEPS.iterdir():  # each run's family from its own config.json, read here
        info = json.loads((run / "config.json").read_text())
        tag = family_of["bs_vae"] if info["model"] == "bs_vae" else next(
            t for s, t in family_of.items() if s != "bs_vae" and abs(info["config"]["sigma"] - s) < 1e-9)
        by_family[tag].append((metrics(run.name)["rate"], metrics(run.name)["distortion_train_sigma"]))
    for family, pts in by_family.items():
        want = sorted(pts)
        trace = next(t for t in spec["data"] if t.get("legendgroup") == family and t.get("xaxis", "x") == "x")
        assert len(want) == 9
        floor = _cmp.RATE_FLOOR  # collapsed runs are drawn at the floor of the log axis
        assert list(plotly_values(trace["x"])) == pytest.approx([max(r, floor) for r, _ in want], rel=1e-9)
        assert list(plotly_values(trace["y"])) == pytest.approx([d for _, d in want], rel=1e-9)
    # the table: the sse curve read at each bs rate, by numpy's linear interpolation here
    import numpy as np

    sse = sorted(by_family["sse"])
    rows = at.dataframe[-1].value
    for _, row in rows.iterrows():
        ref = float(np.interp(row["rate R (nats)"], [r for r, _ in sse], [d for _, d in sse]))
        assert row["sse baseline D at that rate"] == pytest.approx(ref, abs=0.06 + 1e-3 * abs(ref))


def test_runs_in_the_url_round_trip_and_bad_values_are_named(saved_runs):
    save_run(saved_runs / "mine", build_model("vae", seed=0, arch="mlp", hidden=16, latent_dim=2),
             dataset={"name": "mnist"})
    at = open_page(PAGE, TIMEOUT, runs="mnist_vae,runs/mine,bs_beta10")
    assert not at.exception and not at.warning
    assert at.multiselect(key="compare_runs").value == ["mnist_vae", "runs/mine", "bs_beta10"]
    assert at.query_params["runs"] == "mnist_vae,runs/mine,bs_beta10"
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    marked = [t["text"][0] for t in spec["data"] if t.get("mode") == "markers+text"]
    assert "bs_beta10" in marked and "mnist_vae" in marked  # chosen runs with the numbers are marked
    bad = open_page(PAGE, TIMEOUT, runs="../../etc/passwd,nope,mnist_vae," + "x" * 3000)
    assert not bad.exception
    w = texts(bad.warning)
    assert "'../../etc/passwd' is not a run name" in w and "No run named 'nope'" in w and "longer than 100" in w
    assert bad.multiselect(key="compare_runs").value == ["mnist_vae"]
    assert "Pick at least two runs." in texts(bad.info)
    many = open_page(PAGE, TIMEOUT, runs="bs_beta0.01,bs_beta0.1,bs_beta1,bs_beta10,bs_beta100")
    assert "compares at most 4, using the first 4" in texts(many.warning)
    assert many.multiselect(key="compare_runs").value == ["bs_beta0.01", "bs_beta0.1", "bs_beta1", "bs_beta10"]


def test_the_certificate_margin_of_runs_that_have_one():
    at = open_page(PAGE, TIMEOUT, runs="mnistbin_vae_beta8,mnistbin_rst_vae_beta8,mnist_bs_vae")
    assert not at.exception and not at.warning
    gt = {r: json.loads((REPO / "checkpoints" / r / "metrics.json").read_text())["GT"]
          for r in ("mnistbin_vae_beta8", "mnistbin_rst_vae_beta8")}
    line = next(m.value for m in at.markdown if "Collapse certificate" in m.value)
    assert f"mnistbin_vae_beta8 **{gt['mnistbin_vae_beta8']:+.3f}**" in line and gt["mnistbin_vae_beta8"] < 0
    assert f"mnistbin_rst_vae_beta8 **{gt['mnistbin_rst_vae_beta8']:+.3f}**" in line
    assert "mnist_bs_vae (not measured)" in line


def test_the_seed_means_of_the_longer_grid_are_drawn_on_request():
    """spread=true adds each family's mean over seeds from the committed `reproduce beta-sigma` trials, with their
    standard deviations as error bars, computed here from trials.jsonl with the statistics module."""
    import statistics

    path = REPO / "docs" / "results" / "beta-sigma" / "trials.jsonl"
    trials = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[tuple[str, float], list[dict]] = {}
    for t in trials:
        if t["settings"]["epochs"] == 10:
            groups.setdefault((t["settings"]["family"], t["settings"]["beta"]), []).append(t["metrics"])
    assert groups, "the committed full grid has no trials"
    at = open_page(PAGE, TIMEOUT)
    assert at.toggle(key="spread").value is False
    assert not [t for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
                if str(t.get("legendgroup", "")).endswith("-seeds")]
    at = open_page(PAGE, TIMEOUT, spread="true")
    assert not at.exception and not at.warning, texts(at.warning)
    assert at.toggle(key="spread").value is True and at.query_params["spread"] == "true"
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    for fam in sorted({f for f, _ in groups}):
        rows = [groups[k] for k in sorted(k for k in groups if k[0] == fam)]
        for axis, key in (("x", "distortion_train_sigma"), ("x2", "mse")):
            trace = next(t for t in spec["data"] if t.get("legendgroup") == f"{fam}-seeds"
                         and t.get("xaxis", "x") == axis)
            assert list(plotly_values(trace["x"])) == pytest.approx(
                [max(statistics.mean(m["rate"] for m in ms), _cmp.RATE_FLOOR) for ms in rows], rel=1e-9)
            assert list(plotly_values(trace["y"])) == pytest.approx(
                [statistics.mean(m[key] for m in ms) for ms in rows], rel=1e-9)
            if axis == "x":  # the legend names the family as the sweep's own line does, and the grid's size
                n = max(len(ms) for ms in rows)
                assert trace["name"] == f"{_cmp.FAMILIES[fam].split(' (')[0]}: mean of {n} seeds, 10 epochs"
            sds = [statistics.stdev(m[key] for m in ms) if len(ms) > 1 else 0.0 for ms in rows]
            assert list(plotly_values(trace["error_y"]["array"])) == pytest.approx(sds, rel=1e-9, abs=1e-12)
