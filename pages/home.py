"""Home page: what the lab is, the device in use, the shipped pretrained runs and the runs saved from the app."""

import streamlit as st

from cvae_core.registry import MODELS
from cvae_core.runs.folder import list_runs
from pages import _ui

_ui.leave_legacy_pages_mode()
st.title("Interactive VAE lab")
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
c3.metric("Runs saved in this lab", len(list_runs(_ui.runs_root())), help=f"folder: {_ui.runs_root()}")

with st.container(border=True):
    st.markdown(
        "**In class:** open **Train** in the sidebar, keep the default setup and press **Start**. Curves and "
        "samples appear within seconds on a laptop CPU. Then change β (try 0.1 and 10) and start again. "
        "**Save** a run to list it here. The page address holds the setup, so you can share a link to it."
    )

RUN_SECTIONS = [  # (title, folder, caption, what to say when it is empty)
    ("Pretrained runs shipped with the lab", _ui.checkpoints_root(),
     "Test-set metrics per image. The grids are samples drawn from each model's prior.",
     "No pretrained runs are shipped yet: `checkpoints/` is empty. Train a model on the **Train** page "
     "and save it to see it here."),
    ("Your saved runs", _ui.runs_root(),
     "Saved from the Train page; test-set metrics per image, samples from each model's prior.",
     "Nothing saved yet. On the **Train** page, press **Save** during or after a run."),
]
for title, root, caption, empty in RUN_SECTIONS:
    st.header(title)
    runs = list_runs(root)
    if runs:
        st.caption(caption)
        _ui.runs_section(runs)
    else:
        st.info(empty)

with st.expander("The models in this lab"):
    for name, spec in MODELS.items():
        st.markdown(f"- **{name}**: {spec.description}")
