"""Helpers shared by test modules (not a test module): options for small models, scripts as modules."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

from cvae_core.registry import MODELS


def fit_small(name: str) -> dict:
    """A witness needs latent_dim >= K - 1, so families with a teacher get the smallest one (K = 3: two witness
    coordinates); other families need nothing."""
    return {"teacher_k": 3} if "teacher_k" in {f.name for f in dataclasses.fields(MODELS[name].config_cls)} else {}


def load_script(name: str):
    """A script of scripts/ (e.g. "flow_experiment") imported as a module, without running its main."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
