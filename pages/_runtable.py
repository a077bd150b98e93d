"""The Home page's run tables: one row of test metrics per run and a fixed-seed sample grid per run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
import torch

from cvae_core.errors import LabError
from cvae_core.eval.attributes import example_conditions
from cvae_core.runs.catalog import RunEntry
from cvae_core.runs.folder import read_run_info
from pages._images import image_grid
from pages._runs import get_run


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


def run_rows(runs: list[RunEntry]) -> tuple[pd.DataFrame, list[str]]:
    """One row per run, plus one-line problems for run folders that could no longer be read."""
    rows, problems = [], []
    for r in runs:
        try:
            info = read_run_info(r.path)
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
        rows.append({"run": r.name, "model": info["model"], "data set": data, "beta": info["config"].get("beta"),
                     "steps": steps, "neg_elbo_fair": fair, "rate": m.get("rate"), "distortion": m.get("distortion"),
                     "mse": m.get("mse"), "au": m.get("au"), "classes": coverage,
                     "attributes": m.get("attr_accuracy"), "classifier_fid": m.get("classifier_fid")})
    return pd.DataFrame(rows), problems


RUN_COLUMNS = {
    "run": st.column_config.TextColumn("run", width=190, pinned=True),
    "model": st.column_config.TextColumn("model", width=85),
    "data set": st.column_config.TextColumn("data set", width=115),
    "beta": st.column_config.NumberColumn("β", format="%g", width=40),
    "steps": st.column_config.NumberColumn("steps", format="%d", width=60),
    "neg_elbo_fair": st.column_config.NumberColumn(
        "−ELBO", format="%.1f", width=75,
        help="−ELBO = D + R in nats per test image (lower is better), with the decoder σ frozen at its training-set "
             "value (neg_elbo_train_sigma): models that fit σ to the very images being scored (sigma_vae, bs_vae, "
             "sigma_cvae) would otherwise look better than they are. Pixels are continuous, so this is a density: "
             "about +730 at σ = 1, negative for a sharp decoder (σ ≈ 0.08). Empty for the Student-t family, whose "
             "gamma-power loss is not an ELBO."),
    "rate": st.column_config.NumberColumn("rate R", format="%.2f", width=65,
                                          help="KL(q(z|x) || p(z)) per image, nats; for the Student-t family "
                                               "(t3vae, ct3vae) its gamma-power regulariser R/2, not a KL"),
    "distortion": st.column_config.NumberColumn(
        "distortion D", format="%.1f", width=85,
        help="−log p(x|z) per image, nats, at the σ the model itself uses: fixed (vae, cvae: σ = 1), fitted to "
             "each test batch (sigma_vae, sigma_cvae) or to each image (bs_vae); Bernoulli on mnist-binary"),
    "mse": st.column_config.NumberColumn("MSE / pixel", format="%.4f", width=75),
    "au": st.column_config.NumberColumn("AU", format="%d", width=45,
                                        help="active units: latent dims with Var_x E[z_j|x] > 0.01"),
    "classes": st.column_config.ProgressColumn(
        "class coverage", format="%.2f", min_value=0.0, max_value=1.0, width=110,
        help="How well the samples cover the 10 digits, judged by the in-project classifier. Conditional models: "
             "mode coverage, the share of classes whose asked-for samples are recognised at least half the time. "
             "Unconditional models: 1 − total variation between the samples' class frequencies and uniform. "
             "Empty where the digit classifier does not apply (morpho-mnist: colour images)."),
    "attributes": st.column_config.ProgressColumn(
        "attributes", format="%.2f", min_value=0.0, max_value=1.0, width=110,
        help="Attribute-conditional runs (morpho-mnist): the share of attributes (stroke, slant, colour, size) that "
             "come out as asked, measured in the pixels of 16 samples of each of the 160 (digit, combination) cells. "
             "The Rare combinations page splits it into common, rare and held-out combinations."),
    "classifier_fid": st.column_config.NumberColumn(
        "classifier FID", format="%.1f", width=100,
        help="Fréchet distance between the in-project classifier's features of samples and of test images (lower "
             "is better). Not comparable with the usual Inception FID."),
}
# two tables of the same runs, so that each fits a 1280-pixel window: how well a model explains the test images, and
# what its samples look like to the classifier and the pixel measurements
TABLES = {"Likelihood and code": ("run", "model", "data set", "beta", "neg_elbo_fair", "rate", "distortion", "mse",
                                  "au"),
          "Samples": ("run", "model", "data set", "beta", "steps", "classes", "attributes", "classifier_fid")}
TABLE_NOTE = ("Per test image, in nats. −ELBO = D + R and D are densities of continuous pixels, so their sign "
              "means nothing: decoders with σ = 1 (vae, cvae) sit near +730 on MNIST (+2,170 on colour "
              "morpho-mnist), decoders that learn σ ≈ 0.05–0.08 (sigma_vae, bs_vae, sigma_cvae, flow_cvae) go "
              "negative; mnist-binary runs use a Bernoulli decoder. Lower is better within one data set. None: the "
              "number does not apply (hover a column title for why).")


def coverage_notes(runs: list[RunEntry]) -> list[str]:
    """One line for each conditional run whose class coverage is below 1/2: the number is a measurement, not a
    missing value. Asked for each digit in turn, its samples show that digit too rarely: the decoder ignores the
    class (z carries the digit), which is what sigma_cvae's sharp decoder learns."""
    notes = []
    for r in runs:
        try:
            m = read_run_info(r.path).get("metrics") or {}
        except LabError:
            continue
        recall, cover = m.get("per_class_recall"), m.get("mode_coverage")
        if cover is None or cover >= 0.5 or not recall:
            continue
        rate = f" (rate R = {m['rate']:.0f} nats)" if isinstance(m.get("rate"), (int, float)) else ""
        notes.append(f"**{r.name}**: class coverage {cover:.2f} is measured, not missing. Asked for each digit in "
                     f"turn, its samples show the digit asked for only {min(recall):.0%}–{max(recall):.0%} of the "
                     f"time (a class counts as covered from 50%). Its decoder ignores the class and the code z "
                     f"carries the digit instead{rate}, so the columns of its sample grid are not 0 to 9.")
    return notes


def runs_section(runs: list[RunEntry], per_row: int = 6) -> None:
    """Table of runs and a small sample grid per run."""
    df, problems = run_rows(runs)
    for msg in problems:
        st.warning(msg)
    if df.empty:
        return
    height = 38 + 35 * len(df)  # every run in view, no inner scroll bar
    for tab, columns in zip(st.tabs(list(TABLES)), TABLES.values(), strict=True):
        with tab:
            st.dataframe(df, hide_index=True, column_config=RUN_COLUMNS, column_order=columns, width="stretch",
                         height=height)
    st.caption(TABLE_NOTE)
    for note in coverage_notes(runs):
        st.caption(note)
    good = [r for r in runs if r.name in set(df["run"])]
    # a class-conditional run's grid is a column per class (a morpho-mnist one a column per digit): give it two
    # slots, so its digits are not tiny
    wide = {r.path: 2 if r.condition in ("class", "attributes") else 1 for r in good}
    rows, row = [], []
    for r in good:
        if sum(wide[q.path] for q in row) + wide[r.path] > per_row:
            rows.append(row)
            row = []
        row.append(r)
    rows.append(row)
    for row in rows:
        widths = [wide[r.path] for r in row]
        cols = st.columns(widths + ([per_row - sum(widths)] if sum(widths) < per_row else []))
        for col, r in zip(cols, row, strict=False):
            with col:
                try:
                    grid = run_sample_grid(str(r.path), r.key)
                except LabError as e:
                    st.warning(str(e))
                    continue
                st.image(grid, caption=f"{r.name}: samples", width="stretch")
