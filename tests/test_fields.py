"""Config field metadata (``cvae_core.fields``): every field of every registered model config and of TrainConfig
has a help text, and a str field's "choices" are exactly the values its config's own validation accepts."""

from __future__ import annotations

import dataclasses
import doctest

import pytest
import torch

import cvae_core.fields
from cvae_core.errors import LabError
from cvae_core.fields import field_choices, field_help
from cvae_core.registry import MODELS
from cvae_core.train import TrainConfig

CONFIGS = {name: spec.config_cls for name, spec in MODELS.items()} | {"TrainConfig": TrainConfig}
# other fields a value needs to be valid: an attribute condition needs the number of attributes
COMPANIONS = {("condition", "attributes"): {"cond_dim": 3}}
# every value any config offers for a field name, so a config that narrows a field (class centres: condition="class"
# only) is checked to reject the values the others accept
OFFERED = {}
for _cls in CONFIGS.values():
    for _name, _opts in field_choices(_cls).items():
        OFFERED.setdefault(_name, set()).update(_opts)


def _str_fields(cls):
    return [f for f in dataclasses.fields(cls) if isinstance(f.default, str)]


def _accepts(cls, name: str, value: str) -> bool:
    try:
        cls(**{name: value, **COMPANIONS.get((name, value), {})})
    except (ValueError, LabError):
        return False
    return True


@pytest.fixture
def cuda_present(monkeypatch):
    """TrainConfig rejects device="cuda" on a machine without a GPU; pretend there is one (nothing is run on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_the_module_example_runs():
    failed, attempted = doctest.testmod(cvae_core.fields, optionflags=doctest.ELLIPSIS)
    assert attempted >= 3 and failed == 0


@pytest.mark.parametrize("cls", CONFIGS.values(), ids=CONFIGS.keys())
def test_every_field_has_help(cls):
    helps = field_help(cls)
    assert list(helps) == [f.name for f in dataclasses.fields(cls)]
    missing = [n for n, h in helps.items() if not (isinstance(h, str) and h.strip())]
    assert not missing, f"{cls.__name__}: fields without metadata['help']: {missing}"


@pytest.mark.parametrize("cls", CONFIGS.values(), ids=CONFIGS.keys())
def test_choices_belong_to_str_fields_and_hold_the_default(cls):
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for name, opts in field_choices(cls).items():
        assert isinstance(defaults[name], str), f"{cls.__name__}.{name}: choices on a non-str field"
        assert opts and all(isinstance(o, str) for o in opts) and len(set(opts)) == len(opts), (name, opts)
        assert defaults[name] in opts, f"{cls.__name__}.{name}: default {defaults[name]!r} not in {opts}"


@pytest.mark.usefixtures("cuda_present")
@pytest.mark.parametrize("cls", CONFIGS.values(), ids=CONFIGS.keys())
def test_validation_accepts_exactly_the_choices(cls):
    choices = field_choices(cls)
    for f in _str_fields(cls):
        if f.name not in choices:  # free text: any string goes
            assert _accepts(cls, f.name, "any text"), f"{cls.__name__}.{f.name} validates but has no choices"
            continue
        accepted = {v for v in OFFERED[f.name] | {"no-such-value"} if _accepts(cls, f.name, v)}
        assert accepted == set(choices[f.name]), f"{cls.__name__}.{f.name}: validation accepts {sorted(accepted)}"


def test_the_expected_fields_are_selects():
    """The app's select boxes, spelled out (the Train page shows arch and likelihood)."""
    assert field_choices(MODELS["vae"].config_cls) == {"arch": ("conv", "mlp"), "likelihood": ("gaussian", "bernoulli")}
    assert field_choices(MODELS["ct3vae"].config_cls)["condition"] == ("class",)
    assert field_choices(MODELS["cvae"].config_cls)["condition"] == ("class", "attributes")
    assert field_choices(MODELS["seq_cvae"].config_cls) == {
        "latent": ("discrete", "continuous"), "router": ("frozen", "lora", "full"),
        "decoder": ("frozen", "lora", "full"), "inference": ("frozen", "lora", "full")}
    assert field_choices(TrainConfig) == {"device": ("auto", "cpu", "cuda"), "precision": ("fp32", "bf16", "auto")}
