"""Latent map page (placeholder until the page lands in this issue)."""

import streamlit as st

from pages import _ui

_ui.leave_legacy_pages_mode()
st.title("Latent map")
st.info("Coming in this issue.")
