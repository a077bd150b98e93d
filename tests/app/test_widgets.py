"""The Train page's model options (pages/_widgets.py) come from the config fields' metadata: one widget per field
not set by the page, keyed ``<model>.<field>``, its tooltip the field's "help", a select box for "choices"."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # the pages import cvae_core and pages._ui from the repository root
    sys.path.insert(0, str(REPO))

from cvae_core.fields import field_choices, field_help  # noqa: E402
from cvae_core.registry import MODELS, image_model_names  # noqa: E402
from pages._widgets import NETWORK, SET_BY_PAGE  # noqa: E402

TRAIN = str(REPO / "pages/train.py")
TIMEOUT = 60  # seconds for one script run (the first imports torch)
pytestmark = pytest.mark.usefixtures("lab_dirs")


def _widget(at: AppTest, key: str):
    for kind in ("selectbox", "number_input", "checkbox", "text_input"):
        found = [w for w in getattr(at, kind) if w.key == key]
        if found:
            return kind, found[0]
    raise AssertionError(f"no widget with key {key!r}")


def test_every_model_option_is_a_widget_with_the_fields_help():
    at = AppTest.from_file(TRAIN, default_timeout=TIMEOUT).run()
    assert not at.exception
    for model in image_model_names():
        at.selectbox(key="model").select(model).run()
        assert not at.exception, model
        cls = MODELS[model].config_cls
        helps, choices = field_help(cls), field_choices(cls)
        shown = [f for f in dataclasses.fields(cls) if f.name not in SET_BY_PAGE]
        assert {f.name for f in shown} >= set(NETWORK)
        for f in shown:
            kind, w = _widget(at, f"{model}.{f.name}")
            assert w.label == f.name and w.help == helps[f.name], (model, f.name)
            if f.name in choices:
                assert kind == "selectbox" and w.options == list(choices[f.name]) and w.value == f.default
        network = [e for e in at.expander if e.label == "Network"]
        assert len(network) == 1
        assert sorted(w.key for kind in ("selectbox", "number_input") for w in getattr(network[0], kind)) == sorted(
            f"{model}.{n}" for n in NETWORK)


def test_model_options_are_read_from_the_url():
    """A shared link sets the model's options (each widget starts from _url.restore)."""
    at = AppTest.from_file(TRAIN, default_timeout=TIMEOUT)
    at.query_params.update({"model": "vae", "vae.likelihood": "bernoulli", "vae.sigma": "0.5", "vae.arch": "mlp"})
    at.run()
    assert not at.exception
    assert at.selectbox(key="vae.likelihood").value == "bernoulli" and at.number_input(key="vae.sigma").value == 0.5
    assert at.selectbox(key="vae.arch").value == "mlp"
