"""The Collapse certificate page on the shipped mnist-binary runs, through AppTest: the numbers it shows are
recomputed here from the run folders (encoder means + the cached teacher), the bars are the teacher's and witness's
probabilities of the chosen images, the images live in the URL, and bad input, a latent too small for the witness and
the run training now are handled."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from _apptest import lesson_text, open_page, open_page_without_saved_runs, plotly_values, texts

from cvae_core.data import load_dataset
from cvae_core.eval.certificate import certificate_metrics
from cvae_core.eval.likelihood import encoder_means
from cvae_core.runs.folder import load_run, save_run
from cvae_core.witness import config_of, load_or_fit_teacher, witness_log_probs, witness_of

REPO = Path(__file__).resolve().parents[2]
PAGE = str(REPO / "pages" / "certificate.py")
SHIPPED = ("mnistbin_vae_beta8", "mnistbin_rst_vae_beta8")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def binary():
    return load_dataset("mnist-binary")


@pytest.fixture(scope="module")
def first_view():
    return open_page_without_saved_runs(PAGE, 300)


def _metrics(at) -> list[dict[str, str]]:
    """The two sides' metric rows, {label: value}."""
    ms = list(at.metric)
    return [{m.label: m.value for m in ms[i : i + 4]} for i in (0, 4)]


def test_opens_on_the_stressed_pair_with_recomputed_numbers(first_view, binary):
    at = first_view
    assert not at.exception and not at.error, texts(at.error)
    assert [at.selectbox(key=f"run{i}").value for i in (0, 1)] == list(SHIPPED)
    shown = _metrics(at)
    gts = []
    for side, name in enumerate(SHIPPED):
        model, _ = load_run(REPO / "checkpoints" / name)
        x = binary.x_test[:1000]
        ref = certificate_metrics(model, binary, x, encoder_means(model, x))
        gts.append(ref["GT"])
        assert shown[side]["GT (margin)"] == f"{ref['GT']:+.3f}"
        assert shown[side]["IT"] == f"{ref['IT']:.3f}" and shown[side]["LTS"] == f"{ref['LTS']:.3f}"
        au = int((encoder_means(model, x).var(0) > 0.01).sum())
        assert shown[side]["active units"] == f"{au} / 16"
    assert gts[0] < 0 < gts[1]  # the shipped pair shows the claim: the stressed VAE fails, RST-VAE keeps it
    agree = [c for c in texts(at.caption).split(" | ") if c.startswith("The witness's most likely")]
    assert len(agree) == 2 and all("of the images (a constant witness: at most" in c for c in agree)
    assert "not certified: no better than a constant" in texts(at.warning)
    assert "certified: μ(x) depends on x" in texts(at.success)
    charts = at.get("plotly_chart")
    assert len(charts) == 2 + 2 + 4  # two GT curves, two simplex planes, four images' bars


def _metric_rows(node) -> list[list[str]]:
    """Labels of the rows of metric cards (a row: a block of columns holding one metric each), in page order."""
    rows = []
    for child in getattr(node, "children", {}).values():
        cols = list(getattr(child, "children", {}).values())
        if cols and all(getattr(c, "type", None) == "column" and len(c.metric) == 1 for c in cols):
            rows.append([c.metric[0].label for c in cols])
        else:
            rows += _metric_rows(child)
    return rows


def test_metrics_two_by_two_and_the_certified_band_off_the_curves(first_view):
    """Teacher feedback at 1400 px: four metric cards in a half-width column cut "active units 10 / 16", and the
    "GT > 0: certified" label on the zero line sat on the curves. The cards are two rows of two; GT > 0 is a shaded
    band with a legend entry, and no text is written inside the plot."""
    import json

    assert _metric_rows(first_view.main) == [["GT (margin)", "IT"], ["LTS", "active units"]] * 2
    figs = [json.loads(c.proto.spec) for c in first_view.get("plotly_chart")]
    curves = [f for f in figs if any(t.get("name") == "GT = IT − LTS" for t in f["data"])]
    assert len(curves) == 2
    for fig in curves:
        assert not fig["layout"].get("annotations")
        band = [s for s in fig["layout"]["shapes"] if s["type"] == "rect"]
        assert len(band) == 1 and band[0]["y0"] == 0 and band[0]["y1"] > 0
        assert [t["name"] for t in fig["data"]][-1] == "GT > 0: certified"


def test_the_lesson_defines_the_margin(first_view):
    text = lesson_text(first_view)
    assert r"margin $G_T = \mathrm{IT} - \mathrm{LTS}$" in text
    assert r"\mathrm{LTS} = \mathbb{E}_x\,\mathrm{KL}(T(x)\,\|\,S(x))" in text
    assert r"\mathrm{IT} = \mathbb{E}_x\,\mathrm{KL}(T(x)\,\|\,\bar T)" in text
    assert r"S(x) = \mathrm{softmax}(\beta_w V^\top P\,\mu(x))" in text


def test_the_bars_are_the_teachers_and_the_witnesses_probabilities(first_view, binary):
    import json

    fig = json.loads(first_view.get("plotly_chart")[-1].proto.spec)  # the last of the default images: #3
    assert fig["layout"]["title"]["text"] == "test image #3"
    bars = {tr["name"]: plotly_values(tr["y"]) for tr in fig["data"]}
    teacher = load_or_fit_teacher(binary)
    np.testing.assert_allclose(bars["teacher T(x)"], teacher.probs(binary.x_test[3:4])[0].numpy(), rtol=1e-9)
    for name in SHIPPED:
        model, _ = load_run(REPO / "checkpoints" / name)
        mu = encoder_means(model, binary.x_test[:1000]).double()  # the page's batches: the same float32 sums
        s = witness_log_probs(mu, 10, config_of(model).gain, witness_of(model)).exp()[3].numpy()
        np.testing.assert_allclose(bars[f"S(x): {name}"], s, rtol=1e-9, atol=1e-15)


def test_images_come_from_the_url_and_bad_input_is_one_line(no_saved_runs):
    at = open_page(PAGE, 300, images="5, 7")
    assert not at.exception and not at.error, texts(at.error)
    titles = [c.proto.spec for c in at.get("plotly_chart")[4:]]
    assert len(titles) == 2 and '"test image #5"' in titles[0] and '"test image #7"' in titles[1]
    for bad, msg in (("3, x", "(got 'x')"), ("1000", "(got '1000')")):
        at = open_page(PAGE, 300, images=bad)
        assert not at.exception
        assert len(at.error) == 1 and "test image numbers are whole numbers from 0 to 999" in at.error[0].value
        assert msg in at.error[0].value


@pytest.fixture
def no_saved_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CVAE_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


def test_a_latent_too_small_for_the_witness_says_so(no_saved_runs, binary):
    from cvae_core.registry import build_model
    from cvae_core.train import TrainConfig

    model = build_model("vae", seed=0, arch="mlp", hidden=32, latent_dim=4, likelihood="bernoulli")
    save_run(no_saved_runs / "small", model, train_config=TrainConfig(steps=1), dataset={"name": "mnist-binary"},
             metrics={}, history={"records": []})
    at = open_page(PAGE, 300, run0="saved: small")
    assert not at.exception
    assert texts(at.error) == "the certificate needs latent_dim >= K - 1 = 9 witness coordinates (got 4)"
    assert len(at.metric) == 4  # the other side still shows its numbers


def test_the_run_training_now_shows_its_live_curve(lab_dirs, mnist_small, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from cvae_core.eval.certificate import LiveCertificate
    from cvae_core.jobs import TrainingJob
    from cvae_core.registry import build_model
    from cvae_core.train import TrainConfig
    from pages import _maps

    monkeypatch.setenv("CVAE_DATA_DIR", str(tmp_path / "data"))  # the small set's teacher cache
    model = build_model("vae", seed=0, arch="mlp", hidden=64, latent_dim=12)
    live = LiveCertificate(mnist_small, mnist_small.x_test[:200], background=False)
    job = TrainingJob(model, mnist_small, TrainConfig(steps=400, batch_size=32, log_every=10, seed=0),
                      au_images=200, callbacks=[live]).start()
    try:
        t0 = time.monotonic()
        while job.alive and len(job.snapshot()["records"]) < 2 and time.monotonic() - t0 < 60:
            job.join(0.1)
        job.pause()
        at = AppTest.from_file(PAGE, default_timeout=300)
        at.session_state["job"] = job
        at.query_params.update(run0=_maps.LIVE)
        at.run()
        assert not at.exception and not at.error, texts(at.error)
        assert at.selectbox(key="run0").value == _maps.LIVE
        assert "**GT over training**" in texts(at.markdown)
        curve = [c for c in at.get("plotly_chart") if '"GT = IT' in c.proto.spec][0]
        import json

        gt = plotly_values(json.loads(curve.proto.spec)["data"][0]["y"])
        recs = job.snapshot()["records"]
        np.testing.assert_allclose(gt, [r["GT"] for r in recs], rtol=1e-12)
        step = at.session_state["latent_live"][2]
        assert f"step {step:,}" in texts(at.markdown)
    finally:
        job.stop()
        job.join(10)


def test_bad_url_values_are_named_and_the_url_round_trips(no_saved_runs):
    at = open_page(PAGE, 300, run0="../../etc", run1="mnistbin_vae_beta8", images="7, " * 5000)
    assert not at.exception and not at.error, texts(at.error)
    w = texts(at.warning)
    assert "URL parameter run0: '../../etc' is not a run name (a folder name, or runs/NAME for a saved run); using " \
        "mnistbin_vae_beta8 instead." in w
    assert "URL parameter images: '7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,…' (15,000 characters) is longer than 200 " \
        "characters; using 0, 1, 2, 3 instead." in w
    assert dict(at.query_params) == {"run0": "mnistbin_vae_beta8", "run1": "mnistbin_vae_beta8", "images": "0, 1, 2, 3"}
    at = open_page(PAGE, 300, run1="runs/gone")
    assert "No run named 'runs/gone' (URL parameter run1); using mnistbin_rst_vae_beta8 instead." in texts(at.warning)
    # a view's URL opens the same view in a new session
    at = open_page(PAGE, 300, run0="mnistbin_rst_vae_beta8", run1="mnistbin_vae_beta1", images="9, 5")
    assert not at.exception and not at.error and "URL parameter" not in texts(at.warning)
    again = open_page(PAGE, 300, **dict(at.query_params))
    assert dict(again.query_params) == dict(at.query_params) == {"run0": "mnistbin_rst_vae_beta8",
                                                                 "run1": "mnistbin_vae_beta1", "images": "9, 5"}
    assert _metrics(again) == _metrics(at) and "URL parameter" not in texts(again.warning)
    assert [c.proto.spec for c in again.get("plotly_chart")] == [c.proto.spec for c in at.get("plotly_chart")]
