"""Conditional VAE with a learned normalizing-flow prior p(z|y) (SPEC section 2).

``flow_cvae``: the encoder, decoder and optimal shared decoder variance of ``sigma_cvae``, with the prior
N(0, I) replaced by a conditional flow: a prior encoder MLP(y) -> (mu_p(y), log sigma_p(y)) gives the base
u ~ N(mu_p, sigma_p^2), and z = f(u; y) through zuko's conditional RealNVP (affine couplings whose shift and scale
see y). log p(z|y) = log N(f^-1(z); mu_p, sigma_p^2) + log|det d f^-1 / dz|; the KL has no closed form, so it is
the one-sample Monte-Carlo estimate log q(z|x,y) - log p(z|y) at the reparameterised z the reconstruction used.
"Conditional Variational Autoencoders with Normalizing-Flow Priors for rare attribute combinations",
arXiv:2511.08946.

The two-stage variant (``two_stage=True``) trains as two phases over parameter groups: first the encoder and decoder
as ``sigma_cvae`` (KL to N(0, I)), then the prior alone by maximum likelihood on the encoder means
{(mu_q(x, y), y)} of the training images. Both variants start with the flow next to the identity and the base next
to N(0, I) (the last layers of the prior networks start 100x smaller than usual), so at step 0 they are about
``sigma_cvae``.

zuko's ``Flow(c)`` returns a ``NormalizingFlow`` distribution whose ``transform`` maps z to u (it is f^-1) and whose
base is ``self.base(c)``: a ``LazyDistribution`` returning ``DiagNormal(mu_p(c), sigma_p(c))`` is the conditional
base, the pattern of zuko's own tutorials. (Importing zuko switches off argument validation of every torch
distribution in the process; the models here build theirs with ``validate_args=False`` anyway.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
import zuko
from torch import nn
from torch.distributions import Distribution, Transform
from zuko.distributions import DiagNormal
from zuko.flows.coupling import GeneralCouplingTransform
from zuko.transforms import CouplingTransform

from cvae_core.models.base import Phase
from cvae_core.models.gaussian import SigmaCVAE, SigmaCVAEConfig, kl_std_normal_per_dim


@dataclass
class FlowCVAEConfig(SigmaCVAEConfig):
    """sigma_cvae with a conditional RealNVP prior p(z|y)."""

    flow_transforms: int = field(default=4, metadata={"help": "affine coupling layers of the RealNVP (>= 1)"})
    flow_hidden: int = field(default=64, metadata={
        "help": "width of the two hidden layers of each coupling network and of the prior encoder"})
    two_stage: bool = field(default=False, metadata={
        "help": "True: train as sigma_cvae with N(0, I), then fit the flow to the encoder means"})
    prior_fraction: float = field(default=0.25, metadata={
        "help": "two-stage: share of the training steps spent fitting the prior"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.latent_dim < 2:
            raise ValueError(f"a coupling flow needs latent_dim >= 2 (got {self.latent_dim})")
        if self.flow_transforms < 1:
            raise ValueError(f"flow_transforms must be >= 1 (got {self.flow_transforms})")
        if self.flow_hidden < 1:
            raise ValueError(f"flow_hidden must be >= 1 (got {self.flow_hidden})")
        if not 0 < self.prior_fraction < 1:
            raise ValueError(f"prior_fraction must be in (0, 1) (got {self.prior_fraction})")


class ConditionalDiagNormal(zuko.lazy.LazyDistribution):
    """The flow's base p(u|y) = N(mu_p(y), diag sigma_p(y)^2) from a prior-encoder MLP of the condition vector."""

    def __init__(self, cond_dim: int, latent_dim: int, hidden: int):
        super().__init__()
        self.net = zuko.nn.MLP(cond_dim, 2 * latent_dim, hidden_features=(hidden, hidden))
        _shrink_last_linear(self.net)  # about N(0, I) at initialisation

    def forward(self, c: torch.Tensor) -> Distribution:
        mu, log_sigma = self.net(c).chunk(2, dim=-1)  # (B, m) each
        return DiagNormal(mu, log_sigma.exp())


class _Coupling(GeneralCouplingTransform):
    """zuko's affine coupling, whose split indices are computed once per device instead of at every call: zuko 1.6's
    ``CouplingTransform`` runs ``mask.nonzero()`` twice each time ``flow(c)`` is built, a device-to-host sync per
    coupling and training step on CUDA. Same transformation, same parameters."""

    _idx: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, c: torch.Tensor | None = None) -> CouplingTransform:
        if self._idx is None or self._idx[0].device != self.mask.device:
            self._idx = (self.mask.nonzero().squeeze(-1), (~self.mask).nonzero().squeeze(-1))
        t = CouplingTransform.__new__(CouplingTransform)
        Transform.__init__(t)
        t.meta, (t.idx_a, t.idx_b) = partial(self.meta, c), self._idx
        return t


def _shrink_last_linear(module: nn.Module, factor: float = 0.01) -> None:
    """Scale the last layer's weights by `factor` and zero its bias (zuko's MLPs use their own Linear, not
    nn.Linear), so the module starts next to zero output. Not exactly zero: a zero last layer would leave every
    earlier layer without a gradient at the first step."""
    last = [m for m in module.modules() if isinstance(getattr(m, "weight", None), nn.Parameter)][-1]
    with torch.no_grad():
        last.weight.mul_(factor)
        last.bias.zero_()


class FlowCVAE(SigmaCVAE):
    """q(z|x,y) Gaussian, p(z|y) a conditional RealNVP over a learned Gaussian base, sigma-VAE likelihood."""

    closed_form_kl = False

    def __init__(self, config: FlowCVAEConfig):
        super().__init__(config)
        m, d, h = config.latent_dim, self.cond_dim, config.flow_hidden
        self.flow = zuko.flows.RealNVP(m, context=d, transforms=config.flow_transforms, hidden_features=(h, h))
        for t in self.flow.transform.transforms:
            t.__class__ = _Coupling  # split indices cached per device (no host sync per step)
            _shrink_last_linear(t.hyper)  # couplings next to the identity at initialisation
        self.flow.base = ConditionalDiagNormal(d, m, h)

    # --- the prior -------------------------------------------------------------------------------
    def prior(self, y: torch.Tensor | None = None, n: int | None = None) -> Distribution:
        """p(z|y), a zuko ``NormalizingFlow`` of batch shape (B,) and event shape (m,)."""
        return self.flow(self.condition_vector(y))

    def kl(self, q: Distribution, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """One-sample Monte-Carlo KL at the reparameterised z (B, m): log q(z|x,y) - log p(z|y), (B,)."""
        return q.log_prob(z) - self.prior(y).log_prob(z)

    def kl_per_dim(self, q: Distribution, y: torch.Tensor | None = None) -> None:
        return None  # a flow prior does not factorise over the latent dimensions

    def prior_latents(self, noise: torch.Tensor, y: torch.Tensor | None = None,
                      tau: float | None = None) -> torch.Tensor:
        """Standard-normal noise eps (n, m) -> z = f(mu_p(y) + tau sigma_p(y) eps; y): tau scales the base noise."""
        tau = self.default_tau if tau is None else tau
        p = self.prior(y)
        u = p.base.mean + tau * p.base.stddev * noise.to(p.base.mean.dtype)  # (n, m)
        return p.transform.inv(u)

    # --- the objective and the two-stage phases ----------------------------------------------------
    def extra_terms(self, x, q, rec, y):
        """The two-stage variant's phase objectives: ``loss_gauss`` (rec + beta KL to N(0, I), the first phase) and
        ``prior_nll`` (-log p(mu_q|y) at the detached encoder means, the second)."""
        if not self.config.two_stage:
            return {}
        mu, scale = q.base_dist.loc, q.base_dist.scale  # (B, m) each
        return {"loss_gauss": rec + self.config.beta * kl_std_normal_per_dim(mu, scale.log()).sum(-1),
                "prior_nll": -self.prior(y).log_prob(mu.detach())}

    def phases(self) -> list[Phase]:
        if not self.config.two_stage:
            return [Phase("train")]
        f = self.config.prior_fraction
        return [Phase("autoencoder", 1 - f, ("encoder", "enc_head", "decoder"), "loss_gauss"),
                Phase("prior", f, ("flow",), "prior_nll")]
