"""The simplex-witness certificate's mathematics and its teacher (SPEC section 5; "A Simplex Witness Certificate for
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
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from cvae_core.data import default_data_root
from cvae_core.errors import CheckpointError, ConfigError
from cvae_core.integrity import check_hash, recorded_hashes, safetensors_problem


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
    float64, bit for bit the same on every machine.

    Closed form: v_k = sqrt(k/(k-1)) (e_k - 1/k) written in the Helmert basis of the sum-zero subspace,
    h_j = (1, ..., 1, -j, 0, ..., 0) / sqrt(j (j+1)) (j ones), so V[i, j-1] = sqrt(k/(k-1)) h_j[i]. Only
    correctly rounded scalar operations (IEEE division and square root), no matrix routine: an SVD of the centred
    one-hot matrix, used before, is not unique (its k-1 singular values are all 1), and LAPACK builds on two CPUs
    returned two rotations of the simplex, so one model had two different certificates."""
    if k < 2:
        raise ConfigError(f"a simplex needs k >= 2 vertices (got {k})")
    scale = math.sqrt(k / (k - 1))
    rows = []
    for i in range(k):
        row = []
        for j in range(1, k):
            h = 1.0 if i < j else (-float(j) if i == j else 0.0)
            row.append(scale * h / math.sqrt(j * (j + 1)))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def legacy_simplex_vectors(k: int) -> torch.Tensor:
    """The witness of runs saved before the closed form (format 1 RST-VAE runs without a ``witness`` tensor): the
    left singular vectors of the centred one-hot matrix, as this machine's LAPACK returns them. Reproduces such a
    run's witness only on a machine like the one it was trained on; ``simplex_vectors`` is the witness now."""
    e = torch.eye(k, dtype=torch.float64) - 1.0 / k  # centred one-hot vectors, rank k - 1
    u, _, _ = torch.linalg.svd(e.T, full_matrices=False)
    v = e @ u[:, : k - 1]
    return v / v.norm(dim=1, keepdim=True)


TEACHER_TENSORS = ("pca_mean", "pca_components", "log_weights", "means", "prec_chol", "t_bar")


@dataclass
class Teacher:
    """The fitted PCA-GMM teacher, as plain tensors (float64): PCA mean (n,) and components (d, n); mixture log
    weights (K,), means (K, d) and precision Cholesky factors (K, d, d); Tbar (K,) over the training images.
    ``identity`` is a hash of the settings and the tensors: two teachers with one identity give the same T(x)."""

    config: CertificateConfig
    pca_mean: torch.Tensor
    pca_components: torch.Tensor
    log_weights: torch.Tensor
    means: torch.Tensor
    prec_chol: torch.Tensor
    t_bar: torch.Tensor

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).detach().to("cpu", torch.float64).contiguous() for k in TEACHER_TENSORS}

    @property
    def identity(self) -> str:
        h = hashlib.sha256(json.dumps(asdict(self.config), sort_keys=True).encode())
        for k, v in self.tensors().items():
            h.update(f"{k}{tuple(v.shape)}".encode())
            h.update(v.numpy().astype("<f8").tobytes())
        return h.hexdigest()[:16]

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
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731  the layout of a read-back file: same BLAS path
    teacher = Teacher(config, t(pca.mean_), t(pca.components_), t(np.log(gmm.weights_)), t(gmm.means_),
                      t(gmm.precisions_cholesky_), torch.zeros(config.K, dtype=torch.float64))
    teacher.t_bar = teacher.probs(x_train[idx]).mean(0)
    return teacher


# ------------------------------------------------------------------ where a teacher comes from
# A run's certificate must not depend on the machine it is shown on, so a teacher is never re-fitted for a run that
# has one: RST-VAE carries its teacher as buffers (``own_teacher``), and the teachers of the data sets behind the
# shipped runs are shipped in checkpoints/teachers/<data set>/teacher.safetensors. Only a data set with neither is
# fitted here, once, and cached under the data root. Every certificate records the identity of its teacher.
SHIPPED_TEACHERS = Path(__file__).resolve().parents[1] / "checkpoints" / "teachers"
TEACHER_FILE = "teacher.safetensors"


def save_teacher(path: str | Path, teacher: Teacher, dataset: str, n_train: int) -> Path:
    """Write a teacher (float64 tensors, with its data set, training-set size, settings and identity as metadata)
    to a safetensors file, atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": dataset, "n_train": str(int(n_train)), "config": json.dumps(asdict(teacher.config),
            sort_keys=True), "identity": teacher.identity, "format": "1"}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        save_file(teacher.tensors(), str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def teacher_metadata(path: str | Path) -> dict | None:
    """A teacher file's metadata (dataset, n_train, config, identity), or None if it is not a readable one."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None
    return meta if {"dataset", "n_train", "config", "identity"} <= set(meta) else None


def read_teacher(path: str | Path) -> Teacher:
    """The teacher in a file written by ``save_teacher``; its tensors must hash to the identity it records, and the
    file to the SHA-256 that a ``teacher.json`` beside it records (the shipped teachers have one:
    ``scripts/record_hashes.py``). A pickle or a truncated file is refused before anything is read."""
    path = Path(path)
    problem = safetensors_problem(path)
    if problem:
        raise CheckpointError(f"{path} is damaged or not a teacher file ({problem})")
    record = path.with_suffix(".json")  # teacher.safetensors -> teacher.json
    check_hash(path, recorded_hashes(record), record)
    meta = teacher_metadata(path)
    if meta is None:
        raise CheckpointError(f"{path} is not a teacher file (safetensors with the teacher's metadata)")
    try:
        state = load_file(str(path), device="cpu")
        teacher = Teacher(CertificateConfig(**json.loads(meta["config"])), **{k: state[k] for k in TEACHER_TENSORS})
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is a damaged teacher file ({type(e).__name__}: {e})") from None
    if teacher.identity != meta["identity"]:
        raise CheckpointError(f"{path}: its tensors hash to {teacher.identity}, not to the recorded "
                              f"{meta['identity']} (the file was changed)")
    return teacher


def _matches(meta: dict | None, data, config: CertificateConfig) -> bool:
    return (meta is not None and meta["dataset"] == data.name and meta["n_train"] == str(len(data.x_train))
            and json.loads(meta["config"]) == asdict(config))


def _cache_path(data, config: CertificateConfig, root: str | Path | None) -> Path:
    """Where a data set's locally fitted teacher is cached: under the data root, keyed by its name, size and the
    config."""
    key = hashlib.sha1(json.dumps([data.name, len(data.x_train), asdict(config)], sort_keys=True).encode()
                       ).hexdigest()[:12]
    return Path(root or default_data_root()) / "certificate" / f"{data.name}-{key}.safetensors"


def shipped_teacher_path(data, config: CertificateConfig = CertificateConfig()) -> Path | None:
    """The shipped teacher file for this data set (same name and training-set size) and settings, if there is one."""
    for path in sorted(SHIPPED_TEACHERS.glob(f"*/{TEACHER_FILE}")):
        if _matches(teacher_metadata(path), data, config):
            return path
    return None


def teacher_source(data, config: CertificateConfig = CertificateConfig(), root: str | Path | None = None) -> str:
    """Where ``load_or_fit_teacher`` will take the teacher from: "shipped", "cached" or "fit" (a UI says so)."""
    if shipped_teacher_path(data, config) is not None:
        return "shipped"
    return "cached" if _matches(teacher_metadata(_cache_path(data, config, root)), data, config) else "fit"


def load_or_fit_teacher(data, config: CertificateConfig = CertificateConfig(), root: str | Path | None = None
                        ) -> Teacher:
    """The teacher of a data set: the shipped one when checkpoints/teachers has it (every machine then uses the same
    teacher), else the one fitted here once and cached (atomically) under the data root, keyed by the data set's
    name, size and the certificate config."""
    shipped = shipped_teacher_path(data, config)
    if shipped is not None:
        return read_teacher(shipped)
    path = _cache_path(data, config, root)
    with _FIT_LOCKS_LOCK:
        lock = _FIT_LOCKS.setdefault(path, threading.Lock())
    with lock:  # two threads asking for the same teacher (a model's setup, a live certificate) fit it once
        if _matches(teacher_metadata(path), data, config):
            try:
                return read_teacher(path)
            except CheckpointError:
                pass  # a damaged cache is fitted again
        return _fit_and_cache(data, config, path)


_FIT_LOCKS: dict[Path, threading.Lock] = {}
_FIT_LOCKS_LOCK = threading.Lock()


def _fit_and_cache(data, config: CertificateConfig, path: Path) -> Teacher:
    n = min(config.max_fit, len(data.x_train))
    print(f"fitting the certificate's teacher (PCA {config.pca_dim}, {config.K}-component mixture) on {n:,} "
          f"{data.name} images, once per data set (about 30 s for 60k)", file=sys.stderr, flush=True)
    teacher = fit_teacher(data.x_train, config)
    save_teacher(path, teacher, data.name, len(data.x_train))
    return teacher


def find_teacher(identity: str, root: str | Path | None = None) -> Teacher | None:
    """The teacher with this identity among the shipped teachers and this machine's cache, or None."""
    for path in (*sorted(SHIPPED_TEACHERS.glob(f"*/{TEACHER_FILE}")),
                 *sorted((Path(root or default_data_root()) / "certificate").glob("*.safetensors"))):
        meta = teacher_metadata(path)
        if meta is not None and meta["identity"] == identity:
            return read_teacher(path)
    return None


def teacher_of(model, data, recorded: str | None = None, root: str | Path | None = None) -> tuple[Teacher, str]:
    """The teacher a model's certificate is computed with, and a warning ("" when none): a model that carries its
    teacher (RST-VAE) uses it; else the teacher whose identity the run recorded (`recorded`, from its metrics.json),
    found among the shipped teachers and the cache; else the data set's (``load_or_fit_teacher``). A recorded teacher
    that is nowhere to be found gives the data set's with a warning that the numbers may differ from the recorded."""
    own = getattr(model, "own_teacher", None)
    if callable(own):
        return own(), ""
    cfg = config_of(model)
    if recorded:
        found = find_teacher(recorded, root)
        if found is not None and found.config == cfg:
            return found, ""
    teacher = load_or_fit_teacher(data, cfg, root)
    if recorded and teacher.identity != recorded:
        return teacher, (f"this run was scored with teacher {recorded}, which is neither shipped nor cached here; "
                         f"using {data.name}'s teacher {teacher.identity}, so its certificate may differ from the "
                         "recorded one")
    return teacher, ""


# ------------------------------------------------------------------ the witness and the certificate
def check_latent(m: int, K: int) -> None:
    if m < K - 1:
        raise ConfigError(f"the certificate needs latent_dim >= K - 1 = {K - 1} witness coordinates (got {m})")


def witness_log_probs(mu: torch.Tensor, K: int, gain: float, witness: torch.Tensor | None = None) -> torch.Tensor:
    """log S(x) = log softmax(gain V P mu(x)) for encoder means mu (N, m): (N, K), in mu's dtype. `witness`: V
    (K, K-1), by default ``simplex_vectors(K)`` (a run that carries its own passes it: ``witness_of``)."""
    check_latent(mu.shape[1], K)
    V = (simplex_vectors(K) if witness is None else witness).to(mu)  # (K, K-1)
    return torch.log_softmax(gain * mu[:, : K - 1] @ V.T, dim=1)


def own_witness(model) -> torch.Tensor | None:
    """A model's own witness directions (RST-VAE keeps them in a buffer), float64 on the CPU; None for the others."""
    own = getattr(model, "witness", None)
    return own.detach().to("cpu", torch.float64) if isinstance(own, torch.Tensor) else None


def witness_of(model) -> torch.Tensor:
    """The witness directions V a model is judged by: its own, else the simplex of its certificate's K."""
    own = own_witness(model)
    return own if own is not None else simplex_vectors(config_of(model).K)


def kl_rows(t: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """KL(t_i || s_i) per row, (N,): sum_k t log t - t log s."""
    return (t * (torch.log(t) - log_s)).sum(1)


def certificate(t: torch.Tensor, mu: torch.Tensor, t_bar: torch.Tensor, gain: float,
                witness: torch.Tensor | None = None) -> dict[str, float]:
    """IT, LTS and GT = IT - LTS (nats) for teacher probabilities t (N, K) and encoder means mu (N, m).

    GT > 0 is a proof that mu is not constant on these N images when `t_bar` is the mean of `t` itself (what the
    callers here pass): then no constant witness beats IT on them (Gibbs). With another Tbar (the training set's) a
    constant can win by up to KL(mean of t || Tbar) on a small sample: about 0.01 nats on 50 test images."""
    t = t.to(torch.float64)
    K = t.shape[1]
    it = kl_rows(t, torch.log(t_bar.to(t)).expand_as(t)).mean()
    lts = kl_rows(t, witness_log_probs(mu.to(torch.float64), K, gain, witness)).mean()
    return {"IT": float(it), "LTS": float(lts), "GT": float(it - lts)}


def log_odds(t: torch.Tensor) -> torch.Tensor:
    """l(x) = log T(x) - mean_k log T_k(x), (N, K)."""
    lt = torch.log(t)
    return lt - lt.mean(1, keepdim=True)


def analytic_code(t: torch.Tensor, m: int, gain: float, witness: torch.Tensor | None = None) -> torch.Tensor:
    """mu*(x) = P^T ((K-1)/(K gain)) sum_k l_k(x) v_k, (N, m): the encoder means whose witness reproduces T exactly."""
    K = t.shape[1]
    check_latent(m, K)
    V = (simplex_vectors(K) if witness is None else witness).to(torch.float64)
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



def simplex_plane(K: int, witness: torch.Tensor | None = None) -> torch.Tensor:
    """A (2, K-1) linear map that sends witness direction v_k to the k-th vertex (cos 2 pi k/K, sin 2 pi k/K) of a
    regular K-gon: A = ((K-1)/K) C^T V, exact because V^T V = (K/(K-1)) I - (1/(K-1)) 1 1^T and sum_k C_k = 0.
    Projects the witness coordinates P mu(x) of encoder means to a picture in which each direction is a vertex.
    `witness`: V (K, K-1) when a model has its own (``witness_of``), else the simplex."""
    angles = 2 * math.pi * torch.arange(K, dtype=torch.float64) / K
    C = torch.stack([angles.cos(), angles.sin()], dim=1)  # (K, 2)
    return (K - 1) / K * C.T @ (simplex_vectors(K) if witness is None else witness.to(torch.float64))
