"""Student-t pieces of the t3VAE family (SPEC section 3) as torch.distributions objects and pure functions.

- ``DiagStudentT``: the multivariate Student-t t_m(loc, diag(scale^2), df) with ONE chi-square mixing variable per
  sample shared across the m latent dimensions (so the dimensions are dependent, unlike m independent
  ``torch.distributions.StudentT``), reparameterised as z = loc + scale * eps * sqrt(df / v), v ~ chi2(df).
- ``t3_constants``: gamma, B, tt2 (the optimal encoder scale), Cbar and tau^2 (the sampling scale), in float64.
- ``t3_regulariser``: the gamma-power regulariser R of the official t3VAE code (Mincheol2/t3VAE), R >= 0 with
  R = 0 at mu = centre, Sigma = tt2 I.

References: Kim, Kwon, Kim, Lee, Kim, Park, "t3-Variational Autoencoder: Learning Heavy-tailed Data with Student's
t and Power Divergence", ICLR 2024, arXiv:2312.01133; Conditional-t3VAE, arXiv:2509.02154.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Chi2, Distribution, constraints


def log_student_constant(nu: float, d: int) -> float:
    """log C(nu, d) = lgamma((nu+d)/2) - lgamma(nu/2) - (d/2) log(nu pi): the normaliser of t_d(0, I, nu)."""
    return math.lgamma((nu + d) / 2) - math.lgamma(nu / 2) - 0.5 * d * math.log(nu * math.pi)


@dataclass(frozen=True)
class T3Constants:
    """The float64 constants of t3VAE for nu > 2, n data dimensions, m latent dimensions, decoder scale sigma."""

    nu: float
    n: int
    m: int
    sigma: float
    gamma: float  # -2 / (nu + m + n), the power of the gamma-power divergence
    log_B: float  # -n log sigma + log C(nu, n) + log(nu - 2) - log(nu + n - 2)
    tt2: float  # B^(2 / (nu + n - 2)): the encoder covariance Sigma at which R is 0
    Cbar: float  # (1 + m / (nu + n - 2)) * B^(2 / (nu + m + n - 2))
    tau2: float  # (nu / (nu + n)) * tt2: the theoretical sampling scale tau^2

    @property
    def tau(self) -> float:
        return math.sqrt(self.tau2)


# t3VAE's regulariser cancels terms of size nu: in float32 it is off by 0.06% at nu = 1e4, 0.4% at 1e5, 5% at 1e6
NU_MAX = 1e4


def check_nu(nu: float) -> None:
    if not (isinstance(nu, (int, float)) and math.isfinite(nu) and nu > 2):
        raise ValueError(f"nu must be a number > 2 (the Student-t variance and t3VAE's constants need nu > 2; "
                         f"got {nu})")
    if nu > NU_MAX:
        raise ValueError(f"nu must be a number > 2 and at most {NU_MAX:g} (beyond, t3VAE's regulariser cancels terms "
                         f"of size nu past float32's precision; got {nu:g})")


def t3_constants(nu: float, n: int, m: int, sigma: float = 1.0) -> T3Constants:
    check_nu(nu)
    log_B = (-n * math.log(sigma) + log_student_constant(nu, n) + math.log(nu - 2) - math.log(nu + n - 2))
    tt2 = math.exp(2 * log_B / (nu + n - 2))
    Cbar = (1 + m / (nu + n - 2)) * math.exp(2 * log_B / (nu + m + n - 2))
    return T3Constants(nu=float(nu), n=n, m=m, sigma=float(sigma), gamma=-2 / (nu + m + n), log_B=log_B, tt2=tt2,
                       Cbar=Cbar, tau2=nu / (nu + n) * tt2)


def tau2_limit(sigma: float = 1.0) -> float:
    """The high-dimensional limit of tau^2 as n -> infinity: 1 / (2 pi e sigma^2) ~= 0.0585 / sigma^2."""
    return 1.0 / (2 * math.pi * math.e * sigma**2)


def t3_regulariser(mu: torch.Tensor, log_var: torch.Tensor, c: T3Constants,
                   centre: torch.Tensor | float = 0.0) -> torch.Tensor:
    """R per item (B,) from the encoder's mu (B, m) and log Sigma (B, m) (official t3VAE code, SPEC section 3):
    R = ||mu - centre||^2 + (nu / (nu+n-2)) tr(Sigma) - nu Cbar det(Sigma)^(1/(nu+m+n-2)) + nu tt2.
    The last two terms nearly cancel (each ~ nu tt2): call it in float64 where R itself must be exact."""
    nu, n, m = c.nu, c.n, c.m
    sq = (mu - centre).pow(2).sum(-1)
    trace = log_var.exp().sum(-1)
    det_pow = torch.exp(log_var.sum(-1) / (nu + m + n - 2))
    return sq + nu / (nu + n - 2) * trace - nu * c.Cbar * det_pow + nu * c.tt2


class DiagStudentT(Distribution):
    """t_m(loc, diag(scale^2), df): z = loc + scale * eps * sqrt(df / v), eps ~ N(0, I_m), one v ~ chi2(df) per
    sample shared by the m dimensions. batch_shape = loc.shape[:-1], event_shape = (m,)."""

    arg_constraints = {"loc": constraints.real_vector, "scale": constraints.independent(constraints.positive, 1)}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, df: float):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        self.df = float(df)
        super().__init__(self.loc.shape[:-1], self.loc.shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc  # df > 1

    @property
    def variance(self) -> torch.Tensor:
        return self.scale.pow(2) * (self.df / (self.df - 2)) if self.df > 2 else torch.full_like(self.scale, math.inf)

    def mixing(self, shape: torch.Size) -> torch.Tensor:
        """sqrt(df / v), v ~ chi2(df), one per sample: shape (*shape, 1)."""
        v = Chi2(torch.tensor(self.df, dtype=self.loc.dtype, device=self.loc.device)).sample((*shape, 1))
        return torch.sqrt(self.df / v)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        eps = torch.randn(shape + self.event_shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + self.scale * eps * self.mixing(shape)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        m, df = self.event_shape[0], self.df
        maha = ((z - self.loc) / self.scale).pow(2).sum(-1)
        return (log_student_constant(df, m) - torch.log(self.scale).sum(-1)
                - 0.5 * (df + m) * torch.log1p(maha / df))


def chi2_mixing(n: int, df: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """sqrt(df / v) for n draws v ~ chi2(df), (n, 1), on the CPU. With `generator`, v is drawn from a private
    generator seeded from it, so the global random stream (a training thread's, or CUDA's) is never touched; the
    draws are those ``Chi2(df).sample`` makes from a global stream seeded the same way (v = 2 Gamma(df/2, 1))."""
    if generator is None:
        v = Chi2(torch.tensor(float(df))).sample((n, 1))
    else:
        private = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        v = 2 * torch._standard_gamma(torch.full((n, 1), df / 2), generator=private)
        v = v.clamp_(min=torch.finfo(v.dtype).tiny)  # as torch's Gamma sampler does
    return torch.sqrt(df / v)


def simplex_centres(k: int, m: int, distance: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """k points in R^m with all pairwise distances equal to `distance` (a regular simplex centred at 0), randomly
    rotated; needs m >= k - 1. With fewer dimensions: k random directions of norm distance / sqrt(2) (the simplex's
    own radius is distance / sqrt(2) * sqrt((k-1)/k)), which keeps the points apart but not equidistant. (k, m)"""
    if k == 1:
        return torch.zeros(1, m)
    if m >= k - 1:
        e = torch.eye(k) - 1.0 / k  # k centred one-hot vectors: pairwise distance sqrt(2), rank k - 1
        basis = torch.linalg.qr(torch.randn(m, m, generator=generator))[0][:, : k - 1]  # (m, k-1) orthonormal
        u, _, _ = torch.linalg.svd(e.T, full_matrices=False)  # (k, k) columns spanning the simplex plane
        coords = e @ u[:, : k - 1]  # (k, k-1) isometric coordinates of the simplex
        return coords @ basis.T * (distance / math.sqrt(2))
    d = torch.randn(k, m, generator=generator)
    return d / d.norm(dim=1, keepdim=True) * (distance / math.sqrt(2))


def min_pairwise_distance(points: torch.Tensor) -> float:
    """Smallest distance between two different rows of (k, m); inf for one point."""
    if len(points) < 2:
        return math.inf
    d = torch.cdist(points.double(), points.double())
    return float(d[~torch.eye(len(points), dtype=torch.bool)].min())
