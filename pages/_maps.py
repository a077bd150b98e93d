"""Streamlit helpers for the Latent map page: the UMAP warm-up thread, the runs to pick (with the live training
job), cached latents / projections / allocation shares keyed by (run, step), and the plotly figures. The maths lives
in ``cvae_core.eval.projection``.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from cvae_core.data import Dataset
from cvae_core.eval.likelihood import encoder_means
from cvae_core.eval.projection import allocation_shares, import_umap, pca_2d, umap_2d, warm_up_umap
from cvae_core.runs import catalog
from pages import _runs

LIVE = "live: the run on the Train page"
N_PRIOR = 2000  # prior draws for the allocation shares (one share's standard error is below 0.7 points)
N_OVERLAY = 500  # of which this many are drawn on the map
N_IMAGES = [1000, 2000, 5000, 10000]  # test images the map can encode
CLASS_COLORS = ["#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD",  # d3's category10: ten distinct hues
                "#8C564B", "#E377C2", "#7F7F7F", "#BCBD22", "#17BECF"]
PRIOR_COLOR, DATA_COLOR = "#4F46E5", "#94A3B8"
HALO = "1px 1px 2px #fff, -1px -1px 2px #fff, 1px -1px 2px #fff, -1px 1px 2px #fff"  # white outline for labels
OVERLAY_SYMBOLS = ["x-thin-open", "diamond", "star", "triangle-up", "square"]


# ------------------------------------------------------------------ UMAP warm-up (once per server)
@dataclass
class WarmUp:
    ready: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    seconds: float | None = None  # how long the compile took, once done
    error: str | None = None  # one line when umap-learn could not be used


@st.cache_resource(show_spinner=False)
def umap_warmup() -> WarmUp:
    """Start compiling UMAP's numba code in a daemon thread, once per server process; returns its state. The import
    itself (2.5 s) happens here, in the page's thread, so that no page imports pandas or scikit-learn at the same time
    as the warm-up thread (a half-imported module otherwise)."""
    state = WarmUp()
    try:
        import_umap()
    except Exception as e:  # shown on the page; PCA keeps working
        state.error = f"{type(e).__name__}: {e}"
        state.ready.set()
        return state

    def work() -> None:
        try:
            state.seconds = warm_up_umap()
        except Exception as e:  # shown on the page; PCA keeps working
            state.error = f"{type(e).__name__}: {e}"
        finally:
            state.ready.set()

    threading.Thread(target=work, name="umap-warmup", daemon=True).start()
    return state


def start_umap_warmup() -> None:
    """app.py calls this on every script run (a no-op after the first): UMAP compiles while people look at PCA."""
    umap_warmup()


# ------------------------------------------------------------------ runs and their data
_tokens: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def job_token(job) -> str:
    """A cache-key id for a training job that a later job never reuses (unlike ``id(job)``)."""
    if job not in _tokens:
        _tokens[job] = uuid.uuid4().hex[:12]
    return _tokens[job]


def run_options(job) -> dict[str, object]:
    """The runs a page can pick, label -> run: every image run of the catalog (shipped ones by name, saved ones as
    "saved: NAME"), folders it could not read (picking one says why), and the run training on the Train page
    (LIVE -> None) when this session has one."""
    options: dict[str, object] = {r.label: r for r in _runs.runs()[0]}
    options |= {u.label: u for u in _runs.unreadable() if u.label not in options}
    if job is not None:
        options[LIVE] = None
    return options


def load_option(option) -> tuple:
    """(model, info, data, cache key) of a picked run folder; raises LabError with one line."""
    model, info, data = _runs.load_source(option.path)
    return model, info, data, catalog.run_key(option.path)


def live_model(job, refresh: bool) -> tuple:
    """(model, step) of the session's training job, pinned in session state so the map stays put until
    Refresh (or a new job) asks for the latest log tick."""
    pin = st.session_state.get("latent_live")
    if refresh or pin is None or pin[0] != job_token(job):
        model, step = job.model_at_tick()
        pin = st.session_state["latent_live"] = (job_token(job), model, step)
    return pin[1], pin[2]


# ------------------------------------------------------------------ cached computations, keyed by (run, step)
@st.cache_data(show_spinner=False, max_entries=16)
def latents(key: str, n: int, _model, _data: Dataset) -> dict:
    """Encoder means of the first n test images, their labels, and the model's map overlays (seeded)."""
    x, y, cond = _data.x_test[:n], _data.y_test[:n], _data.y_for(_model, "test")
    means = encoder_means(_model, x, cond[:n] if _model.conditional else None).numpy()
    attr = _model.conditional and not _model.class_conditional  # prior samples at the test images' own conditions
    with torch.no_grad():
        over = _model.map_overlays(N_PRIOR, generator=torch.Generator().manual_seed(0),
                                   y=cond[:N_PRIOR] if attr else None)
    overlays = {k: (z.numpy(), None if c is None else c.numpy()) for k, (z, c) in over.items()}
    return {"means": means, "labels": y.numpy(), "overlays": overlays}


@st.cache_data(show_spinner=False, max_entries=32)
def project(key: str, n: int, method: str, _lat: dict) -> tuple[np.ndarray, dict]:
    """2-D coordinates of the means and of (up to N_OVERLAY of) each overlay's points."""
    coords, fitted = (umap_2d if method == "UMAP" else pca_2d)(_lat["means"])
    return coords, {k: fitted.transform(z[:N_OVERLAY]) for k, (z, _) in _lat["overlays"].items()}


@st.cache_data(show_spinner=False, max_entries=64)
def allocation(key: str, n: int, k: int, K: int, _lat: dict) -> np.ndarray | None:
    """Share of the prior samples nearest to each class (None when the model has no prior samples)."""
    prior = _lat["overlays"].get("prior samples")
    return None if prior is None else allocation_shares(_lat["means"], _lat["labels"], prior[0], K, k=k)


# ------------------------------------------------------------------ figures
# Building a plotly figure with thousands of points costs ~50 ms (plotly validates every property), more than a
# whole cached rerun may take, so the finished figures are cached too (read-only: st.plotly_chart copies them).
@st.cache_resource(show_spinner=False, max_entries=32)
def map_figure(key: str, n: int, method: str, show_overlays: bool, _coords: np.ndarray, _labels: np.ndarray,
               _class_names: list[str], _overlays: dict) -> go.Figure:
    coords, labels, class_names, overlays = _coords, _labels, _class_names, _overlays
    fig = go.Figure()
    idx = np.arange(len(coords))
    for c, name in enumerate(class_names):
        m = labels == c
        fig.add_trace(go.Scattergl(
            x=coords[m, 0], y=coords[m, 1], mode="markers", name=name, customdata=idx[m],
            marker={"size": 5, "color": CLASS_COLORS[c % len(CLASS_COLORS)], "opacity": 0.75},
            hovertemplate=f"class {name}<br>test image #%{{customdata}}<extra></extra>"))
        if m.any():  # the class's name at its median position, readable from the back of a room
            mx, my = np.median(coords[m], 0)
            fig.add_annotation(x=mx, y=my, text=f"<b>{name}</b>", showarrow=False,
                               font={"size": 22, "color": CLASS_COLORS[c % len(CLASS_COLORS)], "shadow": HALO})
    if show_overlays:
        for i, (name, pts) in enumerate(overlays.items()):
            sym = OVERLAY_SYMBOLS[i % len(OVERLAY_SYMBOLS)]
            fig.add_trace(go.Scattergl(
                x=pts[:, 0], y=pts[:, 1], mode="markers", name=name, hovertemplate=f"{name}<extra></extra>",
                marker={"size": 6 if i == 0 else 11, "symbol": sym, "color": "#111827",
                        "opacity": 0.4 if i == 0 else 0.9,
                        "line": {"width": 1 if i == 0 else 1.5, "color": "#111827" if i == 0 else "#FFFFFF"}}))
    axis = "PC" if method == "PCA" else "UMAP "
    fig.update_layout(height=620, font_size=14, margin={"l": 10, "r": 10, "t": 10, "b": 10}, dragmode="lasso",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.01, "x": 0, "itemsizing": "constant",
                              "font": {"size": 15}, "title": {"text": "class "}, "entrywidth": 44},
                      xaxis_title=f"{axis}1", yaxis_title=f"{axis}2", plot_bgcolor="#FAFAFC", uirevision=method)
    fig.update_xaxes(showticklabels=method == "PCA", zeroline=False)
    fig.update_yaxes(showticklabels=method == "PCA", zeroline=False)
    if method == "PCA":  # a linear map: keep one unit the same length on both axes
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


@st.cache_resource(show_spinner=False, max_entries=64)
def allocation_figure(key: str, n: int, k: int, data_label: str, class_names: tuple[str, ...], _prior: np.ndarray,
                      _data: np.ndarray) -> go.Figure:
    """Per class: its share of the prior mass next to its share of the data, with the 1/K line."""
    prior, data = _prior, _data
    K, x, names = len(class_names), list(range(len(class_names))), list(class_names)

    def bars(y: np.ndarray, name: str, color: str, what: str) -> go.Bar:
        return go.Bar(x=x, y=100 * y, name=name, marker_color=color, customdata=names,
                      hovertemplate=f"class %{{customdata}}: %{{y:.1f}}% of {what}<extra></extra>")

    fig = go.Figure([bars(prior, "share of the prior mass nearest to the class", PRIOR_COLOR, "the prior"),
                     bars(data, f"share of {data_label}", DATA_COLOR, "the data"),
                     go.Scatter(x=[-0.5, K - 0.5], y=[100 / K] * 2, mode="lines", hoverinfo="skip",
                                name=f"1/K = {100 / K:.0f}% (equal shares)",
                                line={"dash": "dash", "color": "#1F2937", "width": 1.5})])
    fig.update_layout(barmode="group", height=440, font_size=14, bargap=0.25, bargroupgap=0.05,
                      margin={"l": 10, "r": 10, "t": 10, "b": 10}, yaxis_title="share (%)", plot_bgcolor="#FAFAFC",
                      legend={"orientation": "h", "yanchor": "top", "y": -0.16, "x": 0, "font": {"size": 13}})
    fig.update_xaxes(title_text="class", tickmode="array", tickvals=x, ticktext=names, range=[-0.5, K - 0.5])
    return fig


def allocation_summary(prior: np.ndarray, data: np.ndarray, class_names: list[str]) -> str:
    """One line naming the classes with the smallest and largest prior share per unit of data share."""
    ratio = prior / np.maximum(data, 1e-12)
    lo, hi = int(np.argmin(ratio)), int(np.argmax(ratio))
    return (f"Least prior per image: class **{class_names[lo]}** ({100 * prior[lo]:.1f}% of the prior, "
            f"{100 * data[lo]:.1f}% of the data). Most: class **{class_names[hi]}** ({100 * prior[hi]:.1f}% vs "
            f"{100 * data[hi]:.1f}%).")


def selected_indices(event, labels: np.ndarray, K: int) -> list[int]:
    """Test-image indices of the points selected on the map. Trace c < K holds the images of class c in test-set
    order (map_figure), so a point's (curve_number, point_index) names its image; overlay traces are skipped."""
    points = event.get("selection", {}).get("points", []) if event else []
    members = {}
    out = set()
    for p in points:
        c, i = p.get("curve_number"), p.get("point_index", p.get("point_number"))
        if c is None or i is None or not 0 <= c < K:
            continue
        if c not in members:
            members[c] = np.flatnonzero(labels == c)
        if 0 <= i < len(members[c]):
            out.add(int(members[c][i]))
    return sorted(out)
