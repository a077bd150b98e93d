"""The Rare combinations page on the shipped morpho-mnist runs, through AppTest: what it shows is recomputed here
(samples' measured accuracy, the training counts behind the heat map, the cell's kind), and bad URLs or a missing
run folder give one-line messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _apptest import lesson_text, open_page, open_page_without_saved_runs, plotly_values, texts

from cvae_core.data import morpho
from cvae_core.eval.attributes import score_cell
from cvae_core.runs.folder import load_run

REPO = Path(__file__).resolve().parents[2]
PAGE = str(REPO / "pages" / "rare_combinations.py")
SHIPPED = ("morpho_cvae", "morpho_sigma_cvae", "morpho_flow_cvae", "morpho_flow_cvae_2stage")
pytestmark = pytest.mark.usefixtures("one_thread", "quiet_prefetcher")


@pytest.fixture
def quiet_prefetcher():
    """The page's prefetcher draws the neighbouring conditions in the background after each view; drop its queue
    after every test so that it never competes with the tests that follow."""
    yield
    from pages import _rare

    _rare.prefetcher().close()


@pytest.fixture
def no_saved_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CVAE_RUNS_DIR", str(tmp_path / "runs"))


@pytest.fixture(scope="module")
def first_view():
    return open_page_without_saved_runs(PAGE, 300)


def test_opens_on_the_held_out_four_with_the_four_shipped_runs(first_view):
    at = first_view
    assert not at.exception and not at.error, texts(at.error)
    assert "digit 4, thick · left · red · small" in texts(at.warning) and "held out: this digit never appears with " \
        "this combination in training**; this digit with this combination: 0 of 60,000" in texts(at.warning)
    assert at.multiselect(key="shown").value == list(SHIPPED)
    assert len(at.get("image")) == 4
    md = texts(at.markdown)
    for name in ("cvae", "sigma_cvae", "flow_cvae", "flow_cvae (two-stage)"):
        assert f"**{name}**" in md
    # each run's "x% of attributes right" is the measured accuracy of the same 16 seeded samples
    for name in SHIPPED:
        model, _ = load_run(REPO / "checkpoints" / name)
        acc = score_cell(model, 4, [1, 0, 1, 0], 16, seed=0)["accuracy"]
        assert f"**{acc['all']:.0%}** of the attributes right in these 16 samples" in md, name
    q = at.query_params
    assert {k: q[k] for k in ("digit", *morpho.ATTRIBUTES, "seed")} == {
        "digit": "4", "thick": "1", "slant": "0", "red": "1", "large": "0", "seed": "0"}
    assert q["run"] == list(SHIPPED)
    assert "CelebA (64×64 faces, 40 binary attributes)" in texts(at.caption)  # here without its files: says so


def test_every_digit_and_every_run_is_visible_in_a_narrow_column(first_view):
    """Teacher feedback at 1280 px: the digit buttons ran out of their column (8 half shown, 9 hidden) and the run
    box showed two of the four runs. Both widgets wrap onto more rows now, and a shipped run's chip is its model."""
    at = first_view
    digits, shown = at.segmented_control(key="digit"), at.multiselect(key="shown")
    assert digits.options == [str(d) for d in range(10)] and digits.proto.wrap is True
    assert shown.proto.wrap is True and shown.value == list(SHIPPED)
    assert shown.options == ["cvae", "sigma_cvae", "flow_cvae", "flow_cvae (two-stage)"]


def test_the_lesson_gives_the_flow_prior(first_view):
    text = lesson_text(first_view)
    assert r"u \sim \mathcal{N}(\mu_p(y), \sigma_p^2(y))" in text and "z = f(u; y)" in text
    assert r"\log p(z|y) = \log \mathcal{N}\big(f^{-1}(z; y);\, \mu_p(y), \sigma_p^2(y)\big)" in text
    assert r"\log \big|\det \partial f^{-1} / \partial z\big|" in text


def test_heat_map_is_the_training_count_of_every_cell(first_view, mnist):
    from cvae_core.data import load_dataset

    fig = first_view.get("plotly_chart")[0].proto.spec
    import json

    spec = json.loads(fig)
    z = plotly_values(spec["data"][0]["z"])
    data = load_dataset("morpho-mnist")
    digits = data.y_train.numpy()
    attrs = (data.extras_train["attributes"][:, 10:].numpy() > 0.5).astype(int)
    counts = morpho.cell_counts(digits, attrs)
    np.testing.assert_allclose(z, np.log10(counts + 1), rtol=1e-6)
    text = plotly_values(spec["data"][0]["text"])
    assert (text == "×").sum() == 4 and text[4, morpho.combo_index([[1, 0, 1, 0]])[0]] == "×"
    assert (text == "r").sum() == 20 - sum(1 for c in morpho.HELDOUT_CELLS if tuple(c[1:]) in morpho.RARE_COMBOS)


def test_moving_a_slider_redraws_and_warns_about_entangled_attributes(first_view):
    """A flip of the stroke is one of the neighbours the page draws in the background: after the prefetcher is
    idle the move finds its samples drawn (the same as drawing them in the script thread)."""
    from pages import _rare

    at = first_view
    assert _rare.prefetcher().idle(120)
    at.slider(key="thick").set_value(0.0).run()
    assert not at.exception and not at.error
    assert "thick** and **red** are entangled in the training data (correlation +0.74): thin red digits" in \
        texts(at.warning)
    assert "digit 4, thin · left · red · small" in texts(at.info)
    assert at.query_params["thick"] == "0"
    model, _ = load_run(REPO / "checkpoints" / "morpho_flow_cvae")
    acc = score_cell(model, 4, [0, 0, 1, 0], 16, seed=0)["accuracy"]
    assert f"**{acc['all']:.0%}** of the attributes right in these 16 samples" in texts(at.markdown)


def test_url_state_and_bad_values(no_saved_runs):
    at = open_page(PAGE, 300, digit="7", thick="0", slant="1", red="0", large="1", run=["morpho_flow_cvae"], seed="3")
    assert not at.exception and not at.error
    assert "digit 7, thin · right · blue · large" in texts(at.warning) and "held out" in texts(at.warning)
    assert len(at.get("image")) == 1 and at.number_input(key="seed").value == 3
    at = open_page(PAGE, 300, run=["nope", "morpho_cvae"])
    assert "No morpho-mnist run named 'nope'" in texts(at.error) and len(at.get("image")) == 1
    at = open_page(PAGE, 300, large="0.5", run=["morpho_cvae"])  # 0.5 rounds up, for the cell and the scores alike
    assert "digit 4, thick · left · red · large" in texts(at.info) + texts(at.warning)
    assert " large " in texts(at.caption) and " small " not in texts(at.caption)
    at = open_page(PAGE, 300, digit="x", thick="7", slant="-1", red="nan?")
    assert not at.exception and not at.error
    assert at.slider(key="thick").value == 1.0 and at.slider(key="slant").value == 0.0
    assert at.segmented_control(key="digit").value == 4


def test_bad_url_values_are_named_and_the_url_round_trips(no_saved_runs):
    at = open_page(PAGE, 300, digit="12", thick="inf", slant="0.25", red="-1", seed="abc",
                   run=["morpho_flow_cvae", "../x"])
    assert not at.exception
    w = texts(at.warning)
    for line in ("URL parameter digit: '12' is above the largest allowed value 9; using 9 instead.",
                 "URL parameter thick: 'inf' is not a number; using 1 instead.",
                 "URL parameter red: '-1' is below the smallest allowed value 0; using 0 instead.",
                 "URL parameter seed: 'abc' is not a whole number; using 0 instead."):
        assert line in w, line
    assert "URL parameter run: '../x' is not a run name (a folder name, or runs/NAME for a saved run); left out." \
        in texts(at.error)
    assert at.multiselect(key="shown").value == ["morpho_flow_cvae"] and len(at.get("image")) == 1
    query = {"digit": "9", "thick": "1", "slant": "0.25", "red": "0", "large": "0", "run": "morpho_flow_cvae",
             "seed": "0"}
    assert dict(at.query_params) == query
    again = open_page(PAGE, 300, **query)  # the page's URL opens the same view
    assert not again.exception and not again.error and "URL parameter" not in texts(again.warning)
    assert [again.slider(key=a).value for a in morpho.ATTRIBUTES] == [at.slider(key=a).value
                                                                      for a in morpho.ATTRIBUTES] == [1, 0.25, 0, 0]
    assert again.segmented_control(key="digit").value == 9 and texts(again.markdown) == texts(at.markdown)
    assert [i.proto.imgs[0].url for i in again.get("image")] == [i.proto.imgs[0].url for i in at.get("image")]


def test_no_runs_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CVAE_CHECKPOINTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("CVAE_RUNS_DIR", str(tmp_path / "runs"))
    at = open_page(PAGE, 60)
    assert not at.exception
    assert "No morpho-mnist runs found" in texts(at.error)
