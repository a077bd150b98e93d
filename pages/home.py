"""Home page: what the lab is, the device in use, the shipped pretrained runs and the runs saved from the app."""

import streamlit as st

from cvae_core.registry import MODELS
from cvae_core.runs import catalog
from pages import _lessons, _runs, _runtable, _ui, _url

_ui.leave_legacy_pages_mode()
st.title("Interactive VAE lab")
_url.start("home")  # the Home page has no view state: a link's parameters are reported as unused
st.markdown(
    "A **variational autoencoder** (VAE) squeezes each image into a short code *z* and learns to rebuild the "
    "image from it. Training balances two costs, both measured in nats per image:\n"
    "- **rate R**: how much information the code carries (the KL divergence to the prior), and\n"
    "- **distortion D**: how badly the decoder rebuilds the image from the code.\n\n"
    "The weight **β** sets the trade-off: a small β keeps detail, a large β gives smoother, more generic images. "
    "Models that learn the decoder variance σ (σ-VAE, β-σ-VAE) find their own balance."
)

c1, c2, c3 = st.columns(3)
c1.metric("Device in use", _ui.device_label())
c2.metric("Models", len(MODELS), help=", ".join(MODELS))
runs, problems = _runs.runs()
saved = [r for r in runs if not r.shipped]
c3.metric("Runs saved in this lab", len(saved), help=f"folder: {catalog.saved_root()}")

with st.container(border=True):
    st.markdown(
        "**In class:** open **Train** in the sidebar, keep the default setup and press **Start**. Curves and "
        "samples appear within seconds on a laptop CPU. Then change β (try 0.1 and 10) and start again. "
        "**Save** a run to list it here. The page address holds the setup, so you can share a link to it."
    )

with st.expander("What am I looking at?", icon=":material/school:"):
    st.markdown(
        "- **The objective.** A VAE maximises the evidence lower bound "
        r"$\mathrm{ELBO}(x) = \mathbb{E}_{q(z|x)}[\log p(x|z)] - \mathrm{KL}(q(z|x)\,\|\,p(z)) \le \log p(x)$. "
        r"The tables show $-\mathrm{ELBO} = D + R$ per test image, in nats: distortion D plus rate R." "\n"
        "- **Why some numbers are negative.** A Gaussian decoder with scale σ gives "
        r"$D = \frac{\lVert x - \hat x\rVert^2}{2\sigma^2} + n \log \sigma + \frac{n}{2}\log 2\pi$, "
        "n = 784 pixels (MNIST). At σ = 1 the constant (n/2)·log 2π ≈ 720 nats dominates, so vae and cvae sit "
        "near +730; a model that learns σ ≈ 0.08 gains n·log σ ≈ −1,980 nats and goes negative. Pixels are "
        "continuous, so p(x|z) is a density and can exceed 1. Compare within one data set: lower is better.\n"
        "- **Which σ.** −ELBO: models that learn σ are scored with σ frozen at their training-set value, the "
        "others with their own fixed σ. Distortion D: the σ the model itself uses. mnist-binary runs have a "
        "Bernoulli decoder: no σ, always positive.\n"
        "- **The Samples tab.** Class coverage and classifier FID come from the in-project digit classifier; "
        "attributes are measured in the pixels (morpho-mnist). A conditional run whose class coverage is near 0 "
        "ignores the class it is asked for (the note under the table says which).")

_lessons.lessons_section()

RUN_SECTIONS = [  # (title, runs, caption, what to say when it is empty)
    ("Pretrained runs shipped with the lab", [r for r in runs if r.shipped],
     "Test-set metrics per image. The grids are samples drawn from each model's prior.",
     "No pretrained runs are shipped yet: `checkpoints/` is empty. Train a model on the **Train** page "
     "and save it to see it here."),
    ("Your saved runs", saved,
     "Saved from the Train page; test-set metrics per image, samples from each model's prior.",
     "Nothing saved yet. On the **Train** page, press **Save** during or after a run."),
]
for title, listed, caption, empty in RUN_SECTIONS:
    st.header(title)
    if listed:
        st.caption(caption)
        _runtable.runs_section(listed)
    else:
        st.info(empty)
for msg in problems:  # a run folder that cannot be read is one line, not a traceback
    st.warning(msg)

with st.expander("The models in this lab"):
    for name, spec in MODELS.items():
        st.markdown(f"- **{name}**: {spec.description}")
