"""Streamlit helpers shared by the pages: paths, cached loaders, image grids, plotly charts and the training-job
plumbing (the config widgets are in ``_widgets``). No maths here: models, metrics and training all live in
``cvae_core``.

The leading underscore keeps this module out of any page list.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots
from torchvision.utils import make_grid

from cvae_core.data import Dataset, load_dataset
from cvae_core.errors import LabError
from cvae_core.eval.attributes import example_conditions
from cvae_core.eval.certificate import LiveCertificate
from cvae_core.jobs import TrainingJob
from cvae_core.runs import catalog
from cvae_core.runs.folder import load_run, read_run_info
from cvae_core.runs.setup import TICK_IMAGES, build_run
from cvae_core.train import TrainConfig
from cvae_core.witness import config_of

REPO = Path(__file__).resolve().parents[1]
BETAS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
LRS = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1]
BATCH_SIZES = [16, 32, 64, 128, 256, 512]
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
COLORS = {"loss": "#4F46E5", "neg_elbo": "#94A3B8", "rate": "#0EA5E9", "dist": "#F97316", "sigma": "#14B8A6",
          "au": "#A855F7", "mse": "#64748B", "GT": "#16A34A", "LTS": "#DC2626", "IT": "#0F172A"}


# ------------------------------------------------------------------ paths and device
def runs_root() -> Path:
    """Where the app saves runs: ``$CVAE_RUNS_DIR`` or ``<repo>/runs``."""
    return Path(os.environ.get("CVAE_RUNS_DIR") or REPO / "runs")


def checkpoints_root() -> Path:
    """Shipped pretrained runs: ``$CVAE_CHECKPOINTS_DIR`` or ``<repo>/checkpoints``."""
    return Path(os.environ.get("CVAE_CHECKPOINTS_DIR") or REPO / "checkpoints")


def url_value(key: str, parse, default):
    """The URL's value for `key`, parsed; `default` when absent or unreadable."""
    try:
        return parse(st.query_params[key]) if key in st.query_params else default
    except (TypeError, ValueError):
        return default


def device_label() -> str:
    if torch.cuda.is_available():
        return f"CUDA: {torch.cuda.get_device_name(0)}"
    return f"CPU ({torch.get_num_threads()} threads)"


def leave_legacy_pages_mode() -> None:
    """Call first on every page. Streamlit treats a folder named ``pages/`` as a legacy multipage app until app.py
    has called ``st.navigation`` once in the server process; if the first visitor of a fresh server opens a page
    URL directly (a shared ``/train?...`` link), the page would run without app.py (no sidebar, a wrong menu).
    Switch that mode off, as ``st.navigation`` itself does, and rerun through app.py."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a future streamlit without the legacy mode
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


# ------------------------------------------------------------------ cached loaders
@st.cache_resource(show_spinner="Loading the data set ...")
def get_dataset(name: str, rho: float = 10.0, seed: int = 0) -> Dataset:
    return load_dataset(name, rho=rho, seed=seed)


@st.cache_resource(show_spinner=False, max_entries=32)
def get_run(path: str, key: str):
    """(model, info) of a run folder; `key` (``catalog.run_key``) keys the cache so a re-saved run is reloaded."""
    return load_run(path)


@st.cache_data(show_spinner=False, max_entries=64)
def run_sample_grid(path: str, key: str, n: int = 16, seed: int = 0) -> np.ndarray:
    """A fixed-seed grid of samples from a saved run, as an (H, W, 3) uint8 image. A class-conditional model gives
    a column per class instead (0 .. K-1 left to right, about n samples in all, at least 3 rows)."""
    model, info = get_run(path, key)
    nrow = int(np.ceil(np.sqrt(n)))
    y = None
    if model.conditional and not model.class_conditional:  # attributes: the digits in turn, random combinations
        nrow = 10 if (info.get("dataset") or {}).get("name") == "morpho-mnist" else nrow
        n = nrow * int(np.ceil(n / nrow))
        y = example_conditions(info.get("dataset") or {}, n, seed)
    elif model.class_conditional:
        nrow = K = model.config.num_classes
        n = K * max(3, round(n / K))
        y = torch.arange(n) % K  # row after row of 0 .. K-1
    # a private generator: the global RNG belongs to any run training in the background
    eps = model.prior_noise(n, generator=torch.Generator().manual_seed(seed))
    return image_grid(model.sample(n, y, eps=eps), nrow=nrow)


# ------------------------------------------------------------------ images
def image_grid(x: torch.Tensor, nrow: int = 8, scale: int = 3) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> (H', W', 3) uint8 grid, upscaled by `scale` without blurring."""
    g = make_grid(x.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=0.35)  # (3, H', W')
    img = (g.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return img.repeat(scale, axis=0).repeat(scale, axis=1)


def show_grid(x: torch.Tensor | None, title: str, caption: str | None = None, nrow: int = 8) -> None:
    st.markdown(f"**{title}**")
    if x is None:
        st.caption("appears after the first log tick")
        return
    st.image(image_grid(x, nrow), width="stretch")
    if caption:
        st.caption(caption)


def class_rows(samples: torch.Tensor, classes: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """The preview rows (one per class, in class order) of the classes in `keep`."""
    mask = torch.isin(classes, torch.as_tensor(keep, dtype=classes.dtype))
    return samples[mask]


# ------------------------------------------------------------------ run tables (Home page)
def run_rows(paths: list[Path]) -> tuple[pd.DataFrame, list[str]]:
    """One row per readable run folder, plus one-line problems for folders that could not be read."""
    rows, problems = [], []
    for p in paths:
        try:
            info = read_run_info(p)
        except LabError as e:
            problems.append(str(e))
            continue
        m, ds, hist = info.get("metrics", {}), info.get("dataset", {}), info.get("history", {})
        data = ds.get("name", "?") + (f" (rho {ds['rho']:g})" if str(ds.get("name")).endswith("-lt") else "")
        steps = hist.get("step") or (info.get("train") or {}).get("steps")
        fair = m.get("neg_elbo_train_sigma", m.get("neg_elbo"))
        coverage = m.get("mode_coverage")
        if coverage is None and m.get("class_freq_tv") is not None:
            coverage = 1.0 - m["class_freq_tv"]
        rows.append({"run": p.name, "model": info["model"], "data set": data, "beta": info["config"].get("beta"),
                     "steps": steps, "neg_elbo_fair": fair, "rate": m.get("rate"), "distortion": m.get("distortion"),
                     "mse": m.get("mse"), "au": m.get("au"), "classes": coverage,
                     "attributes": m.get("attr_accuracy"), "classifier_fid": m.get("classifier_fid")})
    return pd.DataFrame(rows), problems


RUN_COLUMNS = {
    "run": st.column_config.TextColumn("run"),
    "model": st.column_config.TextColumn("model", width="small"),
    "data set": st.column_config.TextColumn("data set", width="small"),
    "beta": st.column_config.NumberColumn("β", format="%g", width="small"),
    "steps": st.column_config.NumberColumn("steps", format="%d", width="small"),
    "neg_elbo_fair": st.column_config.NumberColumn(
        "−ELBO (nats)", format="%.1f", width="small",
        help="D + R on the test set, per image, with the decoder variance frozen at its training-set value "
             "(neg_elbo_train_sigma; empty for the Student-t family, whose gamma-power loss is not an ELBO). "
             "Models that fit σ to the very images being scored (sigma_vae, bs_vae, "
             "sigma_cvae) would otherwise look better than they are; this column compares all models fairly."),
    "rate": st.column_config.NumberColumn("rate R", format="%.2f", width="small",
                                          help="KL(q(z|x) || p(z)) per image, nats; for the Student-t family "
                                               "(t3vae, ct3vae) its gamma-power regulariser R/2, not a KL"),
    "distortion": st.column_config.NumberColumn("distortion D", format="%.1f", width="small",
                                                help="−log p(x|z) per image, nats"),
    "mse": st.column_config.NumberColumn("MSE / pixel", format="%.4f", width="small"),
    "au": st.column_config.NumberColumn("AU", format="%d", width="small",
                                        help="active units: latent dims with Var_x E[z_j|x] > 0.01"),
    "classes": st.column_config.ProgressColumn(
        "class coverage", format="%.2f", min_value=0.0, max_value=1.0, width="small",
        help="How well the samples cover the 10 digits, judged by the in-project classifier. Conditional models: "
             "mode coverage, the share of classes whose asked-for samples are recognised at least half the time. "
             "Unconditional models: 1 − total variation between the samples' class frequencies and uniform."),
    "attributes": st.column_config.ProgressColumn(
        "attributes", format="%.2f", min_value=0.0, max_value=1.0, width="small",
        help="Attribute-conditional runs (morpho-mnist): the share of attributes (stroke, slant, colour, size) that "
             "come out as asked, measured in the pixels of 16 samples of each of the 160 (digit, combination) cells. "
             "The Rare combinations page splits it into common, rare and held-out combinations."),
    "classifier_fid": st.column_config.NumberColumn(
        "classifier FID", format="%.1f", width="small",
        help="Fréchet distance between the in-project classifier's features of samples and of test images (lower "
             "is better). Not comparable with the usual Inception FID."),
}


def runs_section(paths: list[Path], per_row: int = 6) -> None:
    """Table of runs and a small sample grid per run."""
    df, problems = run_rows(paths)
    for msg in problems:
        st.warning(msg)
    if df.empty:
        return
    st.dataframe(df, hide_index=True, column_config=RUN_COLUMNS, width="stretch")
    good = [p for p in paths if p.name in set(df["run"])]
    # a class-conditional run's grid is a column per class: give it two slots, so its digits are not tiny
    wide = {p: 2 if read_run_info(p)["config"].get("condition") == "class" else 1 for p in good}
    rows, row = [], []
    for p in good:
        if sum(wide[q] for q in row) + wide[p] > per_row:
            rows.append(row)
            row = []
        row.append(p)
    rows.append(row)
    for row in rows:
        widths = [wide[p] for p in row]
        cols = st.columns(widths + ([per_row - sum(widths)] if sum(widths) < per_row else []))
        for col, p in zip(cols, row, strict=False):
            with col:
                try:
                    grid = run_sample_grid(str(p), catalog.run_key(p))
                except LabError as e:
                    st.warning(str(e))
                    continue
                st.image(grid, caption=f"{p.name}: samples", width="stretch")


# ------------------------------------------------------------------ training jobs
# A job whose browser tab is gone (closed, reloaded) would otherwise train on until its step count is used up.
# Every page view marks its session's job as seen (app.py calls mark_session_job_seen; the Train page's live view
# also touches it at each tick), and a Start anywhere stops jobs that no page has shown for ORPHAN_AGE seconds.
# The age is long on purpose: a teacher may sit on the Home page, or a background tab may be throttled and not
# refresh, for minutes while a student presses Start; stopping their run then would be worse than letting an
# abandoned one finish its bounded number of steps. Paused jobs are never stopped (someone is looking at them).
ORPHAN_AGE = 600.0  # seconds (10 minutes)


@st.cache_resource
def _job_board() -> dict[int, list]:
    """Every job this server started: id -> [job, last time a page showed it]. Shared by all sessions."""
    return {}


_board_lock = threading.Lock()


def touch(job: TrainingJob | None) -> None:
    """Mark `job` as just seen by a page (no-op for None or a job this server did not start)."""
    if job is None:
        return
    with _board_lock:
        if id(job) in _job_board():
            _job_board()[id(job)][1] = time.monotonic()


def mark_session_job_seen() -> None:
    """Call on every page view: this session's job, if any, is still wanted (see ORPHAN_AGE)."""
    touch(st.session_state.get("job"))


def stop_job(job: TrainingJob | None, timeout: float = 10.0) -> None:
    if job is not None and job.alive:
        job.stop()
        job.join(timeout)


def _stop_orphans(max_age: float = ORPHAN_AGE, now: float | None = None) -> None:
    """Forget finished jobs; stop running, unpaused jobs that no page has shown for `max_age` s."""
    now = time.monotonic() if now is None else now
    with _board_lock:
        board = _job_board()
        for k, (job, seen) in list(board.items()):
            if not job.alive:
                del board[k]
            elif now - seen > max_age and not job.snapshot()["paused"]:
                job.stop()


AU_IMAGES = TICK_IMAGES  # test images whose encoder means each tick reads (one number for CLI, pages and jobs)


def live_certificate(job: TrainingJob | None) -> LiveCertificate | None:
    return next((c for c in job.callbacks if isinstance(c, LiveCertificate)), None) if job else None


def start_training(setup: dict, options: dict) -> TrainingJob:
    """Stop this session's old job, build the model and data set from the setup, start a new job.
    Raises LabError (ConfigError / DataError) with a one-line message on bad values."""
    rho = setup["rho"] if setup["dataset"].endswith("-lt") else 10.0
    data = get_dataset(setup["dataset"], rho=rho)
    train = TrainConfig(steps=setup["steps"], batch_size=setup["batch_size"], lr=setup["lr"], seed=setup["seed"],
                        log_every=max(1, min(25, setup["steps"] // 8), setup["steps"] // 200))  # <= ~200 ticks
    # the one set-up pipeline (cvae_core.runs.setup): options, data-fixed fields, seeded build, model/data check
    run = build_run(setup["model"], data, dict(options, latent_dim=setup["latent_dim"], beta=setup["beta"]), train)
    model = run.model
    stop_job(st.session_state.get("job"))  # only once the new setup is known to be valid
    _stop_orphans()
    # GT each tick, the teacher read or fitted in the background (nothing for a latent too small for the witness)
    live = LiveCertificate(data, data.x_test[:AU_IMAGES], config_of(model), latent_dim=model.config.latent_dim)
    job = TrainingJob(model, data, train, au_images=AU_IMAGES, callbacks=[live]).start()
    with _board_lock:
        _job_board()[id(job)] = [job, time.monotonic()]
    st.session_state["job"], st.session_state["job_setup"] = job, dict(setup, **options)
    return job


def step_and_wait(job: TrainingJob, timeout: float = 5.0) -> None:
    """While paused: run one optimiser step and wait (bounded) until its log record is complete."""
    n_before = len(job.snapshot()["records"])
    job.step(1)
    t0 = time.monotonic()
    while job.alive and len(job.snapshot()["records"]) == n_before and time.monotonic() - t0 < timeout:
        time.sleep(0.05)


def suggested_run_name(setup: dict) -> str:
    """A run name from the setup, e.g. ``bs_vae-mnist-beta1-m16-400steps-lr0.001-seed0``, so that runs with a
    different model, data set, beta, latent size, length, learning rate or seed get different names. Falls back to
    shorter labels in the rare case the full name would not fit RUN_NAME (64 characters)."""
    data = setup["dataset"] + (f"-rho{setup['rho']:g}" if setup.get("rho") is not None else "")
    for labels in (("beta", "m", "steps", "lr", "seed"), ("b", "m", "st", "lr", "s")):
        b, m, st_, lr, sd = labels
        name = (f"{setup['model']}-{data}-{b}{setup['beta']:g}-{m}{setup['latent_dim']}-{setup['steps']}{st_}"
                f"-{lr}{setup['lr']:g}-{sd}{setup['seed']}")
        if RUN_NAME.fullmatch(name):
            return name
    return name[:64].rstrip("-._")


_saving: set[Path] = set()  # run folders being written right now, by any session
_saving_lock = threading.Lock()


def save_job(job: TrainingJob, name: str, overwrite: bool = False, **save_kw) -> Path:
    """Save the job as runs_root()/name. Refuses (LabError) a name that is already taken unless `overwrite`, and a
    name that another session is saving at this moment (evaluating the test set takes a few seconds)."""
    if not RUN_NAME.fullmatch(name):
        raise LabError(f"run name {name!r} may only use letters, digits, '.', '_' and '-' (up to 64 characters)")
    path = runs_root() / name
    with _saving_lock:
        if path in _saving:
            raise LabError(f"a run named {name!r} is being saved right now (from another tab); choose another name")
        if not overwrite and (path.exists() or path.is_symlink()):
            raise LabError(f"a run named {name!r} is already saved; choose another name or tick "
                           f"\"Overwrite an existing run of this name\"")
        _saving.add(path)
    try:
        return job.save(path, **save_kw)
    finally:
        with _saving_lock:
            _saving.discard(path)


# ------------------------------------------------------------------ charts
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
        for key, name, kw in (("GT", "GT = IT − LTS (margin)", {"width": 3}),
                              ("LTS", "LTS (witness loss)", {"width": 1.5}),
                              ("IT", "IT (teacher information)", {"width": 1.5, "dash": "dash"})):
            fig.add_trace(go.Scatter(x=df["step"], y=df[key], name=name, mode="lines",
                                     line={"color": COLORS[key], **kw}))
    fig.add_hline(y=0, line={"color": "#64748B", "width": 1}, annotation_text="GT > 0: certified",
                  annotation_position="top left", annotation_font_size=12)
    fig.update_layout(height=height, font_size=13, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis_title="optimiser step", yaxis_title="nats", uirevision="keep",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0})
    return fig
