"""The one registry: model name -> (Config dataclass, Model class, one-line description, family).

The CLI, the app and the tests all read ``MODELS``; every family is named here and nowhere else.

Example:
    >>> from cvae_core import MODELS
    >>> "bs_vae" in MODELS and "rst_vae" in MODELS
    True
    >>> MODELS["bs_vae"].config_cls().beta
    1.0
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import torch

from cvae_core.errors import ConfigError
from cvae_core.models.base import LatentModel, ModelConfig
from cvae_core.models.certificate import RSTVAE, RSTPrefitConfig, RSTVAEConfig
from cvae_core.models.flow import FlowCVAE, FlowCVAEConfig
from cvae_core.models.gaussian import (
    BSVAE,
    CVAE,
    VAE,
    BSVAEConfig,
    CVAEConfig,
    SigmaCVAE,
    SigmaCVAEConfig,
    SigmaVAE,
    SigmaVAEConfig,
    VAEConfig,
)
from cvae_core.models.student_t import CGVAE, CT3VAE, T3VAE, CGVAEConfig, CT3VAEConfig, T3VAEConfig
from cvae_core.sequence.model import SeqCVAE, SeqCVAEConfig


class ModelSpec(NamedTuple):
    config_cls: type  # a ModelConfig (SeqCVAEConfig for the sequence family)
    model_cls: type  # a LatentModel (SeqCVAE for the sequence family)
    description: str
    family: str


MODELS: dict[str, ModelSpec] = {
    "vae": ModelSpec(VAEConfig, VAE, "beta-VAE with a fixed decoder variance (or Bernoulli likelihood)", "gaussian"),
    "sigma_vae": ModelSpec(SigmaVAEConfig, SigmaVAE, "sigma-VAE: optimal decoder variance shared per batch",
                           "gaussian"),
    "bs_vae": ModelSpec(BSVAEConfig, BSVAE, "Beta-Sigma VAE: optimal variance per image, separate beta", "gaussian"),
    "cvae": ModelSpec(CVAEConfig, CVAE, "conditional VAE: encoder and decoder see the class (or attributes); "
                      "prior N(0, I)", "conditional"),
    "sigma_cvae": ModelSpec(SigmaCVAEConfig, SigmaCVAE, "conditional sigma-VAE: optimal shared decoder variance, "
                            "encoder and decoder see the class", "conditional"),
    "t3vae": ModelSpec(T3VAEConfig, T3VAE, "t3VAE: Student-t encoder and gamma-power loss (nu > 2 degrees of freedom)",
                       "student_t"),
    "ct3vae": ModelSpec(CT3VAEConfig, CT3VAE, "Conditional-t3VAE: t3VAE with a learnable centre per class, "
                        "equal-weight class mixture for sampling", "student_t"),
    "cgvae": ModelSpec(CGVAEConfig, CGVAE, "conditional Gaussian VAE with per-class priors N(mu_y, I), equal-weight "
                       "class mixture for sampling", "student_t"),
    "flow_cvae": ModelSpec(FlowCVAEConfig, FlowCVAE, "conditional sigma-VAE with a learned prior p(z|y): a conditional "
                           "RealNVP (zuko) over a Gaussian base from MLP(y); two_stage=true fits it after training",
                           "flow"),
    "rst_vae": ModelSpec(RSTVAEConfig, RSTVAE, "RST-VAE: vae + lambda_TS x the simplex-witness loss LTS against a "
                         "fixed PCA-GMM teacher (the collapse certificate); Bernoulli decoder", "certificate"),
    "rst_prefit": ModelSpec(RSTPrefitConfig, RSTVAE, "RST-VAE whose encoder is first fitted to the witness alone "
                            "(prefit_fraction of the steps), then trained jointly", "certificate"),
    "seq_cvae": ModelSpec(SeqCVAEConfig, SeqCVAE, "sequence CVAE over a small transformer LM: router p(z|x), decoder "
                          "p(y|x,z), inference network q(z|x,y); a discrete or continuous strategy latent "
                          "(the strategies task; see cvae_core.sequence.runs)", "sequence"),
}
SEQUENCE_FAMILIES = ("sequence",)


def image_model_names() -> list[str]:
    """The models over images (every family but the sequence CVAE, which is built over a base language model)."""
    return [n for n, s in MODELS.items() if s.family not in SEQUENCE_FAMILIES]


def model_names() -> list[str]:
    return list(MODELS)


def make_config(name: str, **overrides: Any) -> ModelConfig:
    """Config for `name` with overrides; unknown fields or bad values raise ConfigError (one line)."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    cls = MODELS[name].config_cls
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"model {name!r} has no option {', '.join(unknown)} (options: {', '.join(sorted(fields))})")
    try:
        return cls(**overrides)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad option for model {name!r}: {e}") from None


def build_model(name: str, config: ModelConfig | None = None, seed: int | None = None, **overrides: Any) -> LatentModel:
    """Instantiate a registered model; `seed` makes the initial weights reproducible. Options are the fields of
    the model's config dataclass (`make_config` checks them and says in one line what is wrong).

    Example:
        >>> from cvae_core import build_model
        >>> model = build_model("vae", seed=0, latent_dim=2)
        >>> model.sample(4).shape
        torch.Size([4, 1, 28, 28])
        >>> build_model("vae", latent_dim=0)
        Traceback (most recent call last):
        ...
        cvae_core.errors.ConfigError: bad option for model 'vae': latent_dim must be >= 1 and an integer (got 0)
    """
    if name in MODELS and MODELS[name].family in SEQUENCE_FAMILIES:
        raise ConfigError(f"{name} is built over a base language model: use cvae_core.sequence.runs.train_and_save, or "
                          f"`python -m cvae_core train --model {name}`")
    config = config if config is not None else make_config(name, **overrides)
    if seed is not None:
        torch.manual_seed(seed)
    return MODELS[name].model_cls(config)
