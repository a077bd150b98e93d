"""The simplex-witness certificate against constant collapse (SPEC section 5; "A Simplex Witness Certificate for
Constant Collapse in VAEs", arXiv:2605.18224). Model-agnostic: it reads only encoder means.

Fixed before training and never trained:
- the **teacher**: PCA of the training pixels (``pca_dim`` components), a Gaussian mixture with K components on
  them (seeded), responsibilities r(x) and the label-smoothed T(x) = (1 - eps) r(x) + eps / K; Tbar = E_x T(x) over
  the training set;
- the **witness**: K unit vectors V forming a regular simplex in R^(K-1), applied to the first K-1 latent
  coordinates P mu(x) with gain beta_w: S(x) = softmax(beta_w V P mu(x)).

Then LTS = E_x KL(T(x) || S(x)), IT = E_x KL(T(x) || Tbar) = H(Tbar) - E_x H(T(x)) and the margin GT = IT - LTS.
Any constant mu gives LTS >= IT (the best constant prediction is Tbar), so GT > 0 certifies that mu(x) depends on x.
The numbers here are computed on a set of images (test images, a tick's images) with Tbar the mean of T over that
same set, which makes the inequality exact on it; the training-set Tbar is kept with the teacher for reference.
It says nothing about sample quality, nor about the other latent dimensions. The analytic code
mu*(x) = P^T ((K-1)/(K beta_w)) sum_k l_k(x) v_k with l = log T - mean_k log T gives S = T exactly (LTS = 0) at the
latent energy (1/2) E||mu*||^2 = (K-1)/(2 K beta_w^2) E||l||^2.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError


@dataclass(frozen=True)
class CertificateConfig:
    pca_dim: int = 50  # PCA components of the training pixels the teacher's mixture is fitted on
    K: int = 10  # mixture components = witness directions; needs latent_dim >= K - 1
    eps: float = 0.05  # label smoothing of the teacher: T = (1 - eps) r + eps / K
    gain: float = 5.0  # witness gain beta_w
    seed: int = 0  # the mixture's initialisation
    max_fit: int = 60_000  # training images the teacher is fitted on (evenly spaced when there are more)

    def __post_init__(self) -> None:
        if self.K < 2 or self.pca_dim < 1:
            raise ConfigError(f"the certificate needs K >= 2 and pca_dim >= 1 (got K={self.K}, pca_dim={self.pca_dim})")
        if not 0 <= self.eps < 1 or not self.gain > 0:
            raise ConfigError(f"the certificate needs 0 <= eps < 1 and gain > 0 (got eps={self.eps}, gain={self.gain})")


def simplex_vectors(k: int) -> torch.Tensor:
    """k unit vectors in R^(k-1) forming a regular simplex: their sum is 0 and <v_j, v_k> = -1/(k-1). (k, k-1)
    float64, the same every time (no random rotation: the witness is fixed)."""
    e = torch.eye(k, dtype=torch.float64) - 1.0 / k  # centred one-hot vectors, rank k - 1
    u, _, _ = torch.linalg.svd(e.T, full_matrices=False)
    v = e @ u[:, : k - 1]  # (k, k-1) isometric coordinates
    return v / v.norm(dim=1, keepdim=True)


@dataclass
class Teacher:
    """The fitted PCA-GMM teacher, as plain tensors (float64): PCA mean (n,) and components (d, n); mixture log
    weights (K,), means (K, d) and precision Cholesky factors (K, d, d); Tbar (K,) over the training images."""

    config: CertificateConfig
    pca_mean: torch.Tensor
    pca_components: torch.Tensor
    log_weights: torch.Tensor
    means: torch.Tensor
    prec_chol: torch.Tensor
    t_bar: torch.Tensor

    def probs(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """T(x) for images x (N, C, H, W) (uint8, or floats in [0, 1]): (N, K) float64 on the CPU."""
        out = []
        for i in range(0, len(x), batch_size):
            b = x[i : i + batch_size].flatten(1).double().cpu()
            if x.dtype == torch.uint8:
                b = b / 255.0
            out.append(teacher_probs(b, self.pca_mean, self.pca_components, self.log_weights, self.means,
                                     self.prec_chol, self.config.eps))
        return torch.cat(out)


def teacher_probs(x: torch.Tensor, pca_mean: torch.Tensor, components: torch.Tensor, log_weights: torch.Tensor,
                  means: torch.Tensor, prec_chol: torch.Tensor, eps: float) -> torch.Tensor:
    """T(x) = (1 - eps) r(x) + eps / K for flattened images x (B, n) in [0, 1], in x's dtype and device: the PCA
    projection h (B, d), the mixture's Gaussian log-densities from its precision Cholesky factors, and the
    responsibilities r = softmax(log p + log weights). Models that carry the teacher as buffers call this."""
    h = (x - pca_mean) @ components.T  # (B, d)
    y = torch.einsum("bd,kde->bke", h, prec_chol) - torch.einsum("kd,kde->ke", means, prec_chol)  # L_k^T (h - m_k)
    log_det = torch.log(torch.diagonal(prec_chol, dim1=1, dim2=2)).sum(1)  # (K,)
    log_p = -0.5 * y.pow(2).sum(2) + log_det - 0.5 * h.shape[1] * math.log(2 * math.pi)  # (B, K)
    r = torch.softmax(log_p + log_weights, dim=1)
    return (1 - eps) * r + eps / len(log_weights)


def fit_teacher(x_train: torch.Tensor, config: CertificateConfig = CertificateConfig()) -> Teacher:
    """PCA of the training pixels, then a full-covariance Gaussian mixture on them (scikit-learn, seeded);
    Tbar = the mean of T over the same images."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    idx = torch.linspace(0, len(x_train) - 1, min(config.max_fit, len(x_train))).round().long()
    x = x_train[idx].flatten(1).double().numpy()
    if x_train.dtype == torch.uint8:
        x = x / 255.0
    pca = PCA(n_components=config.pca_dim, random_state=config.seed).fit(x)
    h = pca.transform(x)
    gmm = GaussianMixture(config.K, covariance_type="full", random_state=config.seed, reg_covar=1e-4,
                          max_iter=200).fit(h)
    t = torch.from_numpy
    teacher = Teacher(config, t(pca.mean_), t(pca.components_), t(np.log(gmm.weights_)), t(gmm.means_),
                      t(gmm.precisions_cholesky_), torch.zeros(config.K, dtype=torch.float64))
    teacher.t_bar = teacher.probs(x_train[idx]).mean(0)
    return teacher


def _cache_path(data, config: CertificateConfig, root: str | Path | None) -> Path:
    """Where a data set's teacher is cached: under the data root, keyed by its name, size and the config."""
    from .data import default_data_root

    key = hashlib.sha1(json.dumps([data.name, len(data.x_train), asdict(config)], sort_keys=True).encode()
                       ).hexdigest()[:12]
    return Path(root or default_data_root()) / "certificate" / f"{data.name}-{key}.npz"


def load_or_fit_teacher(data, config: CertificateConfig = CertificateConfig(), root: str | Path | None = None
                        ) -> Teacher:
    """The teacher of a data set, fitted once and cached on disk (atomically) under the data root, keyed by the
    data set's name, size and the certificate config."""
    path = _cache_path(data, config, root)
    with _FIT_LOCKS_LOCK:
        lock = _FIT_LOCKS.setdefault(path, threading.Lock())
    with lock:  # two threads asking for the same teacher (a model's setup, a live certificate) fit it once
        return _read_teacher(path, config) or _fit_and_cache(data, config, path)


_FIT_LOCKS: dict[Path, threading.Lock] = {}
_FIT_LOCKS_LOCK = threading.Lock()


def _read_teacher(path: Path, config: CertificateConfig) -> Teacher | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as f:
            arr = {k: torch.from_numpy(f[k]) for k in f.files}
        return Teacher(config, **arr)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged cache is fitted again


def teacher_is_cached(data, config: CertificateConfig = CertificateConfig(), root: str | Path | None = None) -> bool:
    return _cache_path(data, config, root).is_file()


def _fit_and_cache(data, config: CertificateConfig, path: Path) -> Teacher:
    n = min(config.max_fit, len(data.x_train))
    print(f"fitting the certificate's teacher (PCA {config.pca_dim}, {config.K}-component mixture) on {n:,} "
          f"{data.name} images, once per data set (about 30 s for 60k)", file=sys.stderr, flush=True)
    teacher = fit_teacher(data.x_train, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}.npz")
    np.savez(tmp, **{k: v.numpy() for k, v in asdict(teacher).items() if k != "config"})
    os.replace(tmp, path)
    return teacher


# ------------------------------------------------------------------ the witness and the certificate
def check_latent(m: int, K: int) -> None:
    if m < K - 1:
        raise ConfigError(f"the certificate needs latent_dim >= K - 1 = {K - 1} witness coordinates (got {m})")


def witness_log_probs(mu: torch.Tensor, K: int, gain: float) -> torch.Tensor:
    """log S(x) = log softmax(gain V P mu(x)) for encoder means mu (N, m): (N, K), in mu's dtype."""
    check_latent(mu.shape[1], K)
    V = simplex_vectors(K).to(mu)  # (K, K-1)
    return torch.log_softmax(gain * mu[:, : K - 1] @ V.T, dim=1)


def kl_rows(t: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """KL(t_i || s_i) per row, (N,): sum_k t log t - t log s."""
    return (t * (torch.log(t) - log_s)).sum(1)


def certificate(t: torch.Tensor, mu: torch.Tensor, t_bar: torch.Tensor, gain: float) -> dict[str, float]:
    """IT, LTS and GT = IT - LTS (nats) for teacher probabilities t (N, K) and encoder means mu (N, m).

    GT > 0 is a proof that mu is not constant on these N images when `t_bar` is the mean of `t` itself (what the
    callers here pass): then no constant witness beats IT on them (Gibbs). With another Tbar (the training set's) a
    constant can win by up to KL(mean of t || Tbar) on a small sample: about 0.01 nats on 50 test images."""
    t = t.to(torch.float64)
    K = t.shape[1]
    it = kl_rows(t, torch.log(t_bar.to(t)).expand_as(t)).mean()
    lts = kl_rows(t, witness_log_probs(mu.to(torch.float64), K, gain)).mean()
    return {"IT": float(it), "LTS": float(lts), "GT": float(it - lts)}


def log_odds(t: torch.Tensor) -> torch.Tensor:
    """l(x) = log T(x) - mean_k log T_k(x), (N, K)."""
    lt = torch.log(t)
    return lt - lt.mean(1, keepdim=True)


def analytic_code(t: torch.Tensor, m: int, gain: float) -> torch.Tensor:
    """mu*(x) = P^T ((K-1)/(K gain)) sum_k l_k(x) v_k, (N, m): the encoder means whose witness reproduces T exactly."""
    K = t.shape[1]
    check_latent(m, K)
    V = simplex_vectors(K).to(torch.float64)
    out = torch.zeros(len(t), m, dtype=torch.float64)
    out[:, : K - 1] = (K - 1) / (K * gain) * log_odds(t.to(torch.float64)) @ V
    return out


def energy_bound(t: torch.Tensor, gain: float) -> float:
    """(1/2) E||mu*||^2 = (K-1)/(2 K gain^2) E||l||^2: the latent energy the analytic code needs."""
    K = t.shape[1]
    return float((K - 1) / (2 * K * gain**2) * log_odds(t.to(torch.float64)).pow(2).sum(1).mean())


def config_of(model) -> CertificateConfig:
    """The certificate a model is judged by: its own teacher settings (RST-VAE), else the defaults."""
    own = getattr(model.config, "certificate", None)
    return own() if callable(own) else CertificateConfig()


def certificate_metrics(model, data, x: torch.Tensor, means: torch.Tensor, root: str | Path | None = None) -> dict:
    """The paper's table columns that read the encoder means of images `x` (N, C, H, W): IT, LTS, GT, the analytic
    code's energy bound and E||mu(x)||^2. A latent smaller than K - 1 gets ``certificate_skipped`` (one line)."""
    cfg = config_of(model)
    m = means.shape[1]
    if m < cfg.K - 1:
        return {"certificate_skipped": f"latent_dim {m} < K - 1 = {cfg.K - 1}: the witness needs {cfg.K - 1} "
                                       "latent coordinates"}
    teacher = load_or_fit_teacher(data, cfg, root)
    t = teacher.probs(x)
    out = certificate(t, means, t.mean(0), cfg.gain)  # Tbar of these images: an exact certificate on them
    out["energy"] = energy_bound(t, cfg.gain)
    out["mu_sq"] = float(means.double().pow(2).sum(1).mean())
    return out


class LiveCertificate:
    """A training callback: IT, LTS and GT each log tick, from the encoder means the tick already has
    (``on_means``; see ``jobs.TrainingJob`` and ``metrics.TickMeans``). The teacher is read from its cache or fitted
    in a background thread, so training never waits for it; ticks before it is ready record nothing. T(x) of the
    tick's images is computed once. ``status`` says in one line what the callback is doing (for a UI)."""

    def __init__(self, data, x: torch.Tensor, config: CertificateConfig = CertificateConfig(),
                 root: str | Path | None = None, background: bool = True, latent_dim: int | None = None):
        """`latent_dim`: the model's; a latent smaller than K - 1 makes the callback say so at once and skip the
        teacher (no fit, no cache read). Without it, the first tick's means tell."""
        self.config, self.error, self.unavailable = config, None, None
        self._t: torch.Tensor | None = None
        self._ready = threading.Event()
        if latent_dim is not None and latent_dim < config.K - 1:
            self.unavailable, self._status = self._too_small(latent_dim), "not needed"
            self._ready.set()
            return
        cached = teacher_is_cached(data, config, root)
        self._status = "reading the teacher" if cached else (
            f"fitting the teacher (PCA {config.pca_dim}, {config.K}-component mixture) on the training images, once "
            f"per data set (about 30 s for 60k); the curve starts when it is ready")

        def prepare() -> None:
            try:
                teacher = load_or_fit_teacher(data, config, root)
                self._t = teacher.probs(x)
                self._status = "ready"
            except Exception as e:  # shown, never raised into the training loop
                self.error = self._status = f"the certificate's teacher failed: {type(e).__name__}: {e}"
            finally:
                self._ready.set()

        if background:
            threading.Thread(target=prepare, name="cvae-teacher", daemon=True).start()
        else:
            prepare()

    def _too_small(self, m: int) -> str:
        return f"not available: the latent has {m} coordinates and the witness needs K - 1 = {self.config.K - 1}"

    @property
    def status(self) -> str:
        return self.unavailable or self._status

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def on_means(self, model, record: dict, means: torch.Tensor, labels) -> None:
        K = self.config.K
        if means.shape[1] < K - 1:
            self.unavailable = self._too_small(means.shape[1])
            return
        if self._t is None:
            return
        t = self._t[: len(means)]
        record.update(certificate(t, means, t.mean(0), self.config.gain))  # Tbar of the tick's images: exact


# ------------------------------------------------------------------ pictures (the Collapse certificate page)
def simplex_plane(K: int) -> torch.Tensor:
    """A (2, K-1) linear map that sends witness direction v_k to the k-th vertex (cos 2 pi k/K, sin 2 pi k/K) of a
    regular K-gon: A = ((K-1)/K) C^T V, exact because V^T V = (K/(K-1)) I - (1/(K-1)) 1 1^T and sum_k C_k = 0.
    Projects the witness coordinates P mu(x) of encoder means to a picture in which each direction is a vertex."""
    angles = 2 * math.pi * torch.arange(K, dtype=torch.float64) / K
    C = torch.stack([angles.cos(), angles.sin()], dim=1)  # (K, 2)
    return (K - 1) / K * C.T @ simplex_vectors(K)


@torch.no_grad()
def inspect(model, data, n: int = 1000, root: str | Path | None = None) -> dict:
    """What the page shows of one model: for the first n test images the teacher T (n, K), the witness S (n, K),
    the certificate numbers, active units, the encoder means on the simplex plane (n, 2), the teacher's argmax, and
    the plane point of the best constant code (the analytic code of Tbar, the mean of T over these images, whose
    witness is Tbar), and how often the witness's most likely component is the teacher's (``agreement``; a constant
    witness gets at most ``top_share``, the largest share of one top component). Raises ConfigError (one line) for a
    latent smaller than K - 1."""
    from .metrics import active_units, encoder_means

    cfg = config_of(model)
    check_latent(model.config.latent_dim, cfg.K)
    x = data.x_test[:n]
    cond = data.y_for(model, "test")[:n] if model.conditional else None
    means = encoder_means(model, x, cond).double()
    teacher = load_or_fit_teacher(data, cfg, root)
    t = teacher.probs(x)
    log_s = witness_log_probs(means, cfg.K, cfg.gain)
    A = simplex_plane(cfg.K)
    t_bar = t.mean(0)  # of these images, so that GT > 0 is exact on them
    const = analytic_code(t_bar[None], cfg.K - 1, cfg.gain)  # (1, K-1)
    return {**certificate(t, means, t_bar, cfg.gain), "au": active_units(means.float()),
            "t": t.numpy(), "s": log_s.exp().numpy(), "t_bar": t_bar.numpy(),
            "plane": (means[:, : cfg.K - 1] @ A.T).numpy(), "const": (const @ A.T)[0].numpy(),
            "component": t.argmax(1).numpy(), "labels": data.y_test[:n].numpy(), "K": cfg.K, "gain": cfg.gain,
            "agreement": float((log_s.argmax(1) == t.argmax(1)).double().mean()),
            "top_share": float(torch.bincount(t.argmax(1), minlength=cfg.K).max()) / len(t)}
