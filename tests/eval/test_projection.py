"""cvae_core.eval.projection against independent computations: PCA coordinates vs numpy's SVD, allocation shares vs a
brute-force nearest-neighbour loop and vs closed-form answers, UMAP's output and that it keeps apart what is apart.

UMAP compiles numba code the first time (seconds in a fresh process), so every UMAP check shares one fit.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from cvae_core.eval.projection import (
    ExactKNNIndex,
    allocation_shares,
    class_shares,
    nearest_class,
    pca_2d,
    umap_2d,
    warm_up_umap,
)


# ------------------------------------------------------------------ PCA
def _svd_pca(x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return (x - mean) @ vt[:2].T, (z - mean) @ vt[:2].T


def test_pca_matches_numpy_svd_up_to_sign():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((800, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]) + 2.0  # distinct variances
    x = x @ np.linalg.qr(rng.standard_normal((6, 6)))[0]  # rotated, so the components are not the axes
    z = rng.standard_normal((50, 6))
    coords, fitted = pca_2d(x)
    ref, ref_z = _svd_pca(x, z)
    signs = np.sign((coords * ref).sum(0))  # each component is defined up to sign
    assert coords.shape == (800, 2) and coords.dtype == np.float32
    np.testing.assert_allclose(coords * signs, ref, atol=2e-4 * np.abs(ref).max())
    np.testing.assert_allclose(fitted.transform(z) * signs, ref_z, atol=2e-4 * np.abs(ref).max())
    assert np.var(coords[:, 0]) > np.var(coords[:, 1])  # first component explains the most


def test_pca_of_a_one_dimensional_latent_pads_a_zero_column():
    x = np.linspace(-1, 1, 20)[:, None]
    coords, fitted = pca_2d(x)
    assert coords.shape == (20, 2) and np.all(coords[:, 1] == 0)
    np.testing.assert_allclose(np.abs(coords[:, 0]), np.abs(x[:, 0]), atol=1e-6)
    assert fitted.transform(np.array([[0.5]])).shape == (1, 2)


def test_projections_reject_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        pca_2d(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"\(N, m\)"):
        pca_2d(np.zeros(5))


# ------------------------------------------------------------------ allocation
def brute_force_classes(means, labels, points, k):
    """The rule written out: sort all means by distance, vote among the first k, ties to the nearest member."""
    out = []
    for p in points:
        order = np.argsort(((means - p) ** 2).sum(1), kind="stable")[:k]
        near = [int(labels[j]) for j in order]
        votes = Counter(near)
        best = max(votes.values())
        out.append(next(c for c in near if votes[c] == best))  # the first (nearest) of the tied classes
    return np.array(out)


@pytest.mark.parametrize("k", [1, 4, 15])
def test_nearest_class_matches_a_brute_force_loop(k):
    rng = np.random.default_rng(k)
    K = 5
    labels = rng.integers(0, K, 400)
    means = rng.standard_normal((400, 3)) + 1.5 * labels[:, None] * np.array([1.0, 0.0, 0.0])  # overlapping classes
    points = rng.standard_normal((300, 3)) * 2
    expected = brute_force_classes(means, labels, points, k)
    np.testing.assert_array_equal(nearest_class(means, labels, points, K, k=k), expected)
    shares = allocation_shares(means, labels, points, K, k=k)
    np.testing.assert_allclose(shares, np.bincount(expected, minlength=K) / len(points), atol=1e-12)


def test_ties_go_to_the_class_with_the_nearest_member():
    means = np.array([[0.0], [1.0], [3.0], [4.0]])
    labels = np.array([0, 1, 1, 0])
    # the point 2.1 has neighbours 3 (class 1), 1 (class 1), 4 (class 0), 0 (class 0): 2 votes each, class 1 nearer
    assert nearest_class(means, labels, np.array([[2.1]]), 2, k=4)[0] == 1
    assert nearest_class(means, labels, np.array([[-0.1]]), 2, k=4)[0] == 0  # 0 (c0) is nearest
    # order c0, c1, c1, c0: the nearest member decides (a rank-sum rule would call this a draw)
    means = np.array([[0.0], [1.0], [2.2], [3.5]])
    assert nearest_class(means, labels, np.array([[0.3]]), 2, k=4)[0] == 0
    assert nearest_class(means, labels, np.array([[0.3]]), 2, k=3)[0] == 1  # k = 3: two votes to one


def test_two_separated_clusters_give_exact_shares():
    """Two tight clusters of encoder means far apart; 30 prior points sit in the first cluster and 70 in the
    second, so every k-NN vote is unanimous and the shares are exactly 0.3 and 0.7 (class 2 has no data: 0)."""
    rng = np.random.default_rng(1)
    c0, c1 = np.full(8, -10.0), np.full(8, 10.0)
    means = np.concatenate([c0 + 0.1 * rng.standard_normal((200, 8)), c1 + 0.1 * rng.standard_normal((100, 8))])
    labels = np.array([0] * 200 + [1] * 100)
    prior = np.concatenate([c0 + 0.1 * rng.standard_normal((30, 8)), c1 + 0.1 * rng.standard_normal((70, 8))])
    for k in (1, 15, 99):
        shares = allocation_shares(means, labels, prior, K=3, k=k)
        np.testing.assert_array_equal(shares, [0.3, 0.7, 0.0])
    np.testing.assert_allclose(class_shares(labels, 3), [2 / 3, 1 / 3, 0.0])


def test_shares_match_the_gaussian_mass_of_each_voronoi_cell():
    """Encoder means = exact class centres (one per class, k = 1), prior N(0, I) in 2-D. Centres at x = -1 and
    x = 3 split the plane at x = 1, so class 0 gets Phi(1) = 0.8413 of the prior mass; three centres at 120 degree
    angles get 1/3 each. 40,000 draws: standard error <= 0.0025; tolerance 0.01 (4 standard errors)."""
    rng = np.random.default_rng(2)
    z = rng.standard_normal((40_000, 2))
    shares = allocation_shares(np.array([[-1.0, 0.0], [3.0, 0.0]]), np.array([0, 1]), z, K=2, k=1)
    phi1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    np.testing.assert_allclose(shares, [phi1, 1 - phi1], atol=0.01)
    angles = np.deg2rad([90, 210, 330])
    centres = np.stack([np.cos(angles), np.sin(angles)], 1)
    np.testing.assert_allclose(allocation_shares(centres, np.arange(3), z, K=3, k=1), [1 / 3] * 3, atol=0.01)


def test_shares_are_a_distribution():
    rng = np.random.default_rng(3)
    means, labels = rng.standard_normal((500, 4)), rng.integers(0, 10, 500)
    shares = allocation_shares(means, labels, rng.standard_normal((1000, 4)), K=10, k=7)
    assert shares.shape == (10,) and np.all(shares >= 0)
    assert shares.sum() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="dimensions"):
        allocation_shares(means, labels, rng.standard_normal((5, 3)), K=10)
    with pytest.raises(ValueError, match="labels"):
        allocation_shares(means, labels[:-1], rng.standard_normal((5, 4)), K=10)


def test_exact_knn_index_answers_like_umaps_search_index():
    rng = np.random.default_rng(4)
    x, q = rng.standard_normal((200, 5)).astype(np.float32), rng.standard_normal((7, 5)).astype(np.float32)
    idx, dist = ExactKNNIndex(x).query(q, 6, epsilon=0.1)
    d_all = np.sqrt(((q[:, None, :] - x[None]) ** 2).sum(-1))
    ref = np.argsort(d_all, 1)[:, :6]
    assert idx.dtype == np.int32 and dist.dtype == np.float32
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_allclose(dist, np.take_along_axis(d_all, ref, 1), rtol=1e-5)


# ------------------------------------------------------------------ UMAP (one shared fit)
@pytest.fixture(scope="module")
def two_blobs_umap():
    """Two Gaussian blobs 20 standard deviations apart in 8-D, 300 points each, and their UMAP."""
    warm_up_umap()  # the numba compile, once per test process
    rng = np.random.default_rng(5)
    centre = np.zeros(8)
    centre[0] = 20.0
    x = np.concatenate([rng.standard_normal((300, 8)), centre + rng.standard_normal((300, 8))])
    labels = np.array([0] * 300 + [1] * 300)
    coords, reducer = umap_2d(x, seed=0)
    return x, labels, coords, reducer, centre


def test_umap_output_is_finite_and_separates_two_blobs(two_blobs_umap):
    x, labels, coords, _, _ = two_blobs_umap
    assert coords.shape == (600, 2) and np.isfinite(coords).all()
    a, b = coords[labels == 0], coords[labels == 1]
    spread = max(np.linalg.norm(a - a.mean(0), axis=1).max(), np.linalg.norm(b - b.mean(0), axis=1).max())
    gap = np.linalg.norm(a[:, None] - b[None], axis=-1).min()  # the closest pair across the two blobs
    assert gap > 0.5 * spread, (gap, spread)  # no point of one blob lies inside the other


def test_umap_transform_places_new_points_with_their_blob(two_blobs_umap):
    _, labels, coords, reducer, centre = two_blobs_umap
    rng = np.random.default_rng(6)
    new = np.concatenate([rng.standard_normal((20, 8)), centre + rng.standard_normal((20, 8))])
    placed = reducer.transform(new)
    assert placed.shape == (40, 2) and np.isfinite(placed).all()
    c0, c1 = coords[labels == 0].mean(0), coords[labels == 1].mean(0)
    nearer_0 = np.linalg.norm(placed - c0, axis=1) < np.linalg.norm(placed - c1, axis=1)
    np.testing.assert_array_equal(nearer_0, [True] * 20 + [False] * 20)


def test_umap_is_reproducible_for_a_seed(two_blobs_umap):
    x, _, coords, _, _ = two_blobs_umap
    again, _ = umap_2d(x, seed=0)
    np.testing.assert_array_equal(again, coords)
    small, _ = umap_2d(x[:10], seed=0)  # fewer points than n_neighbors: a smaller neighbourhood, no error
    assert small.shape == (10, 2) and np.isfinite(small).all()
