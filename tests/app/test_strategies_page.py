"""The Strategies page on the shipped sequence CVAE runs, through AppTest: the router bars, the greedy answers per
latent value and the posterior bars are recomputed here from the run folders (and the answers checked by the exact
checker); x and y live in the URL; bad input (letters, empty, too long for the context) gets one clear line; a
model trained on the page is saved and listed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _apptest import lesson_text, open_page, open_page_without_saved_runs, plotly_values, texts

from cvae_core.sequence.runs import load_seq_run

REPO = Path(__file__).resolve().parents[2]
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
    if model.config.latent == "discrete":
        return model.z_embed.weight.detach(), None
    cent = np.asarray(info["metrics"]["centroids"], dtype=np.float32)
    with torch.no_grad():
        return model.z_proj(torch.from_numpy(cent)), cent


@torch.no_grad()
def _greedy(model, x: str, zvec: torch.Tensor) -> str | None:
    """The decoder's greedy answer with its slot set to zvec, one token at a time, written out here."""
    v = model.vocab
    ids = v.encode(x)
    for _ in range(len(x) + 2):
        emb = model.decoder_lm.get_input_embeddings()(torch.tensor([ids]))[0].clone()
        emb[ids.index(v.slot)] = zvec
        nxt = int(model.decoder_lm(inputs_embeds=emb[None]).logits[0, -1].argmax())
        ids.append(nxt)
        if nxt in (v.ids["</y>"], v.ids["<eos>"]):
            break
    out = v.decode(ids[ids.index(v.ids["<y>"]) + 1 :])
    if "</y>" not in out or out.index("</y>") == 0 or not all(t.isdigit() for t in out[: out.index("</y>")]):
        return None
    return "".join(out[: out.index("</y>")])


@torch.no_grad()
def _router(model, x: str, cent, n: int = 4000) -> np.ndarray:
    """p(z|x) over the latent values: the router's probabilities, or (continuous) the nearest-centroid shares of
    many of its samples (the page uses 64 seeded ones: compared loosely)."""
    p = model.router([x])
    if cent is None:
        return p.probs[0].numpy()
    torch.manual_seed(0)
    z = p.sample((n,))[:, 0].numpy()
    near = ((z[:, None, :] - cent[None]) ** 2).sum(-1).argmin(1)
    return np.bincount(near, minlength=len(cent)) / n


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


def test_the_lesson_gives_the_objective_of_router_decoder_and_inference_network(first_view):
    text = lesson_text(first_view)
    assert (r"\mathbb{E}_{q_\xi(z|x,y)}[\log p_\psi(y|x,z)] - \beta\,\mathrm{KL}(q_\xi(z|x,y)\,\|\,p_\phi(z|x))"
            in text)
    assert r"\sum_k q_k \log p_\psi(y|x,k)" in text and "below 1 means z tells the decoder something" in text


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
        np.testing.assert_allclose(bars, _router(model, x, cent), atol=1e-6 if cent is None else 0.15)
        table = at.dataframe[3 * side].value
        task = info["task_obj"]
        for k, row in table.iterrows():
            ans = _greedy(model, x, vecs[k])
            assert row["answer"] == (ans if ans is not None else "(none)")
            made = task.check(x, ans) if ans is not None else []
            assert row["made by"] == (", ".join(task.strategies[s] for s in made) or "no strategy")


def test_the_posterior_bars_are_q_of_the_typed_answer(runs):
    at = open_page_without_saved_runs(PAGE, 300, x="52813", y="85321")
    assert not at.exception and not at.error, texts(at.error)
    import json

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
    at = at.run()
    name = next(t for t in at.text_input if t.label == "Save as")
    assert name.value == "discrete-K4-beta0.5-10"  # the suggestion follows the settings
    (runs_dir / "strategies" / "taken").mkdir(parents=True)
    name.set_value("taken")
    at = at.button[0].click().run()
    assert "A run named taken is already saved" in texts(at.error) and "seq_job" not in at.session_state
    next(t for t in at.text_input if t.label == "Save as").set_value("tiny")
    at = at.button[0].click().run()
    assert not at.exception and not at.error, texts(at.error)
    job = at.session_state["seq_job"]
    job.join(timeout=240)
    snap = job.snapshot()
    assert snap["status"] == "saved" and snap["saved"] == runs_dir / "strategies" / "tiny", snap["message"]
    saved = runs_dir / "strategies" / "tiny"
    model, _, info = load_seq_run(saved)
    assert info["train"]["steps"] == 10 and info["metrics"]["nmi"] == job.metrics["nmi"]
    at = at.run()
    assert "saved: tiny" in at.selectbox(key="run0").options


def test_bad_url_values_are_named_and_the_url_round_trips():
    at = open_page_without_saved_runs(PAGE, 300, x="4" * 10_000, run0="a\\b", run1="discrete")
    assert not at.exception and not at.error, texts(at.error)
    w = texts(at.warning)
    assert "URL parameter x: '44444444444444444444444444444444…' (10,000 characters) is longer than 64 characters; " \
        "using 40712 instead." in w
    assert "URL parameter run0: " in w and "is not a run name (a folder name, or runs/NAME for a saved run); using " \
        "discrete instead." in w
    assert dict(at.query_params) == {"x": "40712", "y": "01247", "run0": "discrete", "run1": "discrete"}
    at = open_page_without_saved_runs(PAGE, 300, x="93150", y="01359", run0="continuous", run1="discrete")
    assert not at.exception and not at.error and not at.warning
    again = open_page_without_saved_runs(PAGE, 300, **dict(at.query_params))
    assert dict(again.query_params) == dict(at.query_params) == {"x": "93150", "y": "01359", "run0": "continuous",
                                                                 "run1": "discrete"}
    assert [again.selectbox(key=f"run{i}").value for i in (0, 1)] == ["continuous", "discrete"]
    assert [c.proto.spec for c in again.get("plotly_chart")] == [c.proto.spec for c in at.get("plotly_chart")]
