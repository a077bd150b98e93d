"""Latent map page (AppTest): a map and the allocation bars for a saved run, the allocation numbers against a
brute-force k-NN vote recomputed here, URL state, UMAP once warm, a live training job with Refresh, and one-line
errors for broken runs. Runs are small MLP models in tmp folders."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from _apptest import lesson_text, open_page, plotly_values, texts
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cvae_core.eval.likelihood import encoder_means  # noqa: E402
from cvae_core.jobs import TrainingJob  # noqa: E402
from cvae_core.registry import build_model  # noqa: E402
from cvae_core.runs.folder import load_run, save_run  # noqa: E402
from cvae_core.train import TrainConfig  # noqa: E402
from pages import _maps  # noqa: E402

PAGE = str(REPO / "pages/latent_map.py")
TIMEOUT = 120  # one script run (the first imports torch and may wait for the data set)


pytestmark = pytest.mark.usefixtures("lab_dirs")


def small_run(path: Path, seed: int = 0, dataset: dict | None = None) -> Path:
    model = build_model("vae", seed=seed, arch="mlp", hidden=32, latent_dim=4)
    return save_run(path, model, dataset=dataset or {"name": "mnist"})


def page(**query) -> AppTest:
    return open_page(PAGE, TIMEOUT, **query)


def figures(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


values = plotly_values


def test_page_maps_a_run_and_shows_the_allocation_chart(lab_dirs):
    _, ckpt = lab_dirs
    small_run(ckpt / "tiny")
    at = page(n="1000")
    assert not at.exception and not at.error, texts(at.error)
    assert [t.value for t in at.title] == ["Latent map"]
    assert at.selectbox(key="run").value == "tiny" and at.segmented_control(key="method").value == "PCA"
    fmap, fbars = figures(at)
    classes = [t for t in fmap["data"] if t["name"] in [str(c) for c in range(10)]]
    assert len(classes) == 10 and sum(len(values(t["x"])) for t in classes) == 1000
    assert [t["name"] for t in fmap["data"][10:]] == ["prior samples"]
    assert len(values(fmap["data"][10]["x"])) == _maps.N_OVERLAY
    names = [t["name"] for t in fbars["data"]]
    assert names[0].startswith("share of the prior") and names[2].startswith("1/K")
    prior, data = values(fbars["data"][0]["y"]), values(fbars["data"][1]["y"])
    assert len(prior) == len(data) == 10
    assert prior.sum() == pytest.approx(100) and data.sum() == pytest.approx(100)
    np.testing.assert_allclose(values(fbars["data"][2]["y"]), [10, 10])
    lesson = lesson_text(at)  # the one teaching expander, with its school icon
    assert "distorts distances and cluster sizes" in lesson
    assert "**shows only those two directions**" in lesson  # what PCA hides, and how the prior samples are placed
    assert r"(u_1^\top(\mu(x) - \bar\mu),\ u_2^\top(\mu(x) - \bar\mu))" in lesson
    assert "placed by **the same projection**, fitted to the encoder means" in lesson

    # the bars against a brute-force vote recomputed here: the 15 nearest encoder means of every prior sample
    model, _ = load_run(ckpt / "tiny")
    from cvae_core.data import load_dataset

    d = load_dataset("mnist")
    means = encoder_means(model, d.x_test[:1000]).numpy().astype(np.float64)
    labels = d.y_test[:1000].numpy()
    z = model.map_overlays(_maps.N_PRIOR, generator=torch.Generator().manual_seed(0))["prior samples"][0].numpy()
    votes = []
    for p in z.astype(np.float64):
        near = labels[np.argsort(((means - p) ** 2).sum(1), kind="stable")[:15]].tolist()
        c = Counter(near)
        votes.append(next(k for k in near if c[k] == max(c.values())))
    expected = 100 * np.bincount(votes, minlength=10) / len(votes)
    np.testing.assert_allclose(prior, expected, atol=100 / len(votes) + 1e-9)  # one sample may sit on a tie
    np.testing.assert_allclose(data, 100 * np.bincount(labels, minlength=10) / 1000, atol=1e-9)


def test_a_conditional_run_is_encoded_with_its_labels(lab_dirs):
    _, ckpt = lab_dirs
    save_run(ckpt / "cond", build_model("cvae", seed=0, arch="mlp", hidden=32, latent_dim=4),
             dataset={"name": "mnist"})
    at = page(n="1000")
    assert not at.exception and not at.error, texts(at.error)
    fmap, fbars = figures(at)
    assert fmap["data"][10]["name"] == "prior samples"
    assert values(fbars["data"][0]["y"]).sum() == pytest.approx(100)
    assert "of cvae on mnist" in texts(at.caption)


def test_url_reproduces_the_view_and_training_counts_are_offered(lab_dirs):
    _, ckpt = lab_dirs
    small_run(ckpt / "a")
    runs, _ = lab_dirs
    small_run(runs / "lt", seed=1, dataset={"name": "mnist-lt", "rho": 10.0, "seed": 0})
    at = page(run="saved: lt", n="2000")
    assert not at.exception and not at.error, texts(at.error)
    assert at.selectbox(key="run").value == "saved: lt" and at.select_slider(key="n").value == 2000
    assert at.radio(key="compare").value == "train"  # a long-tailed run compares with its training set
    data = values(figures(at)[1]["data"][1]["y"])
    assert data[0] > 3 * data[9]  # rho = 10: the head class has ten times the images of the tail class
    assert "ρ = 10" in figures(at)[1]["data"][1]["name"]
    at.radio(key="compare").set_value("test").run()
    assert not at.exception
    assert abs(values(figures(at)[1]["data"][1]["y"])[0] - 10) < 3  # the test set is balanced


def test_umap_once_warm(lab_dirs):
    _, ckpt = lab_dirs
    small_run(ckpt / "tiny")
    warm = _maps.umap_warmup()
    assert warm.ready.wait(120), "UMAP did not warm up within 120 s"
    assert warm.error is None
    at = page(method="UMAP", n="1000")
    assert not at.exception and not at.error, texts(at.error)
    fmap = figures(at)[0]
    assert fmap["layout"]["xaxis"]["title"]["text"] == "UMAP 1"
    x = np.concatenate([values(t["x"]) for t in fmap["data"]])
    assert np.isfinite(x).all()
    t0 = time.perf_counter()
    at.run()  # the same selection: everything comes from the caches
    rerun = time.perf_counter() - t0
    assert not at.exception
    assert rerun < 1.0, f"a cached rerun took {rerun:.2f} s"  # ~0.05 s; generous for a busy CI machine


def test_live_training_job_can_be_mapped_and_refreshed(lab_dirs, mnist_small):
    model = build_model("vae", seed=0, arch="mlp", hidden=32, latent_dim=4)
    job = TrainingJob(model, mnist_small, TrainConfig(steps=400, batch_size=32, log_every=10, seed=0),
                      au_images=100).start()
    try:
        while job.alive and not job.snapshot()["records"]:
            job.join(0.1)
        job.pause()
        at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
        at.session_state["job"] = job
        at.run()
        assert not at.exception
        assert _maps.LIVE in at.selectbox(key="run").options  # no other runs: it is the only choice
        assert at.selectbox(key="run").value == _maps.LIVE
        assert not at.error, texts(at.error)
        step0 = at.session_state["latent_live"][2]
        assert f"step {step0:,}" in texts(at.markdown)
        assert len(figures(at)) == 2
        job.step(30)  # move training on by a few log ticks, then Refresh
        t0 = time.monotonic()
        while job.model_at_tick()[1] < step0 + 30 and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        at.run()
        assert at.session_state["latent_live"][2] == step0  # pinned until Refresh
        at.button(key="refresh").click().run()
        assert not at.exception and not at.error
        step1 = at.session_state["latent_live"][2]
        assert step1 >= step0 + 30 and f"step {step1:,}" in texts(at.markdown)
    finally:
        job.stop()
        job.join(10)


def test_broken_runs_give_one_line_errors(lab_dirs):
    runs, ckpt = lab_dirs
    (small_run(ckpt / "no-weights") / "model.safetensors").unlink()
    (runs / "bad-json").mkdir(parents=True)
    (runs / "bad-json" / "config.json").write_text("{not json")
    at = page()
    assert not at.exception
    assert "has no model.safetensors" in texts(at.error) and "\n" not in texts(at.error)
    assert not at.get("plotly_chart")
    at.selectbox(key="run").select("saved: bad-json").run()
    assert not at.exception
    assert "not valid JSON" in texts(at.error)


def test_no_runs_gives_an_info():
    at = page()
    assert not at.exception and not at.error
    assert "No runs to map yet" in texts(at.info)


def test_selected_points_name_their_test_images():
    labels = np.array([3, 1, 3, 0, 1, 3])  # trace 3 holds images 0, 2, 5 in that order; trace 1 holds 1, 4
    event = {"selection": {"points": [{"curve_number": 3, "point_index": 2}, {"curve_number": 1, "point_index": 0},
                                      {"curve_number": 3, "point_index": 0}, {"curve_number": 10, "point_index": 4},
                                      {"curve_number": 1, "point_number": 1}]}}
    assert _maps.selected_indices(event, labels, 10) == [0, 1, 4, 5]  # trace 10 (an overlay) has no images
    assert _maps.selected_indices(None, labels, 10) == []


def test_bad_url_values_are_named_and_the_url_round_trips(lab_dirs):
    runs, ckpt = lab_dirs
    small_run(ckpt / "a")
    small_run(runs / "lt", seed=1, dataset={"name": "mnist-lt", "rho": 10.0, "seed": 0})
    at = page(run="../../etc", method="TSNE", n="3000")
    assert not at.exception and not at.error, texts(at.error)
    w = texts(at.warning)
    assert "URL parameter run: '../../etc' is not a run name (a folder name, or runs/NAME for a saved run); using a " \
        "instead." in w
    assert "URL parameter method: 'TSNE' is not one of PCA, UMAP; using PCA instead." in w
    assert "URL parameter n: '3000' is not one of 1000, 2000, 5000, 10000; using 5000 instead." in w
    assert at.selectbox(key="run").value == "a" and at.select_slider(key="n").value == 5000
    at = page(run="runs/nope")
    assert "No run named 'runs/nope' (URL parameter run); using a instead." in texts(at.warning)
    # a saved run is named runs/NAME in the URL (the older "saved: NAME" still opens it); the URL reopens the view
    at = page(run="saved: lt", n="1000")
    assert at.query_params["run"] == "runs/lt" and not at.warning
    again = page(**dict(at.query_params))
    assert not again.exception and not again.warning and dict(again.query_params) == dict(at.query_params) == \
        {"run": "runs/lt", "method": "PCA", "n": "1000"}
    assert again.selectbox(key="run").value == "saved: lt" and figures(again) == figures(at)
