"""The Compare page's parts: the runs it can compare (every image run, shipped, saved, and the shipped beta sweeps),
the runs named in its URL (``runs=a,b,c``), and the rate-distortion figure of the beta sweeps."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from cvae_core.eval.rd import curve
from cvae_core.reproduce import beta_sigma
from cvae_core.runs import catalog
from cvae_core.runs.catalog import RunEntry, SweepPoint
from pages import _runs, _url

MIN_RUNS, MAX_RUNS = 2, 4
DEFAULT_RUNS = ("bs_beta1", "sse_beta1")  # the paper's question at beta = 1, when the sweeps are shipped
RATE_FLOOR = 0.03  # collapsed runs (R ~ 1e-5 nats) are drawn here, so the log axis shows the rates that matter
FAMILY_STYLE = {"bs": ("#4F46E5", "circle"), "sse": ("#F97316", "square"), "sigma1": ("#64748B", "diamond")}


FAMILIES = {tag: what for tag, (_, _, what) in catalog.BETA_FAMILIES.items()}


@st.cache_data(show_spinner=False)
def sweeps(sig: str) -> dict[str, list[SweepPoint]]:
    """``catalog.beta_sweeps()``, read again when a sweep run changes (`sig`)."""
    return catalog.beta_sweeps()


def sweep_signature() -> str:
    return _runs.digest(catalog.signature([catalog.sweep_root()]))


def options() -> dict[str, RunEntry]:
    """URL id -> run: every listed image run, then the sweep runs."""
    listed, _ = _runs.runs()
    points = sweeps(sweep_signature())
    out = {r.id: r for r in listed}
    for family in points.values():
        for p in family:
            out.setdefault(p.entry.id, p.entry)
    return out


def chosen_from_url(opts: dict[str, RunEntry]) -> list[str]:
    """The runs the URL names (``runs=a,b`` or repeated ``runs=``), checked: unknown or path-like names and more than
    MAX_RUNS are one warning each; too few is filled up from the defaults."""
    raw = st.query_params.get_all("runs")
    values = [v.strip() for r in raw for v in r.split(",") if v.strip()]
    defaults = [d for d in DEFAULT_RUNS if d in opts] or list(opts)[:MIN_RUNS]
    picked = _url.check("runs", values, "run", defaults, choices={k: k for k in opts}, many=True)
    chosen, note = list(picked.value), picked.message
    if note:
        st.warning(note, icon=":material/link_off:")
    if len(chosen) > MAX_RUNS:
        st.warning(f"URL parameter runs: {len(chosen)} runs named; the page compares at most {MAX_RUNS}, using the "
                   f"first {MAX_RUNS}.", icon=":material/link_off:")
        chosen = chosen[:MAX_RUNS]
    return chosen


@st.cache_data(show_spinner=False)
def seed_means(sig: str) -> dict[str, list[dict]]:
    """The committed ``reproduce beta-sigma`` grid's means over seeds (``beta_sigma.seed_means``); `sig` is the
    trials file's size and time, so a new trial shows."""
    return beta_sigma.seed_means()


def seed_means_signature() -> str:
    path = beta_sigma.RESULTS
    return f"{path.stat().st_size}:{path.stat().st_mtime_ns}" if path.exists() else "none"


def rd_figure(points: dict[str, list[SweepPoint]], families: dict[str, str], marked: list[RunEntry],
              spread: dict[str, list[dict]] | None = None) -> go.Figure:
    """Rate against distortion for each sweep family: -log p(x|z) at the training-set sigma, and MSE per pixel. The
    runs in `marked` are circled where they are sweep members, and drawn as stars otherwise (if they have the
    numbers). `spread` (``seed_means``) adds each family's mean over seeds of the longer grid, with ± one standard
    deviation in both directions."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("distortion −log p(x|z) at the training-set σ (nats)", "MSE per pixel"))
    for col, key in ((1, "distortion_train_sigma"), (2, "mse")):
        for fam, pts in points.items():
            color, symbol = FAMILY_STYLE.get(fam, ("#0F172A", "circle"))
            have = [p for p in pts if key in p.metrics and "rate" in p.metrics]
            c = curve((p.metrics["rate"], p.metrics[key]) for p in have)
            betas = {(round(p.metrics["rate"], 9)): p.beta for p in have}
            fig.add_trace(go.Scatter(
                x=[max(r, RATE_FLOOR) for r, _ in c], y=[d for _, d in c], mode="lines+markers",
                name=families.get(fam, fam), legendgroup=fam, showlegend=col == 1,
                marker={"color": color, "symbol": symbol, "size": 8}, line={"color": color, "width": 2},
                text=[f"β = {betas.get(round(r, 9), '?'):g}, R = {r:.3g} nats" for r, _ in c],
                hovertemplate="%{text}<br>%{y:.4g}<extra>" + fam + "</extra>"), row=1, col=col)
    for fam, rows in (spread or {}).items():
        color, symbol = FAMILY_STYLE.get(fam, ("#0F172A", "circle"))
        rows = [r for r in rows if r["rate"] == r["rate"]]
        short = families.get(fam, fam).split(" (")[0]  # "vae, σ² = 1/2 (sum of squared errors)" -> "vae, σ² = 1/2"
        for col, key in ((1, "distortion_train_sigma"), (2, "mse")):
            fig.add_trace(go.Scatter(
                x=[max(r["rate"], RATE_FLOOR) for r in rows], y=[r[key] for r in rows], mode="lines+markers",
                name=f"{short}: mean of {max((r['n'] for r in rows), default=0)} seeds, {rows[0]['epochs']} epochs"
                if rows else short, legendgroup=f"{fam}-seeds", showlegend=col == 1, opacity=0.55,
                error_x={"type": "data", "array": [r["rate_sd"] for r in rows], "thickness": 1},
                error_y={"type": "data", "array": [r[f"{key}_sd"] for r in rows], "thickness": 1},
                marker={"color": color, "symbol": f"{symbol}-open", "size": 7},
                line={"color": color, "width": 1, "dash": "dot"},
                text=[f"β = {r['beta']:g}, R = {r['rate']:.3g} ± {r['rate_sd']:.2g} nats, {r['n']} seeds"
                      for r in rows],
                hovertemplate="%{text}<br>%{y:.4g}<extra>" + fam + " (seeds)</extra>"), row=1, col=col)
    for e in marked:
        m = _runs.run_metrics(str(e.path), e.key)
        key_pts = [(k, m.get(k)) for k in ("distortion_train_sigma", "mse")]
        for col, (_key, v) in enumerate(key_pts, start=1):
            if v is None or m.get("rate") is None:
                continue
            fig.add_trace(go.Scatter(x=[max(m["rate"], RATE_FLOOR)], y=[v], mode="markers+text", text=[e.name],
                                     textposition="top center", showlegend=False, hoverinfo="text",
                                     marker={"size": 16, "color": "rgba(0,0,0,0)", "line": {"width": 2.5,
                                                                                           "color": "#16A34A"}}),
                          row=1, col=col)
    fig.update_xaxes(title_text=f"rate R = KL (nats / image; below {RATE_FLOOR:g}, drawn at {RATE_FLOOR:g})",
                     type="log")
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_layout(height=430, font_size=13, margin={"l": 10, "r": 10, "t": 50, "b": 10},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.1, "x": 0})
    return fig
