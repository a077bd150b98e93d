"""RST-VAE: a VAE trained with the simplex-witness loss (SPEC section 5; "A Simplex Witness Certificate for Constant
Collapse in VAEs", arXiv:2605.18224). The certificate itself (teacher, witness, IT/LTS/GT) is model-agnostic and
lives in ``cvae_core.eval.certificate``.

- ``rst_vae``: loss = rec + alpha_KL KL(q || N(0, I)) + lambda_TS LTS, with alpha_KL the config's ``beta`` and LTS
  the per-image KL(T(x) || S(mu(x))) between the fixed PCA-GMM teacher and the witness of the encoder mean. The
  teacher (``load_or_fit_teacher`` in ``setup``: the shipped one of the data set, else one fitted and cached here)
  and the witness directions are float64 buffers, never rounded to float16, so a saved run carries exactly what its
  certificate depends on and is certified the same on every machine; T(x) of a batch is computed on the training
  device. Bernoulli decoder by default (the paper's binarised-MNIST table; use the ``mnist-binary`` data set).
- ``rst_prefit``: the same, after a first phase that fits only the encoder to the witness (objective LTS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from cvae_core.models.base import Phase
from cvae_core.models.gaussian import LIKELIHOODS, VAE, VAEConfig
from cvae_core.witness import (
    TEACHER_TENSORS,
    CertificateConfig,
    Teacher,
    check_latent,
    kl_rows,
    legacy_simplex_vectors,
    load_or_fit_teacher,
    simplex_vectors,
    teacher_probs,
    witness_log_probs,
)


@dataclass
class RSTVAEConfig(VAEConfig):
    """vae with the witness loss; beta is alpha_KL, the KL weight (collapse stress: 2, 4, 8)."""

    likelihood: str = field(default="bernoulli", metadata={
        "help": '"gaussian" (fixed sigma) or "bernoulli" (the paper\'s binarised MNIST)', "choices": LIKELIHOODS})
    lambda_ts: float = field(default=1.0, metadata={"help": "weight of the witness loss LTS"})
    pca_dim: int = field(default=50, metadata={"help": "teacher: PCA components of the training pixels"})
    teacher_k: int = field(default=10, metadata={
        "help": "teacher: mixture components = witness directions (needs latent_dim >= K - 1)"})
    teacher_eps: float = field(default=0.05, metadata={"help": "teacher: label smoothing"})
    witness_gain: float = field(default=5.0, metadata={"help": "witness gain beta_w"})
    teacher_seed: int = field(default=0, metadata={"help": "teacher: the mixture's initialisation"})
    prefit_fraction: float = field(default=0.0, metadata={
        "help": "share of the steps that first fit only the encoder to the witness (rst_prefit)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.lambda_ts >= 0:
            raise ValueError(f"lambda_ts must be >= 0 (got {self.lambda_ts})")
        if not 0 <= self.prefit_fraction < 1:
            raise ValueError(f"prefit_fraction must be in [0, 1) (got {self.prefit_fraction})")
        self.certificate()  # K, pca_dim, eps and gain are checked there
        check_latent(self.latent_dim, self.teacher_k)

    def certificate(self) -> CertificateConfig:
        return CertificateConfig(pca_dim=self.pca_dim, K=self.teacher_k, eps=self.teacher_eps,
                                 gain=self.witness_gain, seed=self.teacher_seed)


@dataclass
class RSTPrefitConfig(RSTVAEConfig):
    prefit_fraction: float = field(default=0.1, metadata={
        "help": "share of the steps that first fit only the encoder to the witness"})


class RSTVAE(VAE):
    """vae + lambda_TS * LTS, with the teacher and the witness as float64 buffers."""

    def __init__(self, config: RSTVAEConfig):
        super().__init__(config)
        n, K = self.n_pixels, config.teacher_k
        d = min(config.pca_dim, n)
        f64 = {"dtype": torch.float64}
        # an unfitted teacher (before setup): every component the same, so T is uniform; setup replaces all of it
        self.register_buffer("pca_mean", torch.zeros(n, **f64))
        self.register_buffer("pca_components", torch.eye(d, n, **f64))
        self.register_buffer("log_weights", torch.full((K,), -math.log(K), **f64))
        self.register_buffer("means", torch.zeros(K, d, **f64))
        self.register_buffer("prec_chol", torch.eye(d, **f64).expand(K, d, d).clone())
        self.register_buffer("t_bar", torch.full((K,), 1.0 / K, **f64))
        self.register_buffer("witness", simplex_vectors(K))  # (K, K-1): fixed, saved so that the run carries it

    def setup(self, data) -> None:
        """Take the data set's teacher (shipped, cached, or fitted once here) into the buffers."""
        teacher = load_or_fit_teacher(data, self.config.certificate())
        for name in TEACHER_TENSORS:
            buf = getattr(self, name)
            buf.copy_(getattr(teacher, name).to(buf.dtype))

    def own_teacher(self) -> Teacher:
        """The teacher this model was trained against (its buffers), for its certificate."""
        return Teacher(self.config.certificate(), **{k: getattr(self, k).detach().to("cpu", torch.float64)
                                                     for k in TEACHER_TENSORS})

    def upgrade_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A run saved before the witness was a buffer (format 1) has none: it was trained against the SVD basis of
        the simplex, which only the LAPACK of a machine like its own reproduces (``legacy_simplex_vectors``)."""
        if "witness" not in state and "pca_mean" in state:
            state = {**state, "witness": legacy_simplex_vectors(self.config.teacher_k)}
        return state

    def teacher(self, x: torch.Tensor) -> torch.Tensor:
        """T(x) for a batch of model inputs x (B, C, H, W) in [0, 1]: (B, K), computed in float64 and returned in
        x's dtype."""
        return teacher_probs(x.flatten(1).to(self.pca_mean.dtype), self.pca_mean, self.pca_components,
                             self.log_weights, self.means, self.prec_chol, self.config.teacher_eps).to(x.dtype)

    def extra_terms(self, x, q, rec, y):
        """``lts``: KL(T(x) || S(mu(x))) per image; ``penalty`` = lambda_TS * lts, which joins the loss."""
        cfg = self.config
        mu = q.base_dist.loc
        lts = kl_rows(self.teacher(x).to(mu.dtype),
                      witness_log_probs(mu, cfg.teacher_k, cfg.witness_gain, self.witness))
        return {"lts": lts, "penalty": cfg.lambda_ts * lts}

    def phases(self) -> list[Phase]:
        f = self.config.prefit_fraction
        if f == 0:
            return [Phase("train")]
        return [Phase("prefit", f, ("encoder", "enc_head"), "lts"), Phase("train", 1 - f)]
