"""Train page: set up a data set and a model, train it live, watch loss terms, samples and reconstructions."""

import streamlit as st

from cvae_core.errors import LabError
from pages import _charts, _images, _jobs, _training, _ui, _url

_ui.leave_legacy_pages_mode()
st.title("Train a VAE live")
st.caption("Pick a data set and a model, press **Start**, and watch the model learn: the curves, the samples "
           "and the reconstructions update about once a second.")
_url.start("train", _training.URL_KEYS, _training.option_prefixes())  # the setup lives in the URL: a link reproduces it
setup_col, live_col = st.columns([1.15, 3], gap="large")

with setup_col, st.container(border=True):
    st.subheader("Setup")
    setup = _training.setup_widgets()
    options = _training.option_widgets(setup["model"])
    if st.button("Start", key="start", type="primary", icon=":material/play_arrow:", width="stretch",
                 help="Start training from scratch (stops a run that is still going)."):
        try:
            _jobs.start_training(setup, options)
        except LabError as e:
            st.error(str(e))

with setup_col:
    _training.lost_runs_panel()  # checkpoints of runs no job holds: resume or discard
job = st.session_state.get("job")
with setup_col, st.container(border=True):
    _training.save_form(job, setup)

ticking = bool(job and job.alive and not job.snapshot()["paused"])
st.session_state["ticking"] = ticking


@st.fragment(run_every=1.0 if ticking else None)
def live_view() -> None:
    job = st.session_state.get("job")
    snap = job.snapshot() if job else None
    alive, paused = bool(job and job.alive), bool(snap and snap["paused"])
    b1, b2, b3, _ = st.columns([1, 1, 1, 1.2])
    icon = ":material/play_arrow:" if paused else ":material/pause:"
    if b1.button("Resume" if paused else "Pause", key="pause", icon=icon, disabled=not alive, width="stretch"):
        if paused:
            job.resume()
        else:
            job.pause()
        st.rerun()
    if b2.button("Step", key="step", icon=":material/skip_next:", disabled=not paused, width="stretch",
                 help="While paused: run one optimiser step and show it."):
        _jobs.step_and_wait(job)
        snap = job.snapshot()
    if b3.button("Stop", key="stop", icon=":material/stop:", disabled=not alive, width="stretch"):
        _jobs.stop_job(job)
        st.rerun()
    if job is None:
        st.info("Press **Start** to train. With the default setup the first curves appear within a few seconds.")
        return
    _jobs.touch(job)
    if st.session_state.get("ticking") and not (job.alive and not snap["paused"]):
        st.rerun()  # the run ended or paused: redraw the page once so the 1 s refresh switches off
    recs = snap["records"]
    last = recs[-1] if recs else {}
    status = snap["status"] + (" (paused)" if paused else "")
    done = snap["step"] / max(snap["total_steps"], 1)
    st.progress(min(done, 1.0), text=f"step {snap['step']:,} of {snap['total_steps']:,} · {status} · "
                f"epoch {last.get('epoch', 0):.2f} · {last.get('time', 0):.0f} s on {snap['device']}")
    if snap["status"] in ("diverged", "failed"):
        st.error(snap["message"])
    elif snap["status"] in ("finished", "stopped"):
        st.success(snap["message"])
    elif snap["status"] == "queued":  # the server trains a few runs at once (CVAE_MAX_JOBS); this one waits
        st.info(f"{snap['text'].capitalize()} ({_jobs.load_line()}). It starts by itself; **Stop** cancels it.",
                icon=":material/hourglass_top:")
        return
    if not recs:
        st.info("Training has started; the first curves appear at the first log tick.")
        return
    model = job.model
    cols = st.columns(5)
    shown = {"loss (nats)": last["loss"], "rate R (nats)": last[model.rate_key],
             "distortion D (nats)": last[model.distortion_key],
             "active units": f"{last['au']:.0f} / {model.config.latent_dim}", "MSE / pixel": last["mse"]}
    for col, (label, v) in zip(cols, shown.items(), strict=True):
        col.metric(label, v if isinstance(v, str) else f"{v:.4g}")
    cfg = model.config
    sigma = getattr(cfg, "sigma", None) if getattr(cfg, "likelihood", "gaussian") == "gaussian" else None
    st.plotly_chart(_charts.curves_figure(recs, cfg.latent_dim, sigma, rate_key=model.rate_key,
                                          distortion_key=model.distortion_key, objective_label=model.objective_label),
                    key="curves")
    st.caption("Rate R = KL(q(z|x) ‖ p(z)): how much the code says about each image. Distortion D = −log p(x|z): "
               "how badly the decoder explains the image. Pixels are continuous, so D is a density and turns "
               "negative once the decoder is sharp. Values are training-batch averages at each log tick.")
    live = _jobs.live_certificate(job)
    if live is not None:
        st.markdown("**Collapse certificate** (live)")
        if "GT" in last:
            st.plotly_chart(_charts.certificate_figure(recs), key="certificate")
            st.caption(f"GT = {last['GT']:.3f} nats. Above zero, the encoder mean provably depends on the input "
                       "(a constant mean can never beat the teacher's average Tbar). Below zero proves nothing: "
                       "models trained without the witness loss (all but rst_vae) usually stay there even with an "
                       "informative code. Computed each tick from the encoder means of 500 test images against a "
                       "fixed PCA-GMM teacher; more on the **Collapse certificate** page.")
        else:
            st.caption(f"Certificate: {live.status}.")
    p = snap["previews"]
    per_class = p.get("sample_classes") is not None  # conditional: a row per class, the same noise in every row
    if per_class:
        K = cfg.num_classes
        keep = st.pills("Classes to show", list(range(K)), selection_mode="multi", default=list(range(K)),
                        key="preview_classes", help="Each row of samples is one class asked of the decoder, from "
                        "the same noise z, so rows differ only by the class.") or list(range(K))
    left, right = st.columns(2, gap="large")
    with left:
        if per_class:
            _images.show_grid(_images.class_rows(p["samples"], p["sample_classes"], keep), "Samples per class",
                          "one row per class shown, in class order; the same noise in every row and at every tick. "
                          "Rows that look alike mean z carries the class and the decoder ignores it (sigma_cvae "
                          "does: its sharp decoder makes a 55-nat code worth it).",
                          nrow=job.preview_columns)
        elif job.model.conditional:  # attributes: the first test images' conditions
            _images.show_grid(p.get("samples"), "Samples from the prior",
                          "decoded from the same noise z at every tick, each at the digit and attributes of one of "
                          "the first test images, in test-set order (the first 16 are those of the originals on the "
                          "right)")
        else:
            _images.show_grid(p.get("samples"), "Samples from the prior",
                          "decoded from the same noise z at every tick, so you see these digits take shape")
    with right:
        _images.show_grid(p.get("original"), "Test images")
        _images.show_grid(p.get("recon"), "Their reconstructions")


with live_col:
    live_view()
