"""Latent map page: PCA or UMAP of the encoder means of test images, coloured by class, with the model's prior
samples on top, and the per-class allocation of the prior mass as a grouped bar chart."""

import time

import streamlit as st

from cvae_core.errors import LabError
from cvae_core.eval.projection import class_shares
from cvae_core.runs.folder import model_name_of
from pages import _images, _maps, _runs, _ui, _url

_ui.leave_legacy_pages_mode()
warm = _maps.umap_warmup()  # app.py started it at server start; called here too for a page run on its own

st.title("Latent map")
st.caption("Where does the encoder put each test image? Every dot is the mean of q(z|x) for one test image, "
           "projected to 2-D and coloured by its class. Click, or drag a lasso or box, to see the images.")
_url.start("latent_map", ("run", "method", "n"))  # run, map and image count live in the URL: a link reproduces it

job = st.session_state.get("job")
options = _maps.run_options(job)
if not options:
    st.info("No runs to map yet: no shipped runs in `checkpoints/` and nothing saved. Start a run on the **Train** "
            "page and come back: the run that is training appears here.")
    st.stop()

_url.restore("run", "run", next(iter(options)), choices=_runs.url_choices(options))
_url.restore("method", "choice", "PCA", choices=["PCA", "UMAP"])
_url.restore("n", "int", 5000, choices=_maps.N_IMAGES)
c1, c2, c3, c4 = st.columns([2, 1.1, 1.6, 1.3], vertical_alignment="bottom")
run = c1.selectbox("Run", list(options), key="run", help="shipped runs, your saved runs, or the run training now")
method = c2.segmented_control("Map", ["PCA", "UMAP"], key="method", required=True)
n = c3.select_slider("Test images", _maps.N_IMAGES, key="n")
show_overlays = c4.toggle("Prior samples", value=True, key="overlays",
                          help=f"{_maps.N_OVERLAY:,} draws from the model's prior (and any other points its family "
                               "adds, such as class centres), placed with the same projection")
_url.publish({"run": _runs.url_ids(options)[run], "method": method, "n": n})

shown = method
if not warm.ready.is_set():
    shown = "PCA"
    if method == "UMAP":
        st.info(f"UMAP is warming up (it compiles once per server, 10–40 s; "
                f"{time.monotonic() - warm.started:.0f} s so far). Showing PCA meanwhile; the map switches to UMAP "
                "by itself when it is ready.")

        @st.fragment(run_every=2.0)
        def wait_for_umap() -> None:
            if warm.ready.is_set():
                st.rerun()

        wait_for_umap()
    else:
        st.caption("UMAP is warming up in the background; it can be chosen in a few seconds.")
elif warm.error and method == "UMAP":
    shown = "PCA"
    st.warning(f"UMAP is unavailable ({warm.error}); showing PCA.")

try:
    if run == _maps.LIVE:
        b1, b2 = st.columns([1, 6], vertical_alignment="center")
        refresh = b1.button("Refresh", key="refresh", icon=":material/refresh:", type="primary",
                            help="Map the weights of the latest log tick.")
        model, step = _maps.live_model(job, refresh)
        snap = job.snapshot()
        b2.markdown(f"Showing the weights of **step {step:,}**. Training: step {snap['step']:,} of "
                    f"{snap['total_steps']:,} ({snap['status']}). **Refresh** maps the latest weights.")
        data, key = job.data, f"live-{_maps.job_token(job)}@{step}"
    else:
        model, info, data, key = _maps.load_option(options[run])
except LabError as e:
    st.error(str(e))
    st.stop()

n, names, K = min(n, len(data.x_test)), data.class_names, data.num_classes
with st.spinner(f"Encoding {n:,} test images ..."):
    lat = _maps.latents(key, n, model, data)
with st.spinner(f"Fitting {shown} to {n:,} latents ..."):
    coords, over2d = _maps.project(key, n, shown, lat)

left, right = st.columns([1.5, 1], gap="large")
with left:
    fig = _maps.map_figure(key, n, shown, show_overlays, coords, lat["labels"], names, over2d)
    event = st.plotly_chart(fig, key=f"map-{key}-{shown}-{n}", on_select="rerun",
                            selection_mode=("points", "box", "lasso"))
    st.caption(f"{shown} of {n:,} encoder means (m = {lat['means'].shape[1]}) of {model_name_of(model)} on "
               f"{data.name}; hover a dot for its class and test-image number.")
with right:
    st.subheader("Who gets the prior?")
    rho = float(data.info.get("rho", 1.0))  # > 1 for a long-tailed training set (mnist-lt)
    imbalanced = rho > 1
    train_label = f"the training set ({data.name}" + (f", ρ = {rho:g})" if imbalanced else ")")
    against = {"test": "the encoded test images", "train": train_label}
    a1, a2 = st.columns([1.7, 1], vertical_alignment="bottom")
    vs = a1.radio("Compare with", list(against), index=int(imbalanced), format_func=against.get, key="compare",
                  horizontal=True)
    k = a2.number_input("k neighbours", 1, 50, 15, key="k", help="each prior sample takes the majority class of "
                        "its k nearest encoder means (in latent space, not on the 2-D map)")
    shares = _maps.allocation(key, n, int(k), K, lat)
    if shares is None:
        st.info("This model's map overlays have no prior samples to allocate.")
    else:
        share_data = class_shares(lat["labels"] if vs == "test" else data.y_train, K)
        st.plotly_chart(_maps.allocation_figure(key, n, int(k), against[vs], tuple(names), shares,
                                                                share_data), key="allocation")
        st.markdown(_maps.allocation_summary(shares, share_data, names))

picked = _maps.selected_indices(event, lat["labels"], K)
if picked:
    shown_ = picked[:48]
    st.subheader(f"Selected test images ({len(picked):,}" + (", the first 48 shown)" if len(picked) > 48 else ")"))
    st.image([_images.image_grid(data.x_test[i : i + 1].float() / 255, nrow=1, scale=2) for i in shown_],
             caption=[f"#{i} · {names[int(data.y_test[i])]}" for i in shown_], width=60)
else:
    st.caption("Select points on the map (click, or drag a lasso or box) to see their test images here.")

with st.expander("What am I looking at?", icon=":material/school:"):
    st.markdown(
        "- **The map.** Each dot is the encoder mean $\\mu(x) = \\mathbb{E}_{q(z|x)}[z]$ of one test image, squeezed "
        "from m dimensions to 2. **PCA** keeps the two directions of largest variance of these means, "
        r"$(u_1^\top(\mu(x) - \bar\mu),\ u_2^\top(\mu(x) - \bar\mu))$: it is linear, but it **shows only those two "
        "directions**; the other m − 2 are dropped, so classes that overlap on the map may be apart in latent "
        "space. **UMAP** keeps who is next to whom, but it **distorts distances and cluster sizes**: a big, tight "
        "or far-away cluster on a UMAP map says little about the latent space. Read UMAP for neighbourhoods "
        "only.\n"
        "- **Prior samples** (black ×) are draws z ~ p(z) placed by **the same projection**, fitted to the "
        "encoder means: PCA keeps their spread along u₁, u₂ only, and UMAP puts each one next to its nearest "
        "encoder means, however far from them it lies. Where they fall but no data does, the decoder has to "
        "invent images.\n"
        "- **The bars.** Each prior sample z_s goes to the class most common among its k nearest encoder means, in "
        "the full m-dimensional space (not on the map); a class's share is the fraction of samples it gets. The "
        "blue bar is that share; the grey bar is the class's share of the data. Blue below grey means the class "
        "gets less room in the prior than its images would claim; with a long-tailed training set, head classes "
        "tend to crowd out the tail. The dashed line is 1/K.")
