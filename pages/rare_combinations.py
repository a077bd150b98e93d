"""Rare combinations page: ask for an attribute combination that training saw rarely or never (a thick, left-slanted,
red, small 4) and compare what a CVAE with an N(0, I) prior and one with a learned flow prior p(z|y) draw, measured
in the pixels; see where the learned prior puts that condition."""

import streamlit as st

from cvae_core.data import morpho
from cvae_core.data.celeba import celeba_dir
from cvae_core.errors import LabError
from cvae_core.eval import attributes as A
from pages import _rare as R
from pages import _ui, _url

_ui.leave_legacy_pages_mode()
st.title("Rare combinations")
st.caption("morpho-mnist: MNIST digits redrawn thick or thin, slanted left or right, red or blue, large or small. "
           "Some combinations are rare in training (r), some never appear (×). Does a learned prior p(z|y) draw them "
           "better than N(0, I)? Every sample is measured in its pixels, not judged by a network.")
_url.start("rare_combinations", R.URL_KEYS)  # the whole view lives in the URL: a link reproduces it

runs, problems = R.find_runs()
for msg in problems:
    st.error(msg)
if not runs:
    st.error("No morpho-mnist runs found: no shipped `morpho_*` runs in `checkpoints/` and none saved. Train one with "
             "`python -m cvae_core train --model flow_cvae --dataset morpho-mnist --out runs/morpho_flow`.")
    st.stop()
R.restore_view(runs)

left, right = st.columns([1.5, 1], gap="large")
with right:
    st.subheader("Ask for a combination")
    digit = st.segmented_control("Digit", list(range(10)), key="digit", required=True, wrap=True)
    asked = []
    for a in morpho.ATTRIBUTES:
        title, lo, hi = R.SLIDERS[a]
        asked.append(st.slider(f"{title}: {lo} (0) ↔ {hi} (1)", 0.0, 1.0, step=0.05, key=a,
                               help="values between 0 and 1 are allowed: the models were trained on 0/1 only, so "
                                    "this asks them to interpolate"))
    asked = tuple(round(float(v), 2) for v in asked)
    shown = st.multiselect("Runs side by side", list(runs), key="shown", wrap=True,
                           format_func=lambda rid: R.option_label(runs[rid]),
                           help="the shipped runs: cvae, sigma_cvae (prior N(0, I)) and flow_cvae end to end and "
                                "two-stage (a learned prior p(z|y))")
    seed = st.number_input("Seed", 0, 1_000_000, key="seed", help="the noise behind the 16 samples of each run")
_url.publish({"digit": digit, **dict(zip(morpho.ATTRIBUTES, asked, strict=True)), "run": shown, "seed": seed})

try:
    first = R.load(runs[shown[0] if shown else next(iter(runs))])
except LabError as e:
    st.error(str(e))
    st.stop()
data = first[2]
combo = int(morpho.combo_index(A.asked_bits(asked))[0])
kind = morpho.cell_kind(digit, combo)
counts = R.training_counts(data.name, data)
n_train = int(counts[digit, combo])
with left:
    st.subheader("How often training saw each combination")
    st.plotly_chart(R.heatmap(f"{data.name}:{digit}:{combo}", counts, digit, combo), key="heat")
    st.caption("Rows: digits; columns: the 16 combinations (thick/thin · right/left · red/blue · large/small). "
               "Colour: training images (log scale); r: a rare combination (0.4% of training over all digits), ×: "
               "held out (never in training). The "
               "orange box is the combination asked for.")
what = f"digit {digit}, {morpho.combo_label(combo)}"
continuous = any(0 < v < 1 for v in asked)
msg = (f"**Asked for: {what}**{' (nearest cell; values in between are interpolation)' if continuous else ''}. "
       f"In training: **{R.KIND_TEXT[kind]}**; this digit with this combination: {n_train:,} of "
       f"{len(data.x_train):,} images ({n_train / len(data.x_train):.2%}; 1/160 of the data would be 0.63%).")
if kind == "common":
    st.info(msg, icon=":material/check_circle:")
else:
    st.warning(msg, icon=":material/visibility_off:" if kind == "heldout" else ":material/warning:")
for w in R.entanglement(asked, data.info["correlations"]):
    st.warning(w, icon=":material/link:")

if not shown:
    st.info("Pick at least one run above.")
    st.stop()
cols = st.columns(len(shown), gap="medium")
loaded = []
for col, rid in zip(cols, shown, strict=True):
    run = runs[rid]
    with col:
        try:
            model, info, _ = R.load(run)
        except LabError as e:
            st.error(str(e))
            continue
        view = R.cell_view(run.key, digit, asked, int(seed), model)
        st.markdown(f"**{R.label(run)}**")
        st.caption(rid)
        st.image(view["grid"], width="stretch")
        acc = view["accuracy"]
        st.markdown(f"**{acc['all']:.0%}** of the attributes right in these {R.N_SAMPLES} samples")
        st.caption(R.accuracy_line(acc, asked))
        metrics = info.get("metrics") or {}
        if "heldout_attr_accuracy" in metrics:
            st.caption(f"over all 160 cells: {metrics['attr_accuracy']:.0%} · rare {metrics['rare_attr_accuracy']:.0%}"
                       f" · held-out {metrics['heldout_attr_accuracy']:.0%} (its evaluation, "
                       f"{metrics.get('attr_samples', 0):,} samples)")
        loaded.append((run, model, info))

flows = [(r, m, i) for r, m, i in loaded if r.model == "flow_cvae"]
st.subheader("Where the prior puts this combination")
if not flows:
    st.info("None of the runs shown has a learned prior: add a flow_cvae run above to see p(z|y).")
else:
    st.caption(f"PCA of the encoder means of 2,000 test images. Grey: {R.N_PRIOR} draws of N(0, I); orange: "
               f"{R.N_PRIOR} draws of the learned p(z|y) for the combination asked; blue: where the encoder puts "
               f"real images of it (up to {R.N_IMAGES}). A CVAE with prior N(0, I) samples the grey cloud for every "
               "combination.")
    for col, (run, model, _) in zip(st.columns(len(flows)), flows, strict=True):
        with col:
            pic = R.picture(run.key, digit, asked, model, data)
            st.plotly_chart(R.prior_figure(f"{run.key}:{digit}:{asked}", pic, R.label(run)), key=f"prior-{run.path}")
            st.caption(f"{pic['n_images']:,} {'training' if pic['images_split'] == 'train' else 'test'} images of "
                       "this cell" + (" (none in training)" if pic["images_split"] == "test" else ""))

try:
    celeba_dir()
    celeba = "are here: train a model on them from the **Train** page (data set `celeba`)"
except LabError:
    celeba = ("are not here: put `img_align_celeba/`, `list_attr_celeba.txt` and `list_eval_partition.txt` in "
              "`celeba/` under the data folder (torchvision's layout; nothing is downloaded)")
st.caption(f"CelebA (64×64 faces, 40 binary attributes) is the real-data version of this page's question; its "
           f"files {celeba}.")

with st.expander("What am I looking at?", icon=":material/school:"):
    st.markdown(
        "- **The data.** Every training digit gets one combination of four attributes. Thick digits are mostly red "
        "and thin ones mostly blue (the two are *entangled*). Two combinations are rare (0.4% of training each), and "
        "four (digit, combination) cells never appear in training at all: a thick, left, red, small 4 is one.\n"
        "- **The measurements.** Stroke width is ink per unit of centre-line length; slant is the shear of the "
        "ink's second moments; colour is red against blue ink; size is the ink's height less the stroke. On the "
        "real images they are at least 99.8% right.\n"
        "- **The models.** All four see the digit and the attributes y. cvae and sigma_cvae sample z from N(0, I) "
        "whatever you ask. flow_cvae learns the prior p(z|y): a Gaussian base "
        r"$u \sim \mathcal{N}(\mu_p(y), \sigma_p^2(y))$ pushed through a RealNVP flow $z = f(u; y)$, so "
        r"$\log p(z|y) = \log \mathcal{N}\big(f^{-1}(z; y);\, \mu_p(y), \sigma_p^2(y)\big) "
        r"+ \log \big|\det \partial f^{-1} / \partial z\big|$. "
        "It takes the place of N(0, I) in the KL term of the ELBO (estimated by sampling z), so the prior learns "
        "where the encoder puts each condition. The two-stage flow is fitted after training, by maximum likelihood "
        "on where the encoder put the training images.\n"
        "- **What it does not show.** A learned prior moves *where* samples come from; if the decoder itself never "
        "learnt a combination, no prior can fix that. docs/results/flow-prior.md has the three-seed experiment "
        "behind the claim.")
# draw the conditions one move away in the background: most next moves are cached
R.prefetch([(r.key, m) for r, m, _ in loaded], [(r.key, m) for r, m, _ in flows], data, digit, asked, int(seed))
