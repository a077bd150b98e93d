"""Gaussian family (SPEC section 1): one encoder/decoder, variants differ only in the likelihood term.

- ``vae``: fixed decoder variance sigma^2 (beta-VAE, Higgins et al. 2017) or a Bernoulli likelihood.
- ``sigma_vae``: one optimal variance per minibatch, Rybkin et al. 2021, "Simple and Effective VAE Training
  with Calibrated Decoders", arXiv:2006.13202.
- ``bs_vae``: one optimal variance per image with a separate beta, Kim & Lee 2024, "Beta-Sigma VAE:
  Separating beta and decoder variance in Gaussian variational autoencoder", arXiv:2409.09361.
- ``cvae`` / ``sigma_cvae`` (SPEC section 2): the same with encoder and decoder seeing a condition y (class one-hot
  or attribute vector, concatenated to the encoder features and to z), prior N(0, I) (Sohn et al. 2015, "Learning
  Structured Output Representation using Deep Conditional Generative Models"; the baselines of arXiv:2511.08946).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from cvae_core.models.base import ConditionFields, LatentModel, ModelConfig
from cvae_core.nets import make_decoder, make_encoder

LOG_2PI = math.log(2 * math.pi)


# ------------------------------------------------------------------ pure likelihood terms, (B,) each
def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor | float) -> torch.Tensor:
    """-log N(x; mean, sigma^2) summed over (C, H, W); log_sigma broadcasts against x."""
    log_sigma = torch.as_tensor(log_sigma, dtype=x.dtype, device=x.device)
    z2 = ((x - mean) * torch.exp(-log_sigma)).pow(2)
    return (0.5 * z2 + log_sigma + 0.5 * LOG_2PI).expand_as(x).flatten(1).sum(1)


def bernoulli_nll(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """-log Bernoulli(x; sigmoid(logits)) summed over pixels (x may be grey: cross-entropy)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def soft_clip_log_sigma(log_sigma: torch.Tensor, floor: float = -6.0) -> torch.Tensor:
    """log sigma <- floor + softplus(log sigma - floor): smooth lower bound (Rybkin et al.)."""
    return floor + F.softplus(log_sigma - floor)


def sigma_batch_nll(x: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sigma-VAE: sigma*^2 = mean over all of (B, C, H, W) of (x - mean)^2, not detached (the envelope
    theorem gives the same gradient). Returns (nll (B,), log_sigma scalar). Averaged over the batch the nll
    equals (n/2)(1 + log(2 pi sigma*^2)) when the clip is inactive."""
    log_sigma = soft_clip_log_sigma(0.5 * torch.log((x - mean).pow(2).mean()))
    return gaussian_nll(x, mean, log_sigma), log_sigma


def sigma_image_distortion(x: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Beta-Sigma VAE distortion D_i = (n/2)(log(2 pi MSE_i + 1e-5) + 1), MSE_i over the pixels of image i.
    Returns (D (B,), log_sigma_i (B,)) with sigma_i^2 = MSE_i + 1e-5/(2 pi), the variance that D is the NLL of
    up to the +1 constant."""
    n = x[0].numel()
    mse = (x - mean).pow(2).flatten(1).mean(1)  # (B,)
    var = 2 * math.pi * mse + 1e-5
    return 0.5 * n * (torch.log(var) + 1), 0.5 * (torch.log(var) - LOG_2PI)


def kl_std_normal_per_dim(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) per dimension, closed form: 0.5 (mu^2 + sigma^2 - 1) - log sigma."""
    return 0.5 * (mu.pow(2) + torch.exp(2 * log_sigma) - 1) - log_sigma


# ------------------------------------------------------------------ configs
LIKELIHOODS = ("gaussian", "bernoulli")  # the decoders of VAEConfig.likelihood


@dataclass
class VAEConfig(ModelConfig):
    likelihood: str = field(default="gaussian", metadata={
        "help": '"gaussian" (fixed sigma) or "bernoulli" (binarised-MNIST style)', "choices": LIKELIHOODS})
    sigma: float = field(default=1.0, metadata={"help": 'fixed decoder standard deviation for likelihood="gaussian"'})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"vae likelihood must be 'gaussian' or 'bernoulli' (got {self.likelihood!r})")
        if not self.sigma > 0:
            raise ValueError(f"decoder sigma must be > 0 (got {self.sigma})")


@dataclass
class SigmaVAEConfig(ModelConfig):
    """beta stays 1 by default: the learned variance replaces the hand-tuned beta."""


@dataclass
class BSVAEConfig(ModelConfig):
    """beta and the (per-image optimal) decoder variance are separate knobs; sweep beta in {0.01 .. 100}."""


@dataclass
class CVAEConfig(VAEConfig, ConditionFields):
    """vae with encoder and decoder conditioned on y; prior N(0, I)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_condition()


@dataclass
class SigmaCVAEConfig(SigmaVAEConfig, ConditionFields):
    """sigma_vae with encoder and decoder conditioned on y; prior N(0, I)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_condition()


# ------------------------------------------------------------------ models
def _with(h: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    """Concatenate the condition vector c (B, d) to features h (B, F), when there is one."""
    return h if c is None else torch.cat([h, c.to(h.dtype)], dim=-1)


class GaussianVAE(LatentModel):
    """q(z|x[,y]) = N(mu, diag exp(logvar)), p(z) = N(0, I); the likelihood is the variant's component. A condition
    y (config.condition) is concatenated to the encoder features and to z."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c, d = config, self.cond_dim
        self.encoder = make_encoder(c.arch, c.image_shape, c.hidden)
        self.enc_head = nn.Linear(self.encoder.out_features + d, 2 * c.latent_dim)
        self.decoder = make_decoder(c.arch, c.latent_dim + d, c.image_shape, c.hidden)

    def encoder_params(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's mu and log Sigma, (B, m) each (families with another encoder distribution reuse them). `x`:
        model inputs, floats (B, C, H, W) in [0, 1]; its shape and dtype are checked here (no host sync), float64 or
        float16 pixels are cast to the weights' dtype."""
        self.check_images(x, "encode", floats_only=True, values=False)
        x = x.to(self.enc_head.weight.dtype)  # a no-op unless the caller's floats differ from the model's
        h = _with(self.encoder(x), self.condition_vector(y))  # (B, F + d)
        mu, log_var = self.enc_head(h).chunk(2, dim=-1)  # (B, m) each
        return mu, log_var

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        mu, log_var = self.encoder_params(x, y)
        # validate_args=False: argument checks would sync with the host every step; a NaN or overflowing scale
        # instead shows up as a non-finite loss, which fit() catches at the next log tick
        return Independent(Normal(mu, torch.exp(0.5 * log_var), validate_args=False), 1, validate_args=False)

    def prior(self, y: torch.Tensor | None = None, n: int | None = None) -> Distribution:
        p = next(self.parameters())
        shape = (n or (len(y) if y is not None else 1), self.config.latent_dim)
        return Independent(Normal(p.new_zeros(shape), p.new_ones(shape), validate_args=False), 1, validate_args=False)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(_with(z, self.condition_vector(y)))  # (B, m + d) -> logits (B, C, H, W)

    def kl_per_dim(self, q: Distribution, y: torch.Tensor | None = None) -> torch.Tensor:
        return kl_std_normal_per_dim(q.base_dist.loc, torch.log(q.base_dist.scale))

    def kl(self, q: Distribution, z: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.kl_per_dim(q, y).sum(-1)  # closed form: z is not needed


class VAE(GaussianVAE):
    def nll(self, x, logits):
        if self.config.likelihood == "bernoulli":
            return bernoulli_nll(x, logits), {}
        log_sigma = math.log(self.config.sigma)
        return gaussian_nll(x, torch.sigmoid(logits), log_sigma), {}


class SigmaVAE(GaussianVAE):
    calibrated_variance = True

    def nll(self, x, logits):
        nll, log_sigma = sigma_batch_nll(x, torch.sigmoid(logits))
        return nll, {"log_sigma": log_sigma}


class BSVAE(GaussianVAE):
    calibrated_variance = True

    def nll(self, x, logits):
        dist, log_sigma = sigma_image_distortion(x, torch.sigmoid(logits))
        return dist, {"log_sigma": log_sigma}


class CVAE(VAE):
    """Conditional VAE, fixed decoder variance (or Bernoulli): the vae likelihood with y seen by both networks."""


class SigmaCVAE(SigmaVAE):
    """Conditional sigma-VAE: the optimal shared decoder variance of sigma_vae with y seen by both networks."""
