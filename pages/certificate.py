"""Collapse certificate page: the simplex-witness margin GT = IT - LTS of two runs side by side (by default a VAE
pushed into collapse by a strong KL weight, and RST-VAE at the same weight), over training and on test images."""

from urllib.parse import urlencode

import streamlit as st

from cvae_core.errors import LabError
from cvae_core.runs.folder import model_name_of
from pages import _cert as C
from pages import _charts, _images, _maps, _runs, _ui, _url

_ui.leave_legacy_pages_mode()

st.title("Collapse certificate")
st.caption("Does the encoder mean μ(x) depend on the image at all? A fixed teacher sorts images into K = 10 soft "
           "groups T(x); a fixed witness reads K probabilities S(x) off the first K − 1 coordinates of μ(x). The "
           "margin **GT = IT − LTS** compares how well the witness matches the teacher (LTS) with the best any "
           "constant μ could do (IT). **GT > 0 proves μ(x) is not constant.**")
_url.start("certificate", ("run0", "run1", "images"))  # the two runs and the images: a link reproduces the view

common = {"dataset": "mnist-binary", "beta": "10", "latent_dim": "16", "steps": "1500"}  # the Train page's URL
rst = urlencode({**common, "model": "rst_vae", "rst_vae.arch": "mlp"})
vae = urlencode({**common, "model": "vae", "vae.arch": "mlp", "vae.likelihood": "bernoulli"})
st.markdown(f":material/model_training: Train your own and watch GT move: [RST-VAE at β = 10](train?{rst}) or "
            f"[the same VAE without the witness](train?{vae}) on the **Train** page; save the run and pick it here "
            "(or pick *live* while it trains).")

job = st.session_state.get("job")
options = _maps.run_options(job)
if not options:
    st.info("No runs yet: no shipped runs in `checkpoints/` and nothing saved. Train one on the **Train** page (the "
            "certificate curve shows there live) and come back.")
    st.stop()
names, ids = list(options), _runs.url_ids(options)
sides = []
columns = st.columns(2, gap="large")
for side, (col, default) in enumerate(zip(columns, C.DEFAULTS, strict=True)):
    with col:
        _url.restore(f"run{side}", "run", default if default in names else names[min(side, len(names) - 1)],
                     choices=_runs.url_choices(options))
        choice = st.selectbox("Left run" if side == 0 else "Right run", names, key=f"run{side}",
                              help="shipped runs, your saved runs, or the run training now on the Train page")
        _url.publish({f"run{side}": ids[choice]})
        refresh = False
        if choice == _maps.LIVE:
            refresh = st.button("Refresh", key=f"refresh{side}", icon=":material/refresh:",
                                help="Read the weights of the latest log tick.")
        try:
            model, data, key, records, live_label, recorded = C.load(choice, options, job, refresh)
            p = C.pictures(model, data, key, recorded)
        except LabError as e:
            st.error(str(e))
            continue
        cfg = model.config
        st.markdown(f"**{model_name_of(model)}** on {data.name} · β (α_KL) = {cfg.beta:g} · m = {cfg.latent_dim}"
                    + (f" · λ_TS = {cfg.lambda_ts:g}" if hasattr(cfg, "lambda_ts") else "")
                    + (f" · {live_label}" if live_label else ""))
        (m1, m2), (m3, m4) = st.columns(2), st.columns(2)  # two by two: four in a row cut the values at 1280 px
        m1.metric("GT (margin)", f"{p['GT']:+.3f}", help="IT − LTS in nats; above zero certifies that μ(x) "
                  "depends on x")
        m2.metric("IT", f"{p['IT']:.3f}", help="teacher information E KL(T(x) ‖ Tbar): the loss of the best "
                  "constant")
        m3.metric("LTS", f"{p['LTS']:.3f}", help="witness loss E KL(T(x) ‖ S(x))")
        m4.metric("active units", f"{p['au']} / {cfg.latent_dim}", help="latent coordinates whose mean varies "
                  "over images (variance > 0.01)")
        verdict = "certified: μ(x) depends on x" if p["GT"] > 0 else "not certified: no better than a constant"
        (st.success if p["GT"] > 0 else st.warning)(f"On {len(p['t']):,} test images: **{verdict}**.")
        if p["teacher_warning"]:
            st.warning(p["teacher_warning"])
        if any("GT" in r for r in records):
            st.markdown("**GT over training** (on the first test images, at each log tick)")
            st.plotly_chart(_charts.certificate_figure(records, height=300), key=f"curve{side}")
        else:
            st.caption("This run's history has no certificate curve (it was trained before the live certificate, "
                       "or with a latent smaller than K − 1).")
        st.markdown("**Encoder means on the simplex plane**")
        st.plotly_chart(C.plane_figure(p), key=f"plane{side}")
        st.caption(f"The witness's most likely component is the teacher's for **{p['agreement']:.0%}** of the images "
                   f"(a constant witness: at most the largest share of one component, {p['top_share']:.0%}). "
                   f"Teacher `{p['teacher']}`.")
        sides.append((choice, p, data))

if sides:
    st.caption("The plane: the first K − 1 latent coordinates of each μ(x), projected so that witness direction k "
               "points at vertex k; colour = the teacher's most likely component. A collapsed encoder puts every "
               "image near one point; the × marks the best constant code, whose witness gives exactly Tbar.")
    st.subheader("Teacher against witness, image by image")
    n_shown = min(len(p["t"]) for _, p, _ in sides)
    _url.restore("images", "text", "0, 1, 2, 3", max_chars=200)
    text = st.text_input("Test images (numbers, comma-separated)", key="images", max_chars=200,
                         help=f"up to 8 of the first {n_shown:,} test images")
    _url.publish({"images": text})
    try:
        picked = C.parse_indices(text, n_shown)
    except LabError as e:
        st.error(str(e))
        picked = []
    same_teacher = len({(d.name, p["K"]) for _, p, d in sides}) == 1
    for j, i in enumerate(picked):
        if j % 2 == 0:
            row = st.columns(2, gap="large")
        img_col, bar_col = row[j % 2].columns([1, 5], vertical_alignment="center")
        img_col.image(_images.image_grid(sides[0][2].x_test[i : i + 1].float() / 255, nrow=1, scale=3),
                      caption=f"#{i}", width=84)
        if same_teacher:
            fig = C.bars_figure(i, sides[0][1]["t"][i], [(name, p["s"][i]) for name, p, _ in sides])
        else:  # different data sets: each run against its own teacher
            fig = C.bars_figure(i, sides[0][1]["t"][i], [(sides[0][0], sides[0][1]["s"][i])])
        bar_col.plotly_chart(fig, key=f"bars{i}")
    if not same_teacher:
        st.caption("The two runs were trained on different data sets, so they have different teachers: the bars "
                   "show the left run only.")

with st.expander("What am I looking at?", icon=":material/school:"):
    st.markdown(
        "- **The numbers.** The teacher gives each image K = 10 soft group weights T(x); the witness reads "
        r"$S(x) = \mathrm{softmax}(\beta_w V^\top P\,\mu(x))$ off the first K − 1 coordinates of the encoder mean "
        "(V: the simplex directions, gain β_w = 5). Then "
        r"$\mathrm{LTS} = \mathbb{E}_x\,\mathrm{KL}(T(x)\,\|\,S(x))$, "
        r"$\mathrm{IT} = \mathbb{E}_x\,\mathrm{KL}(T(x)\,\|\,\bar T)$ with $\bar T = \mathbb{E}_x T(x)$, and the "
        r"margin $G_T = \mathrm{IT} - \mathrm{LTS}$." "\n"
        "- **What it proves.** Any constant encoder mean μ gives LTS ≥ IT: the best a constant witness can do "
        "against the teacher is the average Tbar, which costs exactly IT. So **GT = IT − LTS > 0** is a proof, "
        "from numbers you can check, that μ(x) changes with x: the encoder has not collapsed to a constant. The "
        "teacher (PCA + a 10-component Gaussian mixture of the training pixels, T smoothed by ε = 0.05) and the "
        "witness are fixed before training and never trained.\n"
        "- **What it does not prove.** Nothing about sample quality or reconstructions; nothing about the latent "
        "coordinates beyond the first K − 1 (other dimensions can still collapse to the prior: look at the active "
        "units); and GT ≤ 0 is not a proof of collapse: an encoder can carry information the witness does not read.\n"
        "- **RST-VAE** adds λ_TS · LTS to the VAE loss, which pays the encoder to keep the witness coordinates "
        "informative however strong the KL weight is. The energy this costs is bounded: the analytic code μ*(x) "
        "gives LTS = 0 at (1/2) E‖μ*‖² ≈ 0.45 nats on MNIST.\n"
        "- **Train your own**: on the **Train** page every model with m ≥ 9 shows GT live; pick `rst_vae` on "
        "`mnist-binary` and raise β to see the difference, then save and pick the run here (or pick *live*).")
