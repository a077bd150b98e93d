"""Long-tailed subsets (SPEC section 4): n_k = floor(n_max * rho^(-k/(K-1))) in class-index order."""

from __future__ import annotations

import math
import numbers

import numpy as np

from cvae_core.errors import DataError


def check_rho(rho: float) -> None:
    """The imbalance ratio (largest / smallest class) must be a finite number >= 1; one-line DataError."""
    # numbers.Real admits numpy scalars (np.int64 from a sweep, np.float32); bool is not a ratio
    if not (isinstance(rho, numbers.Real) and not isinstance(rho, bool) and math.isfinite(rho)) or rho < 1:
        raise DataError(f"imbalance ratio rho must be a number >= 1 (got {rho}); rho = 1 is the balanced set")


def long_tail_counts(n_max: int, rho: float, num_classes: int) -> list[int]:
    check_rho(rho)
    if num_classes < 2:
        raise DataError("a long-tailed set needs at least 2 classes")
    k = np.arange(num_classes)
    # float64 and a tiny slack so that exact powers (rho^0 = 1, rho^-1) are not floored one below
    return [int(math.floor(n_max * rho ** (-ki / (num_classes - 1)) + 1e-9)) for ki in k]


def long_tail_indices(labels: np.ndarray, rho: float, seed: int = 0, n_max: int | None = None) -> np.ndarray:
    """Indices of a seeded random subset per class with the long-tail counts; sorted ascending."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    per_class = [np.flatnonzero(labels == c) for c in classes]
    n_max = min(len(p) for p in per_class) if n_max is None else n_max
    if n_max > min(len(p) for p in per_class):
        raise DataError(f"n_max={n_max} exceeds the smallest class ({min(len(p) for p in per_class)} items)")
    counts = long_tail_counts(n_max, rho, len(classes))
    if min(counts) < 1:
        raise DataError(f"rho={rho} leaves the rarest class empty with n_max={n_max}")
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(idx, size=n, replace=False) for idx, n in zip(per_class, counts, strict=True)]
    return np.sort(np.concatenate(chosen))
