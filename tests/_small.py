"""Options a family needs at the small latent sizes the generic tests use (not a test module)."""

from __future__ import annotations

import dataclasses

from cvae_core.registry import MODELS


def fit_small(name: str) -> dict:
    """A witness needs latent_dim >= K - 1, so families with a teacher get the smallest one (K = 3: two witness
    coordinates); other families need nothing."""
    return {"teacher_k": 3} if "teacher_k" in {f.name for f in dataclasses.fields(MODELS[name].config_cls)} else {}
