"""The Strategies page on the shipped sequence CVAE runs, through AppTest: the router bars, the greedy answers per
latent value and the posterior bars are recomputed here from the run folders (and the answers checked by the exact
checker); x and y live in the URL; bad input (letters, empty, too long for the context) gets one clear line; a
model trained on the page is saved and listed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from _apptest import open_page, open_page_without_saved_runs, plotly_values, texts

from cvae_core.seq_metrics import controlled_answers, router_probs
from cvae_core.seq_runs import load_seq_run

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "pages" / "strategies.py")
SHIPPED = REPO / "checkpoints" / "strategies"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def first_view():
    return open_page_without_saved_runs(PAGE, 300)


@pytest.fixture(scope="module")
def runs():
    return {n: load_seq_run(SHIPPED / n) for n in ("discrete", "continuous")}


def _latent_inputs(model, info):
    import torch

    if model.config.latent == "discrete":
        return model.z_embed.weight.detach(), None
    cent = np.asarray(info["metrics"]["centroids"], dtype=np.float32)
    with torch.no_grad():
        return model.z_proj(torch.from_numpy(cent)), cent


def test_opens_on_both_shipped_runs_with_their_numbers(first_view, runs):
    at = first_view
    assert not at.exception and not at.error, texts(at.error)
    assert [at.selectbox(key=f"run{i}").value for i in (0, 1)] == ["discrete", "continuous"]
    metrics = {m.label + str(i // 3): m.value for i, m in enumerate(at.metric)}
    for side, name in enumerate(("discrete", "continuous")):
        m = runs[name][2]["metrics"]
        assert metrics[f"NMI{side}"] == f"{m['nmi']:.2f}"
        assert metrics[f"Controllability{side}"] == f"{m['controllability']:.2f}"
        assert metrics[f"Recon ratio{side}"] == f"{m['recon_ratio']:.2f}"


def test_router_bars_and_answers_are_the_models(first_view, runs):
    at = first_view
    x = at.text_input(key="x").value
    charts = [c for c in at.get("plotly_chart")]
    for side, name in enumerate(("discrete", "continuous")):
        model, _, info = runs[name]
        vecs, cent = _latent_inputs(model, info)
        fig = charts[2 * side].proto.spec
        import json

        bars = plotly_values(json.loads(fig)["data"][0]["y"])
        np.testing.assert_allclose(bars, router_probs(model, [x], cent)[0], atol=1e-6)
        table = at.dataframe[3 * side].value
        task = info["task_obj"]
        for k, row in table.iterrows():
            ans = controlled_answers(model, [x], vecs[k])[0]
            assert row["answer"] == (ans if ans is not None else "(none)")
            made = task.check(x, ans) if ans is not None else []
            assert row["made by"] == (", ".join(task.strategies[s] for s in made) or "no strategy")


def test_the_posterior_bars_are_q_of_the_typed_answer(runs):
    at = open_page_without_saved_runs(PAGE, 300, x="52813", y="85321")
    assert not at.exception and not at.error, texts(at.error)
    import json

    import torch

    charts = [c for c in at.get("plotly_chart")]
    model, _, _ = runs["discrete"]
    with torch.no_grad():
        q = model.inference(["52813"], ["85321"]).probs[0].numpy()
    spec = json.loads(charts[1].proto.spec)
    np.testing.assert_allclose(plotly_values(spec["data"][0]["y"]), q, atol=1e-6)
    assert "made by: sort_desc" in spec["layout"]["title"]["text"]


@pytest.mark.parametrize("x,text", [
    ("12a4", "x may hold only the digits 0-9; remove 'a'."),
    ("", "Type some digits for x (it is empty)."),
    ("1" * 40, "x has 40 digits; this model's context holds at most"),
])
def test_bad_input_is_one_clear_line(x, text):
    at = open_page_without_saved_runs(PAGE, 300, x=x)
    assert not at.exception
    assert len(at.error) == 2 and all(text in e.value for e in at.error), texts(at.error)


def test_a_run_trained_on_the_page_is_saved_and_listed(lab_dirs, monkeypatch):
    runs_dir, ckpt = lab_dirs
    (ckpt / "strategies").mkdir(parents=True)
    for n in ("base", "discrete"):
        os.symlink(SHIPPED / n, ckpt / "strategies" / n)
    at = open_page(PAGE, 300)
    at.number_input(key="t_steps").set_value(10)
    at.text_input(key="t_name").set_value("tiny")
    at = at.button[0].click().run()
    assert not at.exception and not at.error, texts(at.error)
    job = at.session_state["seq_job"]
    job.thread.join(timeout=240)
    assert job.status == "done", (job.status, job.error)
    saved = runs_dir / "strategies" / "tiny"
    model, _, info = load_seq_run(saved)
    assert info["train"]["steps"] == 10 and info["metrics"]["nmi"] == job.metrics["nmi"]
    at = at.run()
    assert "saved: tiny" in at.selectbox(key="run0").options
