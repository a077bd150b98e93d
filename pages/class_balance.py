"""Class balance page: which digits do a model's samples show when it was trained on a long tail? N samples per run,
classified by the in-project classifier, against the training set's class shares; two runs side by side."""

import streamlit as st

from cvae_core.errors import LabError
from cvae_core.eval import balance
from cvae_core.runs import catalog
from pages import _balance as B
from pages import _jobs, _runs, _ui, _url

_ui.leave_legacy_pages_mode()
st.title("Class balance")
st.caption("Trained on MNIST-LT, where the digit 0 has up to ρ times the images of the digit 9, does a model still "
           "draw every digit? Each run draws 1,000 samples and the in-project classifier says which digit each is.")
_url.start("class_balance", B.URL_KEYS)  # the whole view lives in the URL: a link reproduces it

runs, problems = _runs.runs(dataset="mnist-lt")
for msg in problems:
    st.error(msg)
if not runs:
    st.error("No MNIST-LT runs found: no shipped `mnistlt*` runs in `checkpoints/` and none saved. Train one with "
             "`python -m cvae_core train --model ct3vae --dataset mnist-lt --rho 100 --out runs/mnistlt100_ct3vae`.")
    st.stop()

rhos = sorted({r.rho for r in runs})
_url.restore("rho", "float", B.snap(100.0, rhos), choices=rhos)
here = [r for r in runs if r.rho == st.session_state["rho"]]
refs, sweep = {r.label: r for r in here}, catalog.nu_sweep(here, st.session_state["rho"])
main0, other0 = catalog.default_pair(here)
B.restore_run(refs, sweep, main0)
_url.restore("cmp", "run", other0.label, choices=_runs.url_choices(refs))
_url.restore("weighting", "choice", "equal", choices=list(B.WEIGHTINGS))
_url.restore("seed", "int", 0, lo=0, hi=1_000_000)


def on_nu() -> None:
    st.session_state["run"] = sweep[st.session_state["nu"]].label
    _url.reset("tau")  # a new run starts at its own theoretical tau


c1, c2, c3, c4 = st.columns([0.85, 1.6, 1.6, 2.35], vertical_alignment="bottom")  # both sampling options fit
c1.selectbox("Imbalance ρ", rhos, key="rho", format_func="{:g}".format, on_change=_url.reset,
             args=("run", "cmp", "tau", "nu"),
             help="largest / smallest class of the MNIST-LT training set; runs trained at this ρ are listed")
run = c2.selectbox("Run", list(refs), key="run", on_change=_url.reset, args=("tau",))
other = c3.selectbox("Compare with", list(refs), key="cmp", help="shown side by side with the run")
weighting = c4.segmented_control("Class sampling", list(B.WEIGHTINGS), key="weighting", required=True,
                                 format_func=B.WEIGHTINGS.get, help="class-conditional runs draw the class first: "
                                 "with equal weights 1/K, or with the training frequencies")
ref = refs[run]
try:
    model, info, data = B.load(ref)
except LabError as e:
    st.error(str(e))
    st.stop()
theory, taus = B.theory_tau(model), B.tau_options(B.theory_tau(model))
_url.restore("tau", "float", model.default_tau, lo=0.0, hi=taus[-1])
st.session_state["tau"] = B.snap(st.session_state["tau"], taus)
in_sweep = sweep.get(ref.nu) is ref
if sweep:
    st.session_state["nu"] = ref.nu if in_sweep else B.snap(10.0, list(sweep))

d1, d2, d3, d4 = st.columns([2, 1.4, 2.6, 0.7], vertical_alignment="bottom")
if sweep:
    d1.select_slider("ν (tail weight of the ct3vae sweep)", list(sweep), key="nu", on_change=on_nu,
                     format_func=catalog.nu_label, disabled=not in_sweep,
                     help="small ν: heavy tails; ν → ∞: Gaussian. Snaps to the ct3vae runs trained at this ρ" +
                          ("" if in_sweep else " (pick a ct3vae run of the sweep to use it)"))
with d2.popover("Train another ν", icon=":material/model_training:", width="stretch", disabled=not sweep):
    B.nu_training_form(sweep, ref if in_sweep else None)
tau = d3.select_slider("τ (how far samples stray from their class centre)", taus, key="tau",
                       format_func=lambda t: f"{t:.3f}" + (" (theory)" if t == taus[B.TAU_STEPS] else ""),
                       help=f"sampling scale: 0 gives each class's mean image; theory τ = {theory:.3f}")
seed = d4.number_input("Seed", 0, 1_000_000, key="seed")
ids = _runs.url_ids(refs)
_url.publish({"rho": st.session_state["rho"], "run": ids[run], "cmp": ids[other], "tau": tau, "weighting": weighting,
              "seed": seed, "nu": ref.nu if in_sweep else None})
if "nu_message" in st.session_state:  # shown once, after the job ended
    kind, text = st.session_state.pop("nu_message")
    getattr(st, kind)(text)
if "nu_job" in st.session_state:
    _jobs.job_progress("nu_job", B.nu_job_ended)

names, train = tuple(data.class_names), balance.class_counts(data.y_train, data.num_classes)
chart, cols = st.container(), st.columns(2, gap="large")
loaded, series = [], []
for col, r, swatch in zip(cols, (ref, refs[other]), B.SWATCHES, strict=True):
    with col:
        try:
            m, i, d = (model, info, data) if r is ref else B.load(r)
            t = B.scaled_tau(tau, theory, m)
            view = B.sample_view(r.key, t, B.view_weighting(m, weighting), int(seed), B.N_SAMPLES, names, m)
        except LabError as e:
            st.error(str(e))
            continue
        st.markdown(f"### {swatch} {_url.plain(r.label)}")
        st.markdown(B.run_line(r, m, i))
        rows = "asked for" if view["asked"] is not None else "as the classifier reads it"
        st.image(view["png"], width="stretch", output_format="PNG",
                 caption=f"row k: the first {B.PER_ROW} of {B.N_SAMPLES:,} samples whose class is k ({rows}); "
                 f"grey cells: fewer samples of that class. τ = {t:.3f}" +
                 ("" if m.class_conditional else "; an unconditional run has no class to weight"))
        loaded.append((r, m, d))
        series.append((r.label, tuple(int(c) for c in view["counts"]), tuple(int(c) for c in view["asked"])
                       if view["asked"] is not None else ()))
with chart:
    st.subheader(f"Which digits do {B.N_SAMPLES:,} samples show?")
    st.plotly_chart(B.shares_figure(names, tuple(balance.shares(train)), tuple(series), B.N_SAMPLES),
                    key="shares")
    st.markdown(B.summary(series, balance.shares(train), names))

st.subheader("Latent map: class centres and who gets the prior")
st.caption("PCA of the encoder means of 2,000 test images, coloured by class; × prior samples, ◆ class centres.")
for side, (col, (r, m, d)) in enumerate(zip(st.columns(2, gap="large"), loaded, strict=False)):
    with col:
        B.map_column(r, m, d, balance.shares(train), side)

with st.expander("What am I looking at?", icon=":material/school:"):
    st.markdown(
        "- **The bars.** Grey: each digit's share of the training images (ρ = largest / smallest class). Coloured: "
        "its share of the run's samples, as the classifier reads them. A Gaussian VAE copies the long tail; a "
        "Conditional-t3VAE draws the class first with equal weights, so its bars sit near the dashed 1/K line.\n"
        "- **The Student-t prior.** ct3vae draws a class y, then "
        r"$z = \mu_y + \tau\,\varepsilon\,\sqrt{(\nu + n)/v}$ with $\varepsilon \sim \mathcal{N}(0, I_m)$ and "
        r"$v \sim \chi^2_{\nu + n}$: a Student-t around the class centre $\mu_y$ (n = 784 pixels), decoded to an "
        "image. t3vae is the same with one centre at 0; cgvae uses a Gaussian $\\mathcal{N}(\\mu_y, I)$.\n"
        "- **Class sampling.** *Equal weights* draws every class with probability 1/K; *training frequencies* "
        "draws them as often as in the training set, which brings the tail back.\n"
        "- **ν and τ.** ν is the Student-t degrees of freedom the model is trained with: small ν, a heavy-tailed prior "
        "and a loss (the γ-power divergence) that is not an ELBO. The samples use ν + n degrees of "
        "freedom, close to Gaussian, so the runs of the ν sweep differ mostly by what training made of ν. τ scales "
        "the noise around each class centre: at 0 every sample of a class is the same image; far above the "
        "theoretical value samples leave the data and the classifier starts to disagree.\n"
        "- **The map.** PCA of the test images' encoder means: only the two directions of largest variance, so "
        "classes that overlap here may be apart in latent space. The prior samples (×) and class centres (◆) are "
        "placed by the same PCA, which drops their spread in the other directions. The shares below each map give "
        "each prior sample to the class of its 15 nearest encoder means, in the full latent space.")
# draw the neighbouring tau notches and the other weighting in the background: most next moves are cached
B.prefetch([(r, m) for r, m, _ in loaded], tau, taus, theory, weighting, int(seed), names)
