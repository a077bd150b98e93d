"""Streamlit helpers shared by every page: the device line, the legacy-pages guard, and the config widgets of the
Train page. No maths here: models, metrics and training all live in ``cvae_core``. The rest of the page helpers sit
beside this module by concern: ``_url`` (page state in the URL), ``_runs`` (the run list and loaders), ``_images``,
``_charts``, ``_jobs`` (training jobs), and one module per page (``_training``, ``_runtable``, ``_maps``, ``_balance``,
``_rare``, ``_cert``, ``_strat``).

The leading underscore keeps this module out of any page list.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from typing import Any

import streamlit as st
import torch

from cvae_core.models.base import ModelConfig
from cvae_core.registry import MODELS


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


# ------------------------------------------------------------------ config widgets
@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its trailing comment in the dataclass source (the config's own documentation)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            src = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for m in re.finditer(r"^\s+(\w+)\s*:[^=\n]+=[^#\n]*#\s*(.+)$", src, re.M):
            docs[m[1]] = m[2].strip()
    return docs


def _choices(doc: str, default: Any) -> list[str] | None:
    """A str field whose comment quotes its allowed values, e.g. '"conv" (...) or "mlp"', becomes a select."""
    opts = re.findall(r'"([^"]+)"', doc)
    return opts if isinstance(default, str) and default in opts and len(opts) >= 2 else None


# fixed by the data set or by the page's own widgets (class-conditional models take their condition from the labels)
SET_BY_PAGE = {"image_shape", "num_classes", "latent_dim", "beta", "condition", "cond_dim"}
NETWORK = ("arch", "hidden")


def field_widget(model: str, f: dataclasses.Field, doc: str) -> Any:
    """One widget per config field, chosen from the field's default type (bool, int, float or str)."""
    key, default = f"{model}.{f.name}", f.default
    kw = {"key": key, "help": doc or None, "bind": "query-params"}
    if isinstance(default, bool):
        return st.checkbox(f.name, value=default, **kw)
    if isinstance(default, int):
        return int(st.number_input(f.name, value=default, step=1, **kw))
    if isinstance(default, float):
        return float(st.number_input(f.name, value=default, step=0.1, format="%g", **kw))
    if isinstance(default, str):
        opts = _choices(doc, default)
        if opts:
            return st.selectbox(f.name, opts, index=opts.index(default), **kw)
        return st.text_input(f.name, value=default, **kw)
    return default


def model_option_widgets(model: str) -> dict[str, Any]:
    """Widgets for the model's own config fields (e.g. vae: likelihood, sigma) and an expander for the network."""
    cls: type[ModelConfig] = MODELS[model].config_cls
    docs = field_docs(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name not in SET_BY_PAGE]
    opts = {f.name: field_widget(model, f, docs.get(f.name, "")) for f in fields if f.name not in NETWORK}
    with st.expander("Network"):
        opts.update({f.name: field_widget(model, f, docs.get(f.name, "")) for f in fields if f.name in NETWORK})
    return opts
