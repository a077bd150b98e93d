"""Streamlit helpers for the Collapse certificate page: loading a picked run, cached certificate pictures, figures."""

from __future__ import annotations

import contextlib

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from cvae_core.errors import LabError
from cvae_core.eval.certificate import inspect
from cvae_core.witness import config_of, teacher_source
from pages import _maps

# the shipped pair the page opens on: a plain VAE pushed into collapse by alpha_KL = 8, and RST-VAE at the same setting
DEFAULTS = ("mnistbin_vae_beta8", "mnistbin_rst_vae_beta8")
N_IMAGES = 1000  # test images behind the numbers and the plane
PALETTE = ("#4F46E5", "#F97316", "#16A34A", "#DC2626", "#A855F7", "#0EA5E9", "#CA8A04", "#DB2777", "#64748B",
           "#14B8A6", "#7C2D12", "#1E3A8A")


def load(choice: str, options: dict, job, refresh: bool) -> tuple:
    """(model, data, key, history records, label, recorded teacher identity) of a picked run; the live run is pinned
    until Refresh."""
    if choice == _maps.LIVE:
        model, step = _maps.live_model(job, refresh)
        return (model, job.data, f"live-{_maps.job_token(job)}@{step}", job.snapshot()["records"], f"step {step:,}",
                None)
    model, info, data, key = _maps.load_option(options[choice])
    return (model, data, key, (info.get("history") or {}).get("records", []), None,
            (info.get("metrics") or {}).get("teacher"))


def pictures(model, data, key: str, recorded: str | None = None) -> dict:
    """`inspect` of the model with its own teacher, the one its run recorded, or the data set's (shipped or cached),
    cached per run and weights; says so while a new data set's teacher is fitted first."""
    fits = not hasattr(model, "own_teacher") and teacher_source(data, config_of(model)) == "fit"
    waits = contextlib.nullcontext() if not fits else st.spinner(
        f"Fitting the certificate's teacher on {data.name} (PCA + a Gaussian mixture, once per data set, about 30 s "
        "for 60k images) ...")
    with waits:
        return _pictures(key, recorded, model, data)


@st.cache_data(show_spinner=False, max_entries=16)
def _pictures(key: str, recorded: str | None, _model, _data) -> dict:
    return inspect(_model, _data, min(N_IMAGES, len(_data.x_test)), recorded=recorded)


def plane_figure(p: dict) -> go.Figure:
    """Encoder means on the simplex plane, coloured by the teacher's most likely component, with the K witness
    directions as the vertices of a regular K-gon, and the best constant code (its witness is Tbar)."""
    K, xy = p["K"], p["plane"]
    radius = max(float(np.abs(xy).max()) * 1.1, 0.3)
    fig = go.Figure()
    for k in range(K):
        angle = 2 * np.pi * k / K
        vx, vy = radius * np.cos(angle), radius * np.sin(angle)
        fig.add_trace(go.Scatter(x=[0, vx], y=[0, vy], mode="lines", line={"color": PALETTE[k % 12], "width": 1},
                                 hoverinfo="skip", showlegend=False))
        fig.add_annotation(x=vx, y=vy, text=f"<b>{k}</b>", showarrow=False, font={"color": PALETTE[k % 12]},
                           xshift=10 * np.cos(angle), yshift=10 * np.sin(angle))
    for k in range(K):
        sel = p["component"] == k
        if sel.any():
            fig.add_trace(go.Scatter(x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=f"T's top component {k}",
                                     marker={"size": 4, "color": PALETTE[k % 12], "opacity": 0.6},
                                     customdata=np.flatnonzero(sel),
                                     hovertemplate="test image #%{customdata}<extra>component " + str(k) + "</extra>"))
    fig.add_trace(go.Scatter(x=[p["const"][0]], y=[p["const"][1]], mode="markers", name="best constant (S = Tbar)",
                             marker={"symbol": "x", "size": 13, "color": "black", "line": {"width": 2}}))
    fig.update_layout(height=380, showlegend=False, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x"}, font_size=13)
    return fig


def bars_figure(index: int, t: np.ndarray, sides: list[tuple[str, np.ndarray]]) -> go.Figure:
    """T(x) next to each run's S(x) for one test image, one group of bars per component."""
    K = len(t)
    fig = go.Figure(go.Bar(x=list(range(K)), y=t, name="teacher T(x)", marker_color="#0F172A"))
    for (name, s), color in zip(sides, ("#F97316", "#16A34A"), strict=False):
        fig.add_trace(go.Bar(x=list(range(K)), y=s, name=f"S(x): {name}", marker_color=color))
    fig.update_layout(height=270, barmode="group", margin={"l": 10, "r": 10, "t": 30, "b": 10}, font_size=12,
                      title=f"test image #{index}", xaxis={"title": "component k", "dtick": 1},
                      yaxis={"range": [0, 1]},  # the legend below the axis title, not on it
                      legend={"orientation": "h", "y": -0.5, "yanchor": "top", "x": 0})
    return fig


def parse_indices(text: str, n: int) -> list[int]:
    """Test image numbers from 'a, b, c' (0 <= i < n); raises LabError with one line."""
    out = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) >= n:
            raise LabError(f"test image numbers are whole numbers from 0 to {n - 1}, separated by commas "
                           f"(got {part!r})")
        out.append(int(part))
    return list(dict.fromkeys(out))[:8]
