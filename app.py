"""Interactive VAE lab: the Streamlit entry point. Run with ``streamlit run app.py``.

Only navigation and the shared sidebar live here; each page is a script in pages/, and all maths is in cvae_core.
"""

import streamlit as st

from pages._jobs import load_line, mark_session_job_seen
from pages._maps import start_umap_warmup
from pages._ui import device_label

st.set_page_config(page_title="Interactive VAE lab", page_icon=":material/science:", layout="wide")

page = st.navigation([
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/generate.py", title="Generate", icon=":material/auto_awesome:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/latent_map.py", title="Latent map", icon=":material/scatter_plot:"),
    st.Page("pages/class_balance.py", title="Class balance", icon=":material/balance:"),
    st.Page("pages/rare_combinations.py", title="Rare combinations", icon=":material/join_inner:"),
    st.Page("pages/certificate.py", title="Collapse certificate", icon=":material/verified:"),
    st.Page("pages/strategies.py", title="Strategies", icon=":material/alt_route:"),
])



@st.fragment(run_every=5.0)
def server_load() -> None:
    """e.g. "1 of 1 training slots busy, 2 waiting" (the job board), redrawn every 5 s on its own: a page whose live
    view ticks in a fragment never reruns the sidebar."""
    st.caption(f"Server: {load_line()}")


with st.sidebar:
    st.markdown(f"**Device:** {device_label()}")
    server_load()
    st.caption("An open-source lab for training small variational autoencoders live and seeing what "
               "β, the decoder variance and the latent size do.")

mark_session_job_seen()  # any page open in this tab keeps its training job (see pages/_jobs.py ORPHAN_AGE)
page.run()
# UMAP's numba compile, once per server, in a background thread (Latent map page). After the page, not before: its
# import (2.5 s) in this thread and the compile beside it kept a fresh server's first page blank for 7 s. A page that
# stops early starts it on a later run; the Latent map page starts it itself.
start_umap_warmup()
