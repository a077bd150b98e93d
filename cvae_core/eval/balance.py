"""Class balance of a model's samples on long-tailed data (SPEC sections 3 and 4). No UI code.

The question the Class balance page asks: draw N samples from a run, let the in-project classifier say which digit
each one is, and compare the per-class shares with the training set's. A Gaussian VAE trained on MNIST-LT with a
strong imbalance (rho = 100) reproduces the long tail: its samples almost never show the rare digits. A
Conditional-t3VAE (arXiv:2509.02154) draws the class first, with equal weights 1/K, then z = mu_y + tau * eps *
sqrt((nu+n)/v) around that class's centre, so every digit comes out equally often; nu sets how heavy the tails of
q and of the sampling prior are, tau how far samples stray from their class centre.

- ``draw``: N samples at (tau, weighting, seed) with their asked classes (class-conditional runs) and the
  classifier's predicted classes (of the 8-bit images, as shown) and per-class counts. Noise and classes come
  from private seeded generators, so a tau move changes the images and nothing else, and a training thread's
  global random stream is never touched.
- ``grid_order``: which of the N samples fill a K-row grid (row k: class k asked, or predicted for unconditional
  models), so the grid shows the very samples the counts are made of.
- The runs of the nu sweep are listed by ``runs.catalog`` (``nu_sweep``, ``default_pair``); a ct3vae at a new nu
  is trained by ``runs.setup.build_run`` and ``jobs.TrainingJob`` like any other run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from cvae_core.errors import ConfigError
from cvae_core.eval.samples import class_counts
from cvae_core.models.base import LatentModel

HEAD, TAIL = (0, 1, 2), (7, 8, 9)  # MNIST-LT's most and least frequent digits: n_k = n_max * rho^(-k/9)
SCARCE = 0.2  # a class is scarce in a set of samples below this fraction of an equal share 1/K


# ------------------------------------------------------------------ samples and counts
@dataclass
class Draw:
    """N samples of one run at one (tau, weighting, seed) and what the classifier makes of them."""

    images: torch.Tensor  # (N, C, H, W) uint8
    asked: np.ndarray | None  # (N,) the class each sample was drawn for; None for unconditional runs
    predicted: np.ndarray  # (N,) the classifier's class
    counts: np.ndarray  # (K,) how many samples the classifier puts in each class


def shares(counts) -> np.ndarray:
    """Counts (K,) -> fractions summing to 1 (zeros for no counts)."""
    c = np.asarray(counts, dtype=np.float64)
    return c / max(c.sum(), 1.0)


@torch.no_grad()
def draw(model: LatentModel, classifier, n: int, tau: float | None = None, weighting: str = "equal", seed: int = 0,
         batch_size: int = 500) -> Draw:
    """n samples of `model` at sampling scale `tau` (None: the model's ``default_tau``) and their classes.

    Class-conditional models draw their classes with ``sample_classes(n, weighting)`` ("equal": 1/K each, the
    mixture sampler of SPEC section 3; "frequency": the training frequencies). Unconditional models have no class
    to weight, so `weighting` does not change their samples. Classes come from ``Generator(seed + 1)`` and prior
    noise from ``Generator(seed)``, so changing tau or weighting keeps the other draw fixed."""
    if n < 1:
        raise ConfigError(f"the number of samples must be >= 1 (got {n})")
    if tau is not None and not (tau >= 0 and math.isfinite(tau)):
        raise ConfigError(f"tau must be a finite number >= 0 (got {tau})")
    K = model.config.num_classes
    asked = None
    if model.class_conditional:
        asked = model.sample_classes(n, weighting, generator=torch.Generator().manual_seed(seed + 1))  # (n,)
    elif weighting not in ("equal", "frequency"):
        raise ConfigError(f"weighting must be 'equal' or 'frequency' (got {weighting!r})")
    noise = model.prior_noise(n, generator=torch.Generator().manual_seed(seed))  # (n, m) or (n, m + 1)
    images, preds = [], []
    for i in range(0, n, batch_size):
        y = None if asked is None else asked[i : i + batch_size]
        x = model.sample(len(noise[i : i + batch_size]), y, tau=tau, eps=noise[i : i + batch_size])  # (b, C, H, W)
        u8 = (x.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()  # the images as shown
        images.append(u8)
        preds.append(classifier.predict(u8))
    predicted = torch.cat(preds).numpy()
    return Draw(torch.cat(images), None if asked is None else asked.numpy(), predicted, class_counts(predicted, K))


def grid_order(rows: np.ndarray, K: int, per_row: int) -> list[list[int]]:
    """For each class k (a grid row), the indices of the first `per_row` samples whose row label is k (the class
    asked for, or the one the classifier sees): rows of rare classes stay short, as they are in the N samples."""
    rows = np.asarray(rows)
    return [np.flatnonzero(rows == k)[:per_row].tolist() for k in range(K)]


def scarce(shares_, fraction: float = SCARCE) -> list[int]:
    """Classes whose share is below `fraction` / K: the digits a model almost never shows."""
    s = np.asarray(shares_, dtype=np.float64)
    return np.flatnonzero(s < fraction / len(s)).tolist()


def group_share(shares_, classes) -> float:
    """Summed share of a group of classes (e.g. HEAD or TAIL)."""
    return float(np.asarray(shares_, dtype=np.float64)[list(classes)].sum())
