"""Train page: set up a data set and a model, train it live, watch loss terms, samples and reconstructions."""

import streamlit as st

from cvae_core.errors import LabError
from pages import _charts, _images, _jobs, _training, _ui, _url

_ui.leave_legacy_pages_mode()
st.title("Train a VAE live")
st.caption("Pick a data set and a model, press **Start**, and watch the model learn: the curves, the samples "
           "and the reconstructions update about once a second.")
_url.start("train", _training.URL_KEYS, _training.option_prefixes())  # the setup lives in the URL: a link reproduces it
controls = st.container(horizontal=True, gap="small")  # Start, Pause, Step, Stop: one row above both columns
notice = st.container()  # a refused Start says why here, under the buttons
setup_col, live_col = st.columns([1.15, 3], gap="large")

with setup_col, st.container(border=True):
    st.subheader("Setup")
    setup = _training.setup_widgets()
    options = _training.option_widgets(setup["model"])
with controls:
    if st.button("Start", key="start", type="primary", icon=":material/play_arrow:",
                 help="Start training from scratch with the setup below (stops a run that is still going)."):
        try:
            _jobs.start_training(setup, options)
        except LabError as e:
            notice.error(str(e))

with setup_col:
    _training.lost_runs_panel()  # checkpoints of runs no job holds: resume or discard
job = st.session_state.get("job")
with setup_col, st.container(border=True):
    _training.save_form(job, setup)
with controls:
    _training.run_controls(job)

ticking = bool(job and job.alive and not job.snapshot()["paused"])
st.session_state["ticking"] = ticking


@st.fragment(run_every=1.0 if ticking else None)
def live_view() -> None:
    job = st.session_state.get("job")
    snap = job.snapshot() if job else None
    paused = bool(snap and snap["paused"])
    if job is None:
        st.info("Press **Start** to train. With the default setup the first curves appear within a few seconds.")
        return
    _jobs.touch(job)
    if st.session_state.get("ticking") and not (job.alive and not snap["paused"]):
        st.rerun()  # the run ended or paused: redraw the page once so the 1 s refresh switches off
    recs = snap["records"]
    last = recs[-1] if recs else {}
    status = snap["status"] + (" (paused)" if paused else "")
    done = snap["step"] / max(snap["total_steps"], 1)  # the true step count: it moves at every optimiser step
    st.progress(min(done, 1.0), text=f"step {snap['step']:,} of {snap['total_steps']:,} · {status} · "
                f"{last.get('time', 0):.0f} s on {snap['device']}")
    if recs:
        st.caption(_training.tick_line(last, snap["step"], getattr(job.config, "log_every", None)))
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
    shown = {"loss": last["loss"], "rate R": last[model.rate_key], "distortion D": last[model.distortion_key],
             "active units": f"{last['au']:.0f} / {model.config.latent_dim}", "MSE / pixel": last["mse"]}
    for col, (label, v) in zip(cols, shown.items(), strict=True):  # short labels: five fit in a row at 1280 px
        col.metric(label, v if isinstance(v, str) else f"{v:.4g}", help="nats per image" if
                   label in ("loss", "rate R", "distortion D") else None)
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

with st.expander("What am I looking at?", icon=":material/school:"):
    st.markdown(
        "- **The objective.** Each step lowers, averaged over a batch, "
        r"$\mathcal{L} = D + \beta R$ with distortion $D = -\mathbb{E}_{q(z|x)}[\log p(x|z)]$ and rate "
        r"$R = \mathrm{KL}(q(z|x)\,\|\,p(z))$. At β = 1 it is −ELBO, an upper bound on −log p(x) (the dashed "
        "line); β > 1 buys a simpler code with blurrier images, β < 1 the reverse.\n"
        "- **The decoder's σ.** A Gaussian decoder gives "
        r"$D = \frac{\lVert x - \hat x\rVert^2}{2\sigma^2} + n\log\sigma + \frac{n}{2}\log 2\pi$ (n pixels). "
        "vae keeps σ fixed (default 1); sigma_vae sets σ² to the batch's mean squared error, bs_vae to each image's, "
        "so D ≈ (n/2)(1 + log 2π·MSE): a sharp decoder makes D, and the loss, negative. "
        "Student-t models (t3vae, ct3vae) and rst_vae add or swap terms: the legend names the loss.\n"
        "- **Active units** count latent dimensions whose mean E[z_j|x] varies over images (variance > 0.01); the "
        "others have collapsed to the prior.")
