"""2-D maps of a latent space and the per-class allocation of the prior mass. No UI code.

- ``pca_2d``: the two leading principal components (scikit-learn PCA; linear, exact, milliseconds).
- ``umap_2d``: UMAP (McInnes, Healy & Melville 2018, arXiv:1802.03426; umap-learn) with settings chosen for speed
  on a laptop CPU: exact k-NN from scikit-learn instead of pynndescent (whose numba compile alone costs ~35 s in a
  fresh process), PCA initialisation instead of the spectral one, 100 epochs instead of 500, and a fixed
  ``random_state`` (reproducible, and single-threaded SGD was faster than the parallel one on 2 cores).
  Measured in ``bench/bench_latent_map.py``.
- ``warm_up_umap``: compile UMAP's numba code once per process on a tiny array with the same settings.
- ``allocation_shares``: each prior sample goes to the class of its k nearest encoder means (majority vote); the
  share of class k is the fraction of prior samples it gets. Computed in latent space, never on the 2-D map.

umap-learn and scikit-learn are imported lazily: importing umap-learn alone takes seconds, and the app imports
this module at start-up (see pages/_maps.py).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

UMAP_SETTINGS = {"n_neighbors": 15, "min_dist": 0.1, "n_epochs": 100, "init": "pca"}


def _as_2d_float(a: Any, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.ndim != 2 or len(a) == 0:
        raise ValueError(f"{name} must be a non-empty (N, m) array (got shape {a.shape})")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or inf values")
    return a


# ------------------------------------------------------------------ PCA
def pca_2d(means: Any):
    """(coords (N, 2), fitted PCA) of encoder means (N, m). `fitted.transform(z)` places other latents (prior
    samples) on the same map. A 1-D latent gets a zero second coordinate."""
    from sklearn.decomposition import PCA

    x = _as_2d_float(means, "means")
    n_comp = min(2, x.shape[1], len(x))
    # covariance_eigh: an m x m eigendecomposition, the fastest exact solver when N >> m
    pca = PCA(n_components=n_comp, svd_solver="covariance_eigh" if n_comp == 2 else "full").fit(x)
    coords = pca.transform(x).astype(np.float32)
    if n_comp < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - n_comp)))
        pca = _Padded(pca)
    return coords, pca


class _Padded:
    """A PCA with fewer than 2 components whose transform is padded to 2 columns."""

    def __init__(self, pca):
        self.pca = pca

    def transform(self, z: Any) -> np.ndarray:
        c = self.pca.transform(np.asarray(z, dtype=np.float32)).astype(np.float32)
        return np.pad(c, ((0, 0), (0, 2 - c.shape[1])))


# ------------------------------------------------------------------ UMAP
class ExactKNNIndex:
    """A k-NN search index with the interface umap-learn's ``transform`` asks of pynndescent's NNDescent
    (``query(X, k, epsilon)`` -> (indices, distances) and ``_angular_trees``), answered exactly by scikit-learn."""

    _angular_trees = False

    def __init__(self, data: np.ndarray):
        from sklearn.neighbors import NearestNeighbors

        self.nn = NearestNeighbors().fit(data)

    def query(self, x: Any, k: int = 15, epsilon: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        d, i = self.nn.kneighbors(np.asarray(x, dtype=np.float32), n_neighbors=k)
        return i.astype(np.int32), d.astype(np.float32)


def umap_2d(means: Any, seed: int = 0, *, n_neighbors: int = UMAP_SETTINGS["n_neighbors"],
            n_epochs: int = UMAP_SETTINGS["n_epochs"], min_dist: float = UMAP_SETTINGS["min_dist"],
            init: str = UMAP_SETTINGS["init"]):
    """(coords (N, 2), fitted umap.UMAP) of encoder means (N, m); `reducer.transform(z)` places other latents on
    the map. Deterministic for a given seed. Needs N > n_neighbors (fewer points get a smaller neighbourhood)."""
    import umap

    # umap-learn warns that a search index other than NNDescent cannot transform; ours can (a process-wide filter:
    # catch_warnings is not thread-safe, and the app fits in several threads)
    warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
    x = _as_2d_float(means, "means")
    if len(x) < 3:
        raise ValueError(f"UMAP needs at least 3 points (got {len(x)})")
    k = min(n_neighbors, len(x) - 1)
    index = ExactKNNIndex(x)
    knn_i, knn_d = index.query(x, k)  # (N, k): each point's first neighbour is itself (distance 0)
    reducer = umap.UMAP(n_neighbors=k, n_epochs=n_epochs, min_dist=min_dist, init=init, random_state=seed,
                        n_jobs=1, precomputed_knn=(knn_i, knn_d, index))
    coords = reducer.fit_transform(x).astype(np.float32)
    return coords, reducer


def import_umap() -> None:
    """Import umap-learn and what it imports (numba, pynndescent, scikit-learn, scipy, pandas): about 2.5 s once per
    process. Call it in the thread that serves pages before ``warm_up_umap`` runs in a background thread: two threads
    importing the same packages at once can hand one of them a partially initialised module (seen as "partially
    initialized module 'pandas' has no attribute 'Series'" on a page opened while UMAP was warming up)."""
    import umap  # noqa: F401


def warm_up_umap(seed: int = 0) -> float:
    """Compile umap-learn's numba code (fit and transform, with ``umap_2d``'s settings) on a tiny random array;
    returns the seconds it took (~8 s in a fresh process on 2 cores, milliseconds afterwards)."""
    t0 = time.perf_counter()
    x = np.random.default_rng(seed).standard_normal((64, 4)).astype(np.float32)
    _, reducer = umap_2d(x, seed, n_epochs=5)
    reducer.transform(x[:4] + 0.01)
    return time.perf_counter() - t0


# ------------------------------------------------------------------ per-class allocation
def class_shares(labels: Any, K: int) -> np.ndarray:
    """Fraction of items in each of K classes, (K,)."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.bincount(labels, minlength=K)[:K] / max(len(labels), 1)


def nearest_class(means: Any, labels: Any, points: Any, K: int, k: int = 15) -> np.ndarray:
    """Class of each point, (P,): the majority class among its k nearest encoder means (Euclidean, in the latent
    space). A tie in votes goes to the tied class with the nearest member."""
    x, p = _as_2d_float(means, "means"), _as_2d_float(points, "prior points")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(x):
        raise ValueError(f"{len(labels)} labels for {len(x)} encoder means")
    if p.shape[1] != x.shape[1]:
        raise ValueError(f"prior points have {p.shape[1]} dimensions, encoder means {x.shape[1]}")
    if labels.min() < 0 or labels.max() >= K:
        raise ValueError(f"labels must lie in 0..{K - 1}")
    k = max(1, min(int(k), len(x)))
    idx, _ = ExactKNNIndex(x).query(p, k)  # (P, k), nearest first
    rows = np.repeat(np.arange(len(p)), k)  # (P * k,)
    votes = np.zeros((len(p), K), np.int64)
    np.add.at(votes, (rows, labels[idx].ravel()), 1)
    first = np.full((len(p), K), k, np.int64)  # rank of each class's nearest member (k: none among the k)
    np.minimum.at(first, (rows, labels[idx].ravel()), np.tile(np.arange(k), len(p)))
    return (votes * (k + 1) + (k - first)).argmax(1)  # votes first; (k - first) <= k only breaks ties


def allocation_shares(means: Any, labels: Any, prior_points: Any, K: int, k: int = 15) -> np.ndarray:
    """Share of the prior mass nearest to each class, (K,), summing to 1: prior_points (P, m) are draws from the
    prior, each assigned by ``nearest_class``. Compare it with the class's share of the data: a class with a
    smaller share of the prior than of the data gets less of the latent space than its images would claim."""
    return class_shares(nearest_class(means, labels, prior_points, K, k), K)
