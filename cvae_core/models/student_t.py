"""Student-t family for class-imbalanced data (SPEC section 3).

- ``t3vae``: Student-t encoder t_m(mu, (nu/(nu+n)) Sigma, nu+n), Gaussian decoder of fixed scale sigma, and the
  gamma-power loss of the official code (Mincheol2/t3VAE) on this project's 1x scale: L = rec + beta * R / 2 with
  rec = ||x - xhat||^2 / (2 sigma^2) + (n/2) log(2 pi sigma^2) (the `vae` reconstruction term, so D compares across
  families). Kim et al., "t3-Variational Autoencoder", ICLR 2024, arXiv:2312.01133.
- ``ct3vae``: one learnable centre mu_y per class; ||mu||^2 in R becomes ||mu(x) - mu_y||^2; encoder and decoder see
  y; sampling draws y from an equal-weight mixture (or the training frequencies, for comparison) and
  z = mu_y + tau * eps * sqrt((nu+n)/v). Conditional-t3VAE, arXiv:2509.02154.
- ``cgvae``: the Gaussian baseline of that paper: per-class priors N(mu_y, I), closed-form KL, same sampler.

Not ELBOs: the Student-t loss is a gamma-power divergence, so these families report no `neg_elbo`; their
`prior` is the sampling distribution t_m(mu_y, tau^2 I, nu+n), whose importance-sampled likelihood is still a
proper marginal likelihood of the model that generates the samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from cvae_core.distributions import (
    DiagStudentT,
    T3Constants,
    check_nu,
    chi2_mixing,
    min_pairwise_distance,
    simplex_centres,
    t3_constants,
    t3_regulariser,
)
from cvae_core.errors import ConfigError
from cvae_core.models.base import TAU_MAX, ConditionFields, LatentModel, ModelConfig
from cvae_core.models.gaussian import CVAE, GaussianVAE, VAEConfig, gaussian_nll, kl_std_normal_per_dim


# ------------------------------------------------------------------ configs
@dataclass
class CentreFields:
    """Mixin of models with one learnable latent centre per class."""

    centre_separation: float = field(default=4.0, metadata={
        "help": "initial pairwise distance of the class centres (a regular simplex), in units of the prior's sampling "
                "scale (tau for Student-t, 1 for Gaussian)"})
    class_balanced: bool = field(default=False, metadata={
        "help": "True: every term is the mean per class, then over the classes in the batch"})

    def _check_centres(self) -> None:
        self._check_condition()
        if self.condition != "class":
            raise ValueError("class centres need a class condition (condition='class')")
        if not self.centre_separation >= 0:
            raise ValueError(f"centre_separation must be >= 0 (got {self.centre_separation})")


# class centres need the class: ConditionFields.condition, narrowed (a redeclared field keeps its place in the order)
CLASS_ONLY = {"help": '"class" (one-hot of num_classes): one centre per class, so no "attributes"',
              "choices": ("class",)}


@dataclass
class T3VAEConfig(ModelConfig):
    nu: float = field(default=10.0, metadata={
        "help": "Student-t degrees of freedom, > 2 (small = heavy tails; nu -> infinity is the Gaussian VAE)"})
    sigma: float = field(default=1.0, metadata={"help": "decoder scale (every official run uses 1)"})
    tau: float = field(default=0.0, metadata={
        "help": "sampling scale; 0 = the theoretical tau = sqrt(nu/(nu+n) * tt2) (SPEC section 3)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_nu(self.nu)
        if not self.sigma > 0:
            raise ValueError(f"decoder sigma must be > 0 (got {self.sigma})")
        if not 0 <= self.tau <= TAU_MAX:
            raise ValueError(f"tau must be >= 0 and at most {TAU_MAX:g} (got {self.tau}); 0 means the theoretical "
                             "value")


@dataclass
class CT3VAEConfig(T3VAEConfig, ConditionFields, CentreFields):
    """t3vae with a learnable centre per class, equal-weight mixture sampling."""

    condition: str = field(default="class", metadata=CLASS_ONLY)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_centres()


@dataclass
class CGVAEConfig(VAEConfig, ConditionFields, CentreFields):
    """Conditional Gaussian VAE with per-class priors N(mu_y, I)."""

    condition: str = field(default="class", metadata=CLASS_ONLY)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_centres()


# ------------------------------------------------------------------ models
class ClassCentres(LatentModel):
    """Shared by ct3vae and cgvae: the (K, m) centres, the training class frequencies, class-balanced weighting,
    and the centres on the Latent map."""

    centre_unit: float = 1.0  # the prior's sampling scale, the unit of config.centre_separation

    def _init_centres(self) -> None:
        c = self.config
        spread = c.centre_separation * self.centre_unit
        self.centres = nn.Parameter(simplex_centres(c.num_classes, c.latent_dim, spread))  # (K, m)
        self.register_buffer("class_freq", torch.full((c.num_classes,), 1.0 / c.num_classes))

    def centre_of(self, y: torch.Tensor | None) -> torch.Tensor:
        if y is None:
            raise ConfigError(f"{type(self).__name__} has one prior centre per class: it needs the class y")
        return self.centres[y]  # (B, m)

    def setup(self, data) -> None:
        counts = torch.bincount(data.y_train.cpu(), minlength=self.config.num_classes).double()
        self.class_freq.copy_(counts / counts.sum())

    def item_weights(self, x, y):
        """class_balanced: 1 / (n_present * count of the item's class in the batch), so each class present weighs the
        same; else None (a plain mean)."""
        if not self.config.class_balanced:
            return None
        # per-class counts by index_add_, not bincount, which syncs with the host on CUDA (it reads y.max())
        counts = x.new_zeros(self.config.num_classes).index_add_(0, y, torch.ones_like(y, dtype=x.dtype))  # (K,)
        return 1.0 / (counts[y] * (counts > 0).sum())  # (B,), sums to 1

    def family_numbers(self) -> dict[str, float]:
        return {**super().family_numbers(), "centre_min_distance": min_pairwise_distance(self.centres.detach().cpu())}

    @torch.no_grad()
    def map_overlays(self, n, generator=None, y=None):
        out = super().map_overlays(n, generator, y)
        out["class centres"] = (self.centres.detach().float().cpu(), torch.arange(self.config.num_classes))
        return out


class T3VAE(GaussianVAE):
    rate_key = "reg"  # R / 2: the gamma-power regulariser on the 1x scale
    objective_label = "D + β·R/2 (γ-power)"

    def __init__(self, config: T3VAEConfig):
        super().__init__(config)
        self.t3: T3Constants = t3_constants(config.nu, self.n_pixels, config.latent_dim, config.sigma)

    @property
    def df(self) -> float:
        return self.t3.nu + self.t3.n  # degrees of freedom of the encoder and of the sampling prior

    @property
    def default_tau(self) -> float:
        return self.config.tau or self.t3.tau

    def centre_of(self, y: torch.Tensor | None) -> torch.Tensor | float:
        return 0.0

    def _q(self, mu: torch.Tensor, log_var: torch.Tensor) -> DiagStudentT:
        scale = math.sqrt(self.t3.nu / self.df) * torch.exp(0.5 * log_var)  # sqrt((nu/(nu+n)) Sigma)
        return DiagStudentT(mu, scale, self.df)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        return self._q(*self.encoder_params(x, y))

    def prior(self, y: torch.Tensor | None = None, n: int | None = None) -> Distribution:
        """The sampling distribution t_m(mu_y, tau^2 I, nu + n) (mu_y = 0 for t3vae)."""
        p = next(self.parameters())
        loc = self.centre_of(y)
        if not torch.is_tensor(loc):
            loc = p.new_zeros(n or (len(y) if y is not None else 1), self.config.latent_dim)
        return DiagStudentT(loc, torch.full_like(loc, self.default_tau), self.df)

    def nll(self, x, logits):
        return gaussian_nll(x, torch.sigmoid(logits), math.log(self.config.sigma)), {}

    def kl(self, q, z, y=None):
        """log q(z|x) - log p(z[|y]) at the sample z: a one-sample KL to the sampling prior (not the objective)."""
        return q.log_prob(z) - self.prior(y, len(z)).log_prob(z)

    def kl_per_dim(self, q, y=None):
        return None  # one shared mixing variable: the KL does not factorise over dimensions

    def item_terms(self, x, y=None, extras=None):
        """loss = rec + beta * reg per item, reg = R / 2 (SPEC section 3), z reparameterised with one chi-square
        draw per item."""
        mu, log_var = self.encoder_params(x, y)  # (B, m) each
        z = self._q(mu, log_var).rsample()
        logits = self.decode(z, y)
        rec, _ = self.nll(x, logits)
        reg = 0.5 * t3_regulariser(mu, log_var, self.t3, self.centre_of(y))
        mse = (self.mean_image(logits).detach() - x).pow(2).flatten(1).mean(1)
        return {"loss": rec + self.config.beta * reg, "rec": rec, "reg": reg, "mse": mse}

    def prior_noise(self, n, generator=None):
        """(n, m + 1): eps ~ N(0, I_m) and, in the last column, sqrt((nu+n)/v) with one v ~ chi2(nu+n) per sample."""
        eps = torch.randn(n, self.config.latent_dim, generator=generator)
        return torch.cat([eps, chi2_mixing(n, self.df, generator)], dim=1)

    def prior_latents(self, noise, y=None, tau=None):
        tau = self.default_tau if tau is None else tau
        eps, w = noise[:, :-1], noise[:, -1:]
        return self.centre_of(y) + tau * eps * w

    def family_numbers(self) -> dict[str, float]:
        return {"nu": self.t3.nu, "gamma": self.t3.gamma, "tau2_default": self.t3.tau2, "tau": self.default_tau}


class CT3VAE(ClassCentres, T3VAE):
    def __init__(self, config: CT3VAEConfig):
        super().__init__(config)
        self.centre_unit = self.default_tau  # the tau the run samples with (the theoretical one unless set)
        self._init_centres()


class CGVAE(ClassCentres, CVAE):
    def __init__(self, config: CGVAEConfig):
        super().__init__(config)
        self._init_centres()

    def prior(self, y=None, n=None):
        loc = self.centre_of(y)  # (B, m)
        return Independent(Normal(loc, torch.ones_like(loc), validate_args=False), 1, validate_args=False)

    def kl_per_dim(self, q, y=None):
        """KL(N(mu, s^2) || N(mu_y, 1)) per dimension: the standard-normal KL at mu - mu_y."""
        return kl_std_normal_per_dim(q.base_dist.loc - self.centre_of(y), torch.log(q.base_dist.scale))
