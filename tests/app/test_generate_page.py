"""Generate page (AppTest) on the shipped runs: the default view, the β and ν sliders snapping to the sweeps, the URL
round trip, bad URL values (a warning naming the parameter and the value used), a move that changes only what it
should, conditional runs, and "Train β exactly" saving a run that joins the slider."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from _apptest import open_page, texts

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cvae_core import jobs  # noqa: E402
from cvae_core.eval import generate as G  # noqa: E402
from cvae_core.runs import catalog  # noqa: E402
from cvae_core.runs.folder import load_run  # noqa: E402
from pages import _gen  # noqa: E402

PAGE = str(REPO / "pages/generate.py")
TIMEOUT = 120
BETAS = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]


@pytest.fixture(autouse=True)
def saved_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CVAE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("CVAE_CHECKPOINTS_DIR", raising=False)
    return tmp_path / "runs"


def urls(at) -> list[str]:
    """The media URLs of the page's three pictures (samples, traversal, interpolation); a URL is a hash of the
    picture's bytes, so equal URLs mean equal pictures."""
    return [i.proto.imgs[0].url for i in at.get("image")]


def test_the_default_view_is_bs_vae_at_beta_1_with_three_pictures_to_download():
    at = open_page(PAGE, TIMEOUT)
    assert not at.exception and not at.warning and not at.error, texts(at.warning) + texts(at.error)
    assert at.selectbox(key="gen_family").value == "bs" and at.select_slider(key="gen_value").value == 1.0
    assert at.select_slider(key="gen_value").options == [f"{b:g}" for b in BETAS]
    assert "On show: **bs_beta1**, bs_vae trained at β = **1**" in texts(at.markdown)
    assert dict(at.query_params) == {"family": "bs", "beta": "1", "tau": "1", "seed": "0", "a": "0", "b": "1"}
    assert len(at.get("image")) == 3 and len(at.get("download_button")) == 3
    cap = at.get("image")[1].proto.imgs[0].caption
    stats = G.latent_stats(*_model_and_x("bs_beta1"), None)  # computed here on the same 1,000 test images
    assert f"dimensions {', '.join(str(d) for d in stats.order[:8])}" in cap


def _model_and_x(name: str):
    from cvae_core.data import load_dataset

    model, _ = load_run(catalog.sweep_root() / name)
    return model, load_dataset("mnist").x_test[: G.STAT_IMAGES]


def test_the_sample_grid_is_the_independent_decode_of_the_fixed_noise():
    model, _ = load_run(catalog.sweep_root() / "sse_beta10")
    images, per_row, what = _gen.samples(model, 5, 0.5, _gen.ALL, ())
    eps = torch.randn(64, 16, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(images, model.mean_image(model.decoder(0.5 * eps)).float(), atol=1e-6, rtol=1e-5)
    assert per_row == 8 and what == "unconditional"


def test_a_move_changes_only_the_pictures_it_should():
    at = open_page(PAGE, TIMEOUT)
    first = urls(at)
    at.number_input(key="gen_seed").set_value(3).run()
    seeded = urls(at)
    assert seeded[0] != first[0] and seeded[1:] == first[1:]  # new noise: new samples, same traversal and blend
    at.slider(key="gen_tau").set_value(0.5).run()
    assert urls(at)[0] not in (first[0], seeded[0]) and urls(at)[1:] == first[1:]
    assert at.query_params["tau"] == "0.5" and at.query_params["seed"] == "3"
    at.number_input(key="gen_b").set_value(7).run()
    assert urls(at)[:2] == urls(at)[:2] and urls(at)[2] != first[2] and at.query_params["b"] == "7"
    at.select_slider(key="gen_value").set_value(30.0).run()  # another run: every picture changes
    moved = urls(at)
    assert all(m != s for m, s in zip(moved, seeded, strict=True))
    assert "On show: **bs_beta30**" in texts(at.markdown) and at.query_params["beta"] == "30"
    at.select_slider(key="gen_value").set_value(1.0).run()
    at.slider(key="gen_tau").set_value(1.0).run()
    at.number_input(key="gen_seed").set_value(0).run()
    at.number_input(key="gen_b").set_value(1).run()
    assert urls(at) == first  # back where it started: the same pictures, byte for byte
    assert not at.exception


def test_a_link_reproduces_the_view():
    at = open_page(PAGE, TIMEOUT, family="sse", beta="10", tau="0.25", seed="42", a="5", b="9")
    assert not at.exception and not at.warning, texts(at.warning)
    assert at.selectbox(key="gen_family").value == "sse" and at.select_slider(key="gen_value").value == 10.0
    assert at.slider(key="gen_tau").value == 0.25 and at.number_input(key="gen_seed").value == 42
    assert at.number_input(key="gen_a").value == 5 and at.number_input(key="gen_b").value == 9
    assert "On show: **sse_beta10**" in texts(at.markdown)
    assert dict(at.query_params) == {"family": "sse", "beta": "10", "tau": "0.25", "seed": "42", "a": "5", "b": "9"}


@pytest.mark.parametrize(("query", "says", "check"), [
    ({"beta": "abc"}, "URL parameter beta: 'abc' is not a number; using 1 instead",
     lambda at: at.select_slider(key="gen_value").value == 1.0),
    ({"tau": "-1"}, "URL parameter tau: '-1' is below the smallest allowed value 0; using 0 instead",
     lambda at: at.slider(key="gen_tau").value == 0.0),
    ({"tau": "nan"}, "URL parameter tau: 'nan' is not a number; using 1 instead",
     lambda at: at.slider(key="gen_tau").value == 1.0),
    ({"seed": "1e400"}, "URL parameter seed: '1e400' is not a whole number; using 0 instead",
     lambda at: at.number_input(key="gen_seed").value == 0),
    ({"run": "../../etc"}, "URL parameter run: '../../etc' is not a run name",
     lambda at: at.selectbox(key="gen_family").value == "bs"),
    ({"run": "no_such_run"}, "No run named 'no_such_run' (URL parameter run); using bs_beta1 instead",
     lambda at: at.selectbox(key="gen_family").value == "bs"),
    ({"family": "gan"}, "URL parameter family: 'gan' is not one of",
     lambda at: at.selectbox(key="gen_family").value == "bs"),
    ({"y": "3"}, "URL parameter 'y' is not used by bs_beta1 (unconditional); ignored (its value: '3')",
     lambda at: "y" not in at.query_params),
    ({"run": "mnist_cvae", "y": "12"}, "URL parameter y: '12' is not one of all, 0, 1",
     lambda at: at.selectbox(key="gen_y").value == "all"),
    ({"run": "sse_beta3", "beta": "10"}, "URL parameter beta: 10 is not the beta of run sse_beta3",
     lambda at: at.select_slider(key="gen_value").value == 3.0),
    ({"run": "mnistlt100_ct3vae_nu5", "beta": "1"},
     "URL parameter beta: 1 is not used with run mnistlt100_ct3vae_nu5 (not a run of a beta sweep)",
     lambda at: at.select_slider(key="gen_value").value == 5.0),
    ({"run": "mnist_cvae", "nu": "5"}, "URL parameter nu: 5 is not used with run mnist_cvae (not a run of a nu sweep)",
     lambda at: at.selectbox(key="gen_run").value == "mnist_cvae"),
])
def test_a_bad_url_value_is_named_with_the_value_used(query, says, check):
    at = open_page(PAGE, TIMEOUT, **query)
    assert not at.exception and not at.error
    assert says in texts(at.warning), texts(at.warning)
    assert check(at)


def test_a_beta_between_the_sweeps_runs_snaps_to_the_nearest_and_offers_it_for_training():
    at = open_page(PAGE, TIMEOUT, beta="2")
    assert not at.exception and not at.warning
    assert at.select_slider(key="gen_value").value == 3.0  # |log 2 - log 3| < |log 2 - log 1|
    assert "No run of this sweep is trained at β = 2: showing the nearest, 3" in texts(at.info)
    assert at.number_input(key="gen_exact").value == 2.0 and at.button(key="gen_train").label == "Train β = 2"
    assert at.query_params["beta"] == "3"  # the URL says what is on show


def test_the_nu_sweep_and_a_class_conditional_grid():
    at = open_page(PAGE, TIMEOUT, family="nu", nu="5", y="all")
    assert not at.exception and not at.warning, texts(at.warning)
    assert at.select_slider(key="gen_value").options == ["2.5", "5", "10", "20"]
    assert "On show: **mnistlt100_ct3vae_nu5**, ct3vae trained at ν = **5**" in texts(at.markdown)
    cap = at.get("image")[0].proto.imgs[0].caption
    model, _ = load_run(catalog.shipped_root() / "mnistlt100_ct3vae_nu5")
    assert cap.startswith("row k: class k") and f"τ = {model.default_tau:.3g}" in cap
    at.selectbox(key="gen_y").set_value("7").run()
    assert at.get("image")[0].proto.imgs[0].caption.startswith("all of class 7") and at.query_params["y"] == "7"
    at.select_slider(key="gen_value").set_value(20.0).run()
    assert at.query_params["nu"] == "20" and at.selectbox(key="gen_y").value == "7"  # the class stays
    assert "variance of the encoder means" in at.get("image")[1].proto.imgs[0].caption  # Student-t: no KL per dim


def test_an_attribute_run_takes_its_digit_and_attributes_from_the_url():
    at = open_page(PAGE, TIMEOUT, run="morpho_flow_cvae", y="2", thick="0", slant="1", red="0.5", large="1")
    assert not at.exception and not at.warning, texts(at.warning)
    assert at.selectbox(key="gen_family").value == "any" and at.selectbox(key="gen_run").value == "morpho_flow_cvae"
    assert [at.slider(key=f"gen_{a}").value for a in _gen.ATTRS] == [0.0, 1.0, 0.5, 1.0]
    assert "digit 2, thick 0, slant 1, red 0.5, large 1" in at.get("image")[0].proto.imgs[0].caption
    assert at.query_params["run"] == "morpho_flow_cvae" and at.query_params["red"] == "0.5"
    # a flow prior does not split its KL by dimension: the traversal says what it is ordered by instead
    assert "variance of the encoder means" in at.get("image")[1].proto.imgs[0].caption
    at.selectbox(key="gen_run").set_value("mnist_bs_vae").run()  # to an unconditional run: no condition controls
    assert not at.exception and "red" not in at.query_params and "y" not in at.query_params


def test_train_beta_exactly_saves_a_run_that_joins_the_slider(saved_runs, monkeypatch):
    real = jobs.variant_training

    def short(base_info, changes, data, out, steps=None):  # the sweep's 6 epochs take a minute: 30 steps here
        return real(base_info, changes, data.subset(2000, 200), out, steps=30)

    monkeypatch.setattr(jobs, "variant_training", short)
    at = open_page(PAGE, TIMEOUT, beta="2")
    at.button(key="gen_train").click().run()
    assert not at.exception and not at.error, texts(at.error)
    job = at.session_state["gen_job"]
    job.join(120)
    assert job.snapshot()["status"] == "saved", job.snapshot()["text"]
    assert job.snapshot()["saved"] == saved_runs / "bs_beta2"
    at.run()  # the progress fragment sees the end, selects the run and reruns the page
    assert not at.exception
    assert "Trained and saved **bs_beta2**" in texts(at.success)
    assert 2.0 in catalog.beta_sweep("bs") and catalog.beta_sweep("bs")[2.0].id == "runs/bs_beta2"
    assert at.select_slider(key="gen_value").value == 2.0
    assert "On show: **saved\\: bs_beta2**, bs_vae trained at β = **2**" in texts(at.markdown)  # ':' escaped
    model, info = load_run(saved_runs / "bs_beta2")
    assert info["config"]["beta"] == 2.0 and info["config"]["hidden"] == 64 and info["history"]["step"] == 30
