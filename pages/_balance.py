"""Streamlit helpers for the Class balance page: the run a link picks, cached samples and counts per (run, tau,
weighting, seed), the sample grid, the shares chart, the run line and the background nu training panel. The maths
lives in ``cvae_core.eval.balance``.
"""

from __future__ import annotations

import io

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

from cvae_core import jobs
from cvae_core.errors import LabError
from cvae_core.eval import balance
from cvae_core.eval.classifier import load_classifier
from cvae_core.runs import catalog
from cvae_core.runs.catalog import RunEntry as RunRef
from pages import _jobs, _maps, _runs, _url

N_SAMPLES = 1000  # samples per run behind the bars (one class share's standard error is about 1 point)
PER_ROW = 12  # samples shown per class row
TAU_STEPS = 20  # slider positions per theoretical tau; the slider spans 0 .. 3x theory
WEIGHTINGS = {"equal": "equal weights (1/K)", "frequency": "training frequencies"}
TRAIN_COLOR, MAIN_COLOR, OTHER_COLOR = "#94A3B8", "#4F46E5", "#F97316"
# the runs' heading swatches in markdown colours, no HTML: .streamlit/config.toml sets theme.primaryColor to MAIN_COLOR
# and theme.orangeTextColor to OTHER_COLOR (tests/app/test_exposure.py checks both)
SWATCHES = (":primary[■]", ":orange[■]")


URL_KEYS = ("rho", "run", "cmp", "tau", "weighting", "seed", "nu")


# ------------------------------------------------------------------ runs and page state
def load(ref: RunRef):
    """(model, info, data) of a run, cached; raises LabError with one line."""
    return _runs.load_source(ref.path)


def restore_run(refs: dict[str, RunRef], sweep: dict[float, RunRef], default: RunRef) -> None:
    """Give the Run box its value before it is drawn: a ν run just trained here; else, on the first run of a page
    view (or after ρ changed), the link's run= (a run that is not here is an error line) or, when the link names no
    run or a run of the sweep, the sweep's run at its nu= (a hand-edited nu= wins over the run it came with)."""
    if st.session_state.get("pending_run") in refs:  # a nu run just trained and saved: select it
        st.session_state["run"] = st.session_state.pop("pending_run")
        return
    if not _url.fresh() and st.session_state.get("run") in refs:
        return
    want = _url.param("run", "run", default.label, choices=_runs.url_choices(refs), level="error")
    nu = _url.param("nu", "float", refs[want].nu if refs[want].nu in sweep else None, choices=list(sweep))
    if nu in sweep and (refs[want].nu in sweep or "run" not in _url.given()):
        want = sweep[nu].label
    st.session_state["run"] = want


def tau_options(theory: float) -> list[float]:
    return [round(theory * k / TAU_STEPS, 5) for k in range(3 * TAU_STEPS + 1)]


def snap(value: float, options: list[float]) -> float:
    return min(options, key=lambda o: abs(o - value))


# ------------------------------------------------------------------ samples, counts, grid
PREFETCH_STEPS = 3 * TAU_STEPS  # tau notches on each side drawn ahead of time, nearest first: the whole slider


def _view(key: str, tau: float, weighting: str, seed: int, n: int, names: tuple[str, ...], model) -> dict:
    d = balance.draw(model, load_classifier(), n, tau, weighting, seed)
    rows = d.asked if d.asked is not None else d.predicted
    order = balance.grid_order(rows, len(names), PER_ROW)
    return {"counts": d.counts, "asked": None if d.asked is None else balance.class_counts(d.asked, len(names)),
            "png": grid_png(d.images, order, names), "row_counts": [len(o) for o in order]}


@st.cache_resource(show_spinner=False)
def prefetcher() -> jobs.Prefetcher:
    """One per server: draws the views a slider move is likely to ask for next."""
    return jobs.Prefetcher(keep=4 * (3 * TAU_STEPS + 1))  # two runs' slider rows, twice; a view is ~40 kB


@st.cache_data(show_spinner=False, max_entries=512)
def sample_view(key: str, tau: float, weighting: str, seed: int, n: int, names: tuple[str, ...], _model) -> dict:
    """Counts of the classes the classifier finds in n samples (and of the classes asked for), and the PNG of a
    grid with a row per class filled from the same samples. Cached per (run, tau, weighting, seed, n); taken from
    the prefetcher when it drew this one ahead of time."""
    args = (key, tau, weighting, seed, n, names)
    done = prefetcher().take(args)
    return done if done is not None else _view(*args, _model)


def view_weighting(model, weighting: str) -> str:
    """The weighting that keys a run's samples: an unconditional run draws no class, so both weightings give it
    the same samples (one cache entry, not two)."""
    return weighting if model.class_conditional else "equal"


def scaled_tau(tau: float, theory: float, model) -> float:
    """The compare run's tau: the same multiple of its own theoretical tau as the main run's."""
    return round(tau * theory_tau(model) / theory, 5)


def prefetch(shown: list[tuple[RunRef, object]], tau: float, taus: list[float], theory: float, weighting: str,
             seed: int, names: tuple[str, ...]) -> None:
    """Queue, for the runs on show, the other weighting at this tau, then every tau notch of the slider, nearest
    first, so that after a pause (about 0.3 s of one core per run and notch: ~40 s for two runs) any tau move finds
    its samples drawn."""
    i = taus.index(tau)
    wanted = [(taus[i + d], weighting) for k in range(1, PREFETCH_STEPS + 1) for d in (k, -k)
              if 0 <= i + d < len(taus)]
    wanted.insert(2, (tau, next(w for w in WEIGHTINGS if w != weighting)))
    jobs = []
    for t, w in wanted:
        for ref, model in shown:
            args = (ref.key, scaled_tau(t, theory, model), view_weighting(model, w), seed, N_SAMPLES, names)
            jobs.append((args, lambda args=args, model=model: _view(*args, model)))
    prefetcher().want(jobs)


def grid_png(images: torch.Tensor, order: list[list[int]], names: tuple[str, ...], scale: int = 2) -> bytes:
    """K rows of up to PER_ROW images (uint8, (N, 1, H, W)), empty cells light grey, the class name at the left."""
    _, c, h, w = images.shape
    blank = torch.full((c, h, w), 0.93)
    cells = [images[i].float() / 255 if j < len(row) else blank for row in order
             for j, i in enumerate(row + [0] * (PER_ROW - len(row)))]
    g = make_grid(torch.stack(cells), nrow=PER_ROW, padding=2, pad_value=1.0)  # (3, H', W')
    img = Image.fromarray((g.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    out = Image.new("RGB", (img.width + 34, img.height), "white")
    out.paste(img, (34, 0))
    draw, font = ImageDraw.Draw(out), ImageFont.load_default(size=26)
    for k, name in enumerate(names):
        draw.text((17, (2 + k * (h + 2) + h / 2) * scale), name, fill="#374151", font=font, anchor="mm")
    buf = io.BytesIO()
    out.save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


# ------------------------------------------------------------------ figures and text
@st.cache_resource(show_spinner=False, max_entries=128)
def shares_figure(names: tuple[str, ...], train: tuple[float, ...], series: tuple[tuple[str, tuple, tuple], ...],
                  n: int) -> go.Figure:
    """Grouped bars per class: the training set's share, then each run's share of its n samples as the classifier
    reads them. `series`: (label, counts per class, counts asked per class or () for unconditional runs)."""
    K, x = len(names), list(range(len(names)))
    bars = [go.Bar(x=x, y=[100 * v for v in train], name="training set (MNIST-LT)", marker_color=TRAIN_COLOR,
                   customdata=list(names), hovertemplate="class %{customdata}: %{y:.1f}% of the training set"
                                                         "<extra></extra>")]
    for (label, counts, asked), color in zip(series, (MAIN_COLOR, OTHER_COLOR), strict=False):
        s = balance.shares(counts)
        extra = "; %{customdata[2]} were drawn for class %{customdata[0]}" if asked else ""
        bars.append(go.Bar(x=x, y=100 * s, name=label, marker_color=color,
                           customdata=np.c_[list(names), counts, asked or counts],
                           hovertemplate=f"class %{{customdata[0]}}: %{{customdata[1]}} of {n:,} samples "
                                         f"(%{{y:.1f}}%){extra}<extra></extra>"))
    bars.append(go.Scatter(x=[-0.5, K - 0.5], y=[100 / K] * 2, mode="lines", hoverinfo="skip",
                           name=f"1/K = {100 / K:.0f}% (every digit equally often)",
                           line={"dash": "dash", "color": "#1F2937", "width": 1.5}))
    fig = go.Figure(bars)
    fig.update_layout(barmode="group", height=400, font_size=14, bargap=0.22, bargroupgap=0.04,
                      margin={"l": 10, "r": 10, "t": 10, "b": 10}, yaxis_title="share (%)", plot_bgcolor="#FAFAFC",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0, "font": {"size": 14}})
    fig.update_xaxes(title_text="digit (as the classifier reads it)", tickmode="array", tickvals=x,
                     ticktext=list(names), range=[-0.5, K - 0.5])
    return fig


def summary(series: list[tuple[str, tuple, tuple]], train: np.ndarray, names: tuple[str, ...]) -> str:
    """One sentence: which digits each run's samples almost never show, against the training set. (Not the tail
    classes' summed share: blurry samples that the classifier reads as 8 would count for the tail.)"""
    K = len(names)

    def which(s) -> str:
        return ", ".join(names[k] for k in balance.scarce(s)) or "none"

    parts = [f"**{label}**: {which(balance.shares(c))}" for label, c, _ in series]
    return (f"Digits in fewer than {100 * balance.SCARCE / K:g}% of the samples (a fifth of an equal share): "
            + " · ".join(parts) + f" (in the training set: {which(train)}).")


def theory_tau(model) -> float:
    """The family's theoretical sampling scale (SPEC section 3); 1 for a standard-normal prior."""
    t3 = getattr(model, "t3", None)
    return float(t3.tau) if t3 is not None else float(model.default_tau)


def run_line(ref: RunRef, model, info: dict) -> str:
    """Markdown: model, nu, theoretical tau, centre separation (family_numbers) and training length."""
    nums = model.family_numbers()
    parts = [f"**{ref.model}**"]
    if "nu" in nums:
        parts.append(f"ν = {nums['nu']:g}")
    tau = theory_tau(model)
    parts.append(f"τ theory = {tau:.3f}" if hasattr(model, "t3") else "τ = 1 is the prior's own scale")
    if "centre_min_distance" in nums:
        d = nums["centre_min_distance"]
        parts.append(f"closest class centres {d:.2f} apart" + (f" ({d / tau:.1f} τ)" if hasattr(model, "t3") else ""))
    steps = (info.get("history") or {}).get("step") or (info.get("metrics") or {}).get("steps")
    if steps:
        parts.append(f"{steps:,} steps")
    return " · ".join(parts)


# ------------------------------------------------------------------ train another nu in the background
def nu_training_form(sweep: dict[float, RunRef], ref: RunRef | None) -> None:
    """Inside the "Train another ν" popover: the exact ν, the steps (default: the sweep run's own) and Start.
    The new run copies the settings of `ref` (the sweep run on show) or of the sweep's first run. With no ct3vae run
    at this ρ there is nothing to copy (the popover is disabled, but Streamlit still runs its body)."""
    base = ref or next(iter(sweep.values()), None)
    if base is None:
        st.caption("No ct3vae run at this ρ: a new ν copies the settings of one.")
        return
    try:
        _, info, data = load(base)
    except LabError as e:
        st.error(str(e))
        return
    nu = st.number_input("ν to train", 2.05, 1000.0, 7.5, step=0.5, format="%g", key="nu_new",
                         help="any value > 2, not only the sweep's")
    steps = st.number_input("Steps", 1, 100_000, int((info.get("history") or {}).get("step") or 2000), step=100,
                            key="nu_steps", help=f"{base.label} was trained for this many steps")
    st.caption(f"Trains a ct3vae with the settings of {base.label} but this ν, in the background, and saves it to "
               "the runs folder; it then joins the ν slider.")
    if st.button(f"Train ν = {nu:g}", key="nu_train", type="primary", icon=":material/play_arrow:"):
        name = catalog.nu_run_name(base.rho, float(nu), int(steps), catalog.taken_names())
        try:  # the board stops this session's previous nu job and starts this one
            _jobs.submit("nu", jobs.nu_training(info, float(nu), int(steps), data, catalog.saved_root() / name))
        except LabError as e:
            st.error(str(e))
        st.session_state.pop("nu_message", None)


def nu_job_ended(job, snap: dict) -> None:
    """When the nu job ends (``_jobs.job_progress``): select the saved run, or say why it failed."""
    if snap["status"] == "saved":
        st.session_state["pending_run"] = f"saved: {snap['saved'].name}"
        st.session_state["nu_message"] = ("success", f"Trained and saved ν = {catalog.nu_label(job.nu)} as "
                                          f"**{snap['saved'].name}**: it is selected, and on the ν slider.")
    else:
        st.session_state["nu_message"] = ("error", f"Training ν = {catalog.nu_label(job.nu)} failed: {snap['text']}")


@st.cache_resource(show_spinner=False, max_entries=32)
def half_width_map(key: str, n: int, _coords, _labels, names: tuple[str, ...], _overlays) -> go.Figure:
    """The Latent map page's PCA figure, with a legend whose entries size to their names (half a page is too
    narrow for its fixed-width entries)."""
    fig = go.Figure(_maps.map_figure(key, n, "PCA", True, _coords, _labels, list(names), _overlays))
    fig.update_layout(height=560, legend={"entrywidth": 0, "font": {"size": 14}})
    return fig


def map_column(ref: RunRef, model, data, train: np.ndarray, side: int, n: int = 2000) -> None:
    """PCA of the encoder means of n test images coloured by class, the model's overlays (prior samples, class
    centres) on top, and the share of the prior mass nearest to the head and the tail classes."""
    key = ref.key
    n = min(n, len(data.x_test))
    lat = _maps.latents(key, n, model, data)
    coords, over2d = _maps.project(key, n, "PCA", lat)
    fig = half_width_map(key, n, coords, lat["labels"], tuple(data.class_names), over2d)
    st.plotly_chart(fig, key=f"map-{side}-{key}", on_select="ignore")
    prior = _maps.allocation(key, n, 15, len(train), lat)
    if prior is None:
        return
    h, t = balance.HEAD, balance.TAIL
    share = balance.group_share
    st.markdown(f"Prior mass nearest to the head digits {h[0]}–{h[-1]}: **{100 * share(prior, h):.0f}%**, to the "
                f"tail digits {t[0]}–{t[-1]}: **{100 * share(prior, t):.0f}%** (training set: "
                f"{100 * share(train, h):.0f}% and {100 * share(train, t):.1f}%).")
