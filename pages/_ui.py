"""Streamlit helpers shared by every page: the device line and the legacy-pages guard. No maths here: models, metrics
and training all live in ``cvae_core``. The rest of the page helpers sit beside this module by concern: ``_url``
(page state in the URL), ``_runs`` (the run list and loaders), ``_images``, ``_charts``, ``_jobs`` (training jobs),
``_widgets`` (config widgets), and one module per page (``_training``, ``_runtable``, ``_maps``, ``_balance``,
``_rare``, ``_cert``, ``_strat``).

The leading underscore keeps this module out of any page list.
"""

from __future__ import annotations

import streamlit as st
import torch


# ------------------------------------------------------------------ device and page mode
def device_label() -> str:
    if torch.cuda.is_available():
        return f"CUDA: {torch.cuda.get_device_name(0)}"
    return f"CPU ({torch.get_num_threads()} threads)"


def leave_legacy_pages_mode() -> None:
    """Call first on every page. Streamlit treats a folder named ``pages/`` as a legacy multipage app until app.py
    has called ``st.navigation`` once in the server process; if the first visitor of a fresh server opens a page
    URL directly (a shared ``/train?...`` link), the page would run without app.py (no sidebar, a wrong menu).
    Switch that mode off, as ``st.navigation`` itself does, and rerun through app.py."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a future streamlit without the legacy mode
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()
