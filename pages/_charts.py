"""Plotly figures of a training run shared by pages: the live curves of the Train page and the collapse certificate
over training (Train and Collapse certificate pages)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

COLORS = {"loss": "#4F46E5", "neg_elbo": "#94A3B8", "rate": "#0EA5E9", "dist": "#F97316", "sigma": "#14B8A6",
          "au": "#A855F7", "mse": "#64748B", "GT": "#16A34A", "LTS": "#DC2626", "IT": "#0F172A"}


def curves_figure(records: list[dict], latent_dim: int, fixed_sigma: float | None = None, *, rate_key: str = "kl",
                  distortion_key: str = "rec", objective_label: str = "D + β·R") -> go.Figure:
    """Live training curves in one figure: objective, rate, distortion, decoder sigma, active units, MSE. The rate
    and distortion are the family's own named terms (`rate_key`, `distortion_key`); its objective is `loss`."""
    df = pd.DataFrame(records)
    titles = ("objective (nats / image)", "rate R (nats / image)", "distortion D (nats / image)",
              "decoder σ (pixel scale 0–1)", f"active units (of m = {latent_dim})", "reconstruction MSE (per pixel)")
    fig = make_subplots(rows=2, cols=3, subplot_titles=titles, horizontal_spacing=0.08, vertical_spacing=0.2)
    x = df["step"] if len(df) else []

    def line(col: str, row: int, c: int, name: str, color: str, values=None, **kw) -> None:
        if values is None and col not in df:
            return
        y = df[col] if values is None else values
        fig.add_trace(go.Scatter(x=x, y=y, name=name, mode="lines+markers", marker={"size": 4},
                                 line={"color": color, "width": 2, **kw.pop("line", {})}, **kw), row=row, col=c)

    line("loss", 1, 1, f"loss = {objective_label}", COLORS["loss"])
    line("neg_elbo", 1, 1, "−ELBO = D + R", COLORS["neg_elbo"], line={"dash": "dash"})
    line(rate_key, 1, 2, "rate R", COLORS["rate"], showlegend=False)
    line(distortion_key, 1, 3, "distortion D", COLORS["dist"], showlegend=False)
    if "log_sigma" in df:
        line("log_sigma", 2, 1, "σ (optimal)", COLORS["sigma"], values=np.exp(df["log_sigma"]), showlegend=False)
    else:
        note = f"fixed σ = {fixed_sigma:g}" if fixed_sigma else "no σ (Bernoulli decoder)"
        if fixed_sigma and len(df):
            line("step", 2, 1, "σ (fixed)", COLORS["sigma"], values=[fixed_sigma] * len(df), showlegend=False)
        xd, yd = fig.layout.xaxis4.domain, fig.layout.yaxis4.domain  # paper coordinates: the panel may be empty
        fig.add_annotation(text=note, showarrow=False, xref="paper", yref="paper", x=sum(xd) / 2,
                           y=yd[0] + (0.92 if fixed_sigma else 0.5) * (yd[1] - yd[0]))
    line("au", 2, 2, "active units", COLORS["au"], showlegend=False, line={"shape": "hv"})
    line("mse", 2, 3, "MSE", COLORS["mse"], showlegend=False)
    fig.update_yaxes(range=[0, latent_dim + 0.5], row=2, col=2)
    fig.update_xaxes(title_text="optimiser step", title_standoff=4, row=2)
    fig.update_annotations(font_size=14)
    fig.update_layout(height=560, font_size=13, margin={"l": 10, "r": 10, "t": 60, "b": 10},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.08, "x": 0}, uirevision="keep")
    return fig


def certificate_figure(records: list[dict], height: int = 300) -> go.Figure:
    """The collapse certificate over training: the margin GT = IT − LTS against the zero line, the witness loss LTS
    and the teacher information IT (a level: the teacher is fixed). Ticks without the numbers are left out."""
    df = pd.DataFrame([r for r in records if "GT" in r])
    fig = go.Figure()
    if len(df):
        # short names: the legend stays on one or two rows in a half-width column (Collapse certificate page)
        for key, name, kw in (("GT", "GT = IT − LTS", {"width": 3}),
                              ("LTS", "LTS (witness)", {"width": 1.5}),
                              ("IT", "IT (teacher)", {"width": 1.5, "dash": "dash"})):
            fig.add_trace(go.Scatter(x=df["step"], y=df[key], name=name, mode="lines",
                                     line={"color": COLORS[key], **kw}))
    # GT > 0 is a band and a legend entry, not a label on the zero line, where the curves run
    top = max(float(df[["GT", "LTS", "IT"]].max().max()), 0.0) if len(df) else 1.0
    fig.add_hrect(y0=0, y1=top, fillcolor=COLORS["GT"], opacity=0.08, line_width=0, layer="below")
    fig.add_hline(y=0, line={"color": "#64748B", "width": 1})
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="GT > 0: certified",
                             marker={"symbol": "square", "size": 12, "color": "rgba(22, 163, 74, 0.25)"}))
    fig.update_layout(height=height, font_size=13, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis_title="optimiser step", yaxis_title="nats", uirevision="keep",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0})
    return fig
