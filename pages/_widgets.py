"""Config widgets: one widget per field of a model's config dataclass, built from the field's metadata
(``cvae_core.fields``: "help" becomes the tooltip, "choices" a select box). Every widget lives in the URL: it starts
from the URL's ``<model>.<field>`` value, checked by ``_url.restore`` (a bad value is one warning line naming it, never
an exception), and ``_training.option_widgets`` writes the values back.

The leading underscore keeps this module out of any page list.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from cvae_core.fields import field_choices, field_help
from cvae_core.registry import MODELS
from pages import _url

# fixed by the data set or by the page's own widgets (class-conditional models take their condition from the labels)
SET_BY_PAGE = {"image_shape", "num_classes", "latent_dim", "beta", "condition", "cond_dim"}
NETWORK = ("arch", "hidden")


def field_widget(model: str, f: dataclasses.Field, help_text: str = "", choices: tuple[str, ...] | None = None) -> Any:
    """One widget per config field, chosen from the field's default type (bool, int, float or str; a str field
    with `choices` is a select box). Its first value comes from the URL (``_url.restore``)."""
    key, default = f"{model}.{f.name}", f.default
    kw = {"key": key, "help": help_text or None}
    if isinstance(default, bool):
        _url.restore(key, "bool", default)
        return st.checkbox(f.name, **kw)
    if isinstance(default, int):
        _url.restore(key, "int", default)
        return int(st.number_input(f.name, step=1, **kw))
    if isinstance(default, float):
        _url.restore(key, "float", default)
        return float(st.number_input(f.name, step=0.1, format="%g", **kw))
    if isinstance(default, str):
        if choices:
            _url.restore(key, "choice", default, choices=list(choices))
            return st.selectbox(f.name, list(choices), **kw)
        _url.restore(key, "text", default)
        return st.text_input(f.name, **kw)
    return default


def model_option_widgets(model: str) -> dict[str, Any]:
    """Widgets for the model's own config fields (e.g. vae: likelihood, sigma) and an expander for the network."""
    cls = MODELS[model].config_cls
    helps, choices = field_help(cls), field_choices(cls)

    def widget(f: dataclasses.Field) -> Any:
        return field_widget(model, f, helps[f.name], choices.get(f.name))

    fields = [f for f in dataclasses.fields(cls) if f.name not in SET_BY_PAGE]
    opts = {f.name: widget(f) for f in fields if f.name not in NETWORK}
    with st.expander("Network"):
        opts.update({f.name: widget(f) for f in fields if f.name in NETWORK})
    return opts
