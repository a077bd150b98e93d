"""Streamlit helpers for the Rare combinations page: the morpho-mnist runs (shipped and saved), cached samples and
measurements per (run, condition), the training heat map and the prior picture. The maths lives in
``cvae_core.eval.attributes`` and ``cvae_core.data.morpho``.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from cvae_core import jobs
from cvae_core.data import morpho
from cvae_core.eval import attributes as A
from cvae_core.runs.catalog import RunEntry
from pages import _images, _runs, _url

N_SAMPLES = 16  # samples per model and condition (a 4 x 4 grid); their measured accuracy is shown beside them
N_PRIOR = 300  # prior draws in the picture of p(z|y)
N_IMAGES = 150  # encoded images of the cell in that picture (encoding is most of a new picture's cost)
SHIPPED_ORDER = ("morpho_cvae", "morpho_sigma_cvae", "morpho_flow_cvae", "morpho_flow_cvae_2stage")
SLIDERS = {  # attribute -> (label, what 0 means, what 1 means)
    "thick": ("Stroke", "thin", "thick"),
    "slant": ("Slant", "left", "right"),
    "red": ("Colour", "blue", "red"),
    "large": ("Size", "small", "large"),
}
KIND_TEXT = {"common": "a common combination",
             "rare": "a rare combination (0.4% of training over all ten digits)",
             "heldout": "held out: this digit never appears with this combination in training"}
COLORS = {"prior": "#F97316", "standard": "#94A3B8", "images": "#4F46E5"}


URL_KEYS = ("digit", *SLIDERS, "run", "seed")
PRESET = {"digit": 4, "thick": 1.0, "slant": 0.0, "red": 1.0, "large": 0.0}  # held out: never in training


def label(run: RunEntry) -> str:
    """What a run is called on the page: its model, and '(two-stage)' for a two-stage flow."""
    return f"{run.model}{' (two-stage)' if run.two_stage else ''}"


def option_label(run: RunEntry) -> str:
    """A run in the run box: its model for a shipped run (its folder name says no more), model · id for a saved one,
    short enough that four chips fit a narrow column."""
    return label(run) if run.shipped else f"{label(run)} · {run.id}"


def find_runs() -> tuple[dict[str, RunEntry], list[str]]:
    """run id -> run of every morpho-mnist run conditioned on attributes, shipped ones first in the page's order,
    and one-line problems. The id (the URL's `run=`) is the folder name for shipped runs and runs/NAME for saved
    ones, so a link works on any installation."""
    runs, problems = _runs.runs(dataset="morpho-mnist", condition="attributes")
    order = {n: i for i, n in enumerate(SHIPPED_ORDER)}
    runs = sorted(runs, key=lambda r: (order.get(r.id, len(order)), f"{label(r)} · {r.id}"))
    return {r.id: r for r in runs}, problems


def restore_view(runs: dict[str, RunEntry]) -> None:
    """The condition asked for, the runs shown and the seed: from the URL on the first run of a page view (out of
    range values clamped, a run that is not here an error line), then the widgets' own."""
    _url.restore("digit", "int", PRESET["digit"], lo=0, hi=9)
    for a in morpho.ATTRIBUTES:
        _url.restore(a, "float", PRESET[a], lo=0.0, hi=1.0)
    _url.restore("shown", "run", list(runs)[:4], choices=list(runs), many=True, url_key="run",
                 noun="morpho-mnist run", level="error")
    _url.restore("seed", "int", 0, lo=0, hi=1_000_000)


def load(run: RunEntry):
    """(model, info, data), cached; raises LabError with one line."""
    return _runs.load_source(run.path)


# ------------------------------------------------------------------ cached computations, keyed by (run, condition)
@st.cache_resource(show_spinner=False)
def prefetcher() -> jobs.Prefetcher:
    """One per server: draws the conditions the next move is likely to ask for (see ``prefetch``)."""
    return jobs.Prefetcher(keep=256)


def _cell_view(run_key: str, digit: int, attrs: tuple[float, ...], seed: int, model) -> dict:
    r = A.score_cell(model, digit, list(attrs), N_SAMPLES, seed=seed)
    return {"grid": _images.image_grid(r["images"], nrow=4, scale=3), "accuracy": r["accuracy"],
            "predicted": r["predicted"]}


@st.cache_data(show_spinner=False, max_entries=512)
def cell_view(run_key: str, digit: int, attrs: tuple[float, ...], seed: int, _model) -> dict:
    """N_SAMPLES samples of one run for the condition, as a grid image, with their measured attribute accuracy;
    taken from the prefetcher when it drew them ahead of time."""
    done = prefetcher().take(("cell", run_key, digit, attrs, seed))
    return done if done is not None else _cell_view(run_key, digit, attrs, seed, _model)


@st.cache_resource(show_spinner=False, max_entries=16)
def pca(run_key: str, _model, _data):
    return A.latent_pca(_model, _data)


def _picture(digit: int, attrs: tuple[float, ...], model, data, fitted) -> dict:
    return A.prior_picture(model, data, digit, list(attrs), fitted, n=N_PRIOR, max_images=N_IMAGES)


@st.cache_data(show_spinner=False, max_entries=256)
def picture(run_key: str, digit: int, attrs: tuple[float, ...], _model, _data) -> dict:
    done = prefetcher().take(("picture", run_key, digit, attrs))
    return done if done is not None else _picture(digit, attrs, _model, _data, pca(run_key, _model, _data))


def neighbours(digit: int, attrs: tuple[float, ...]) -> list[tuple[int, tuple[float, ...]]]:
    """The conditions one move away: each attribute flipped to its other end (a value in between goes to the end
    it is farther from), then the digits either side."""
    out = [(digit, attrs[:i] + (0.0 if A.asked_bits(v) else 1.0,) + attrs[i + 1:]) for i, v in enumerate(attrs)]
    return out + [(d, attrs) for d in (digit + 1, digit - 1) if 0 <= d <= 9]


def prefetch(shown: list[tuple[str, object]], flows: list[tuple[str, object]], data, digit: int,
             attrs: tuple[float, ...], seed: int) -> None:
    """Queue, for the runs on show, the samples and prior pictures of every neighbouring condition (about 60 ms of
    one core each), so that the next attribute flip or digit step finds them drawn."""
    jobs = []
    for d, a in neighbours(digit, attrs):
        for key, model in shown:
            jobs.append((("cell", key, d, a, seed), lambda k=key, d=d, a=a, m=model: _cell_view(k, d, a, seed, m)))
        for key, model in flows:  # the PCA is fitted here, in the script thread (it is a Streamlit cache)
            fitted = pca(key, model, data)
            jobs.append((("picture", key, d, a), lambda d=d, a=a, m=model, f=fitted: _picture(d, a, m, data, f)))
    prefetcher().want(jobs)


@st.cache_data(show_spinner=False)
def training_counts(data_key: str, _data) -> np.ndarray:
    """(10, 16) training images per (digit, combination) cell."""
    return np.asarray(_data.info["cell_counts_train"])


# ------------------------------------------------------------------ figures
@st.cache_resource(show_spinner=False, max_entries=64)
def heatmap(counts_key: str, counts: np.ndarray, digit: int, combo: int) -> go.Figure:
    """Training count per (digit, combination): log colour scale, rare cells marked r, held-out cells ×, the chosen
    cell outlined."""
    kinds = A.cell_kinds()
    text = np.where(kinds == "heldout", "×", np.where(kinds == "rare", "r", ""))
    labels = [morpho.combo_label(c) for c in range(16)]
    short = [lab.replace(" · ", "·") for lab in labels]
    fig = go.Figure(go.Heatmap(
        z=np.log10(counts + 1), x=short, y=[str(d) for d in range(10)], text=text, texttemplate="%{text}",
        customdata=np.stack([counts, np.broadcast_to(np.array(labels), counts.shape)], -1),
        hovertemplate="digit %{y} · %{customdata[1]}<br>%{customdata[0]} training images<extra></extra>",
        colorscale="Blues", zmin=0, zmax=float(np.log10(counts.max() + 1)),
        colorbar=dict(title="images", tickvals=[0, 1, 2, 3], ticktext=["0", "10", "100", "1000"], thickness=12)))
    fig.add_shape(type="rect", x0=combo - 0.5, x1=combo + 0.5, y0=digit - 0.5, y1=digit + 0.5,
                  line=dict(color="#F97316", width=3))
    fig.update_layout(height=330, margin=dict(l=10, r=10, t=10, b=10), xaxis=dict(tickangle=-50, tickfont_size=9),
                      yaxis=dict(title="digit", autorange="reversed"))
    return fig


@st.cache_resource(show_spinner=False, max_entries=256)
def prior_figure(key: str, _pic: dict, title: str) -> go.Figure:
    """The picture as a figure, cached by (run, condition) like the picture itself: building a plotly figure costs
    about as much as drawing its points. Read-only (st.plotly_chart copies it)."""
    pic = _pic
    fig = go.Figure()
    where = "training" if pic["images_split"] == "train" else "test (the cell is held out of training)"
    for name, pts, color, text in (
            ("standard", pic["standard"], COLORS["standard"], "N(0, I)"),
            ("prior", pic["prior"], COLORS["prior"], "learned prior p(z|y)"),
            ("images", pic["images"], COLORS["images"], f"{where} images of this combination")):
        fig.add_trace(go.Scattergl(x=pts[:, 0], y=pts[:, 1], mode="markers", name=text,
                                   marker=dict(size=5, color=color, opacity=0.55 if name != "images" else 0.8)))
    fig.update_layout(title=dict(text=title, font_size=14), height=360, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.12), xaxis_title="PC 1", yaxis_title="PC 2")
    return fig


def accuracy_line(acc: dict, asked: tuple[float, ...]) -> str:
    """'✓ thick 94% · ✓ left 100% · ...' for the requested side of every attribute (✓ at least 75% of the samples
    show it, ~ at least half, ✗ fewer)."""
    parts = []
    for name, a in zip(morpho.ATTRIBUTES, asked, strict=True):
        word = SLIDERS[name][1 + int(A.asked_bits(a))]
        v = acc[name]
        mark = ":green[**✓**]" if v >= 0.75 else ":orange[**~**]" if v >= 0.5 else ":red[**✗**]"
        parts.append(f"{mark} {word} {v:.0%}")
    return " · ".join(parts)


def entanglement(attrs: tuple[float, ...], corr: np.ndarray, threshold: float = 0.3) -> list[str]:
    """Warnings for the asked attribute pairs that go against a strong correlation of the training data."""
    out = []
    names = morpho.ATTRIBUTES
    for i in range(4):
        for j in range(i + 1, 4):
            r = corr[i][j]
            if abs(r) < threshold:
                continue
            a, b = A.asked_bits([attrs[i], attrs[j]]).astype(bool)
            if (a == b) != (r > 0):
                wi = SLIDERS[names[i]][2 if a else 1]
                wj = SLIDERS[names[j]][2 if b else 1]
                out.append(f"**{names[i]}** and **{names[j]}** are entangled in the training data (correlation "
                           f"{r:+.2f}): {wi} {wj} digits are scarce, so a model may have learnt the two as one "
                           f"and draw the usual partner instead.")
    return out
