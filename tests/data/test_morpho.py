"""morpho-mnist (cvae_core/data/morpho.py): MNIST digits redrawn with four binary attributes and controlled
co-occurrence, and the pixel measurement functions that score generated images (SPEC sections 7 and 8).

The measurements are checked against geometry computed here (anti-aliased rings of known radius, width and shear,
known tints), then on 2,000 real MNIST digits rendered with uniform attribute combinations, clean and blurred like
model samples. The co-occurrence is checked on all 60,000 training labels against a probability table written out
here from the design (base model, rare shares, held-out cells), with binomial / chi-square tolerances. The cache is
built on a few hundred digits in a temporary folder. The full data set (all 70k images) is a slow test."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.ndimage import gaussian_filter

from cvae_core.data import DATASETS, load_dataset
from cvae_core.data import morpho as M
from cvae_core.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")
N_RENDER = 2000
ORDER = ("thickness", "slant", "redness", "height")  # measure() keys in ATTRIBUTES order


# ---------------------------------------------------------------- the design, written out independently
def design_table() -> np.ndarray:
    """(10, 16) P(combination | digit) in training, from the design: thick, slant, large fair coins, P(red | thick) =
    0.85, P(red | thin) = 0.15; (1,0,0,0) and (0,1,1,1) set to 0.004 with the other 14 rescaled; then each digit's
    held-out combination removed and the row renormalised (= redrawing the images that land on it)."""
    p = np.zeros(16)
    for t in (0, 1):
        for s in (0, 1):
            for r in (0, 1):
                for ln in (0, 1):
                    pr = 0.85 if t else 0.15
                    p[8 * t + 4 * s + 2 * r + ln] = 0.5 * 0.5 * 0.5 * (pr if r else 1 - pr)
    rare = [8, 7]  # (1, 0, 0, 0) and (0, 1, 1, 1)
    others = [i for i in range(16) if i not in rare]
    p[others] *= (1 - 2 * 0.004) / p[others].sum()
    p[rare] = 0.004
    table = np.tile(p, (10, 1))
    for digit, combo in ((4, 10), (7, 5), (2, 15), (9, 0)):  # the held-out cells as indices
        table[digit, combo] = 0
    return table / table.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def rendered(mnist):
    """2,000 real training digits rendered with uniform combinations (every attribute value about half the time)."""
    x, y = mnist.x_train[:N_RENDER, 0].numpy(), mnist.y_train[:N_RENDER].numpy()
    attrs = M.sample_attributes(y, seed=11, split="test")
    t = time.perf_counter()
    img = M.render(x, attrs)
    print(f"rendered {N_RENDER} digits in {time.perf_counter() - t:.2f} s")
    return x, y, attrs, img


def ring(radius: float, width: float, shear: float = 0.0, tint=(1.0, 0.24, 0.16), s: int = 8) -> np.ndarray:
    """(1, 3, 28, 28) float: a ring of the given centre-line radius and width, x shifted by shear * height above the
    centre (leaning right for shear > 0), anti-aliased by s x s supersampling."""
    yy, xx = (np.mgrid[: 28 * s, : 28 * s] + 0.5) / s
    r = np.hypot(xx - 14 + shear * (yy - 14), yy - 14)
    g = (np.abs(r - radius) <= width / 2).astype(np.float64).reshape(28, s, 28, s).mean((1, 3))
    return (g[None] * np.asarray(tint)[:, None, None])[None]


# ---------------------------------------------------------------- measurement against known geometry
@pytest.mark.parametrize("radius", [5.0, 8.0])
@pytest.mark.parametrize("width", [1.5, 4.0])
@pytest.mark.parametrize("shear", [0.0, 0.35, -0.35])
def test_measure_known_rings(radius, width, shear):
    m = M.measure(ring(radius, width, shear))
    # thickness = ink area / centre-line length = (2 pi R w) / (2 pi R) = w; the pixel-chain length is within a few %
    assert m["thickness"][0] == pytest.approx(width, rel=0.1)
    # a sheared circle: x = x' - k (y - cy) gives mu11 = -k mu02, so -mu11 / mu02 = k
    assert m["slant"][0] == pytest.approx(shear, abs=0.05)
    # centre-line height of the ring = 2R, whatever the width
    assert m["height"][0] == pytest.approx(2 * radius, abs=0.75)
    # the tint's (R - B) / (R + B) is the same at every pixel
    assert m["redness"][0] == pytest.approx((1.0 - 0.16) / (1.0 + 0.16), abs=1e-4)


def test_measure_blue_and_input_kinds():
    blue = ring(6.0, 2.0, tint=M.TINTS[0])
    assert M.measure(blue)["redness"][0] == pytest.approx((0.16 - 1.0) / (0.16 + 1.0), abs=1e-4)
    u8 = np.rint(blue * 255).astype(np.uint8)
    a, b = M.measure(u8), M.measure(torch.from_numpy(u8))
    c = M.measure(torch.from_numpy(u8).float() / 255)
    for k in ORDER:  # uint8 and float [0, 1], numpy and torch give the same numbers
        assert a[k][0] == pytest.approx(b[k][0]) == pytest.approx(c[k][0], abs=1e-5)


def test_measure_empty_and_flat_images():
    x = np.zeros((3, 3, 28, 28), np.float32)
    x[1] = 0.5  # flat grey: all background
    x[2, :, 14, 14] = 1.0  # a single dot
    m = M.measure(x)
    assert all(np.isfinite(m[k]).all() for k in ORDER)
    assert m["thickness"][0] == 0 and m["thickness"][1] == 0
    p = M.predict_attributes(x)
    assert p.shape == (3, 4) and set(np.unique(p)) <= {0, 1}
    assert M.measure(np.zeros((0, 3, 28, 28)))["thickness"].shape == (0,)
    with pytest.raises(DataError, match=r"\(N, 3, H, W\)"):
        M.measure(np.zeros((28, 28)))


# ---------------------------------------------------------------- measurement on rendered digits
def _accuracy(images, attrs) -> dict[str, float]:
    acc = M.attribute_accuracy(images, attrs)
    # the same numbers computed here from predict_attributes
    pred = M.predict_attributes(images)
    for j, k in enumerate(M.ATTRIBUTES):
        assert acc[k] == pytest.approx(np.mean(pred[:, j] == attrs[:, j]))
    assert acc["all"] == pytest.approx(np.mean([acc[k] for k in M.ATTRIBUTES]))
    return acc


def test_attributes_measured_on_rendered_digits(rendered):
    _, _, attrs, img = rendered
    assert img.shape == (N_RENDER, 3, 28, 28) and img.dtype == torch.uint8
    acc = _accuracy(img, attrs)
    print("clean accuracy:", {k: round(v, 4) for k, v in acc.items()})
    for k in M.ATTRIBUTES:  # the bar is 95%; measured 99.9-100%
        assert acc[k] >= 0.99, k


def test_attributes_measured_on_blurred_digits(rendered):
    _, _, attrs, img = rendered
    blurred = gaussian_filter(img.numpy().astype(np.float32) / 255, (0, 0, 0.7, 0.7))  # like a model's samples
    acc = _accuracy(torch.from_numpy(blurred), attrs)
    print("blurred (sigma 0.7 px) accuracy:", {k: round(v, 4) for k, v in acc.items()})
    for k in M.ATTRIBUTES:  # the bar is 90%; measured 99.6-100%
        assert acc[k] >= 0.97, k


def test_measure_values_match_the_design(rendered):
    """Class medians near the drawn values: stroke width 1.5 / 4 px, shear -+0.35, centre-line height 10 / 17.5 px."""
    _, _, attrs, img = rendered
    m = M.measure(img)
    med = {(k, c): np.median(m[k][attrs[:, j] == c]) for j, k in enumerate(ORDER) for c in (0, 1)}
    assert med["thickness", 0] == pytest.approx(M.STROKE_WIDTH[0], rel=0.25)
    assert med["thickness", 1] == pytest.approx(M.STROKE_WIDTH[1], rel=0.3)
    assert med["slant", 0] == pytest.approx(-M.SHEAR, abs=0.05) and med["slant", 1] == pytest.approx(M.SHEAR, abs=0.05)
    assert med["height", 0] == pytest.approx(M.CENTRE_HEIGHT[0], abs=1.0)
    assert med["height", 1] == pytest.approx(M.CENTRE_HEIGHT[1], abs=1.0)


def test_accuracy_takes_condition_vectors_and_continuous_requests(rendered):
    _, y, attrs, img = rendered
    acc = M.attribute_accuracy(img[:200], attrs[:200])
    assert M.attribute_accuracy(img[:200], M.condition_vector(y[:200], attrs[:200])) == acc
    soft = attrs[:200] * 0.8 + 0.1  # 0.1 / 0.9, rounded at 0.5
    assert M.attribute_accuracy(img[:200], soft) == acc
    flipped = M.attribute_accuracy(img[:200], 1 - attrs[:200])
    for k in M.ATTRIBUTES:
        assert flipped[k] == pytest.approx(1 - acc[k])
    with pytest.raises(DataError, match="200 images but 3"):
        M.attribute_accuracy(img[:200], attrs[:3])


def test_measure_speed(rendered):
    img = rendered[3][:1000].float() / 255
    M.measure(img[:10])
    t = time.perf_counter()
    M.measure(img)
    dt = time.perf_counter() - t
    print(f"measure: 1000 images in {dt * 1000:.0f} ms")
    assert dt < 1.0  # the app re-measures on every slider move (about 30 ms on one core)


# ---------------------------------------------------------------- rendering
def test_rendering_is_deterministic_for_a_seed(mnist):
    y = mnist.y_train.numpy()
    a, b = M.sample_attributes(y, seed=3), M.sample_attributes(y, seed=3)
    assert np.array_equal(a, b) and a.dtype == np.uint8 and a.shape == (60000, 4)
    assert not np.array_equal(a, M.sample_attributes(y, seed=4))
    assert not np.array_equal(M.sample_attributes(y[:1000], 3, "test"), a[:1000])  # separate streams per split
    x = mnist.x_train[:64, 0].numpy()
    assert torch.equal(M.render(x, a[:64]), M.render(x, a[:64]))


def test_render_colours_and_channels(rendered):
    _, _, attrs, img = rendered
    grey = img.numpy().max(1)  # the tint's largest channel is 1.0, so this is the grey ink
    for red in (0, 1):
        sel = attrs[:, 2] == red
        expect = np.rint(grey[sel][:, None].astype(np.float64) * np.asarray(M.TINTS[red])[None, :, None, None])
        assert np.array_equal(img.numpy()[sel], expect.astype(np.uint8))
    red = torch.from_numpy(attrs[:, 2] == 1)
    assert int(img[red, 0].max()) == 255 and int(img[~red, 2].max()) == 255  # the ink reaches full intensity
    corner = img[:, :, :2, :2]
    assert int(corner.max()) == 0  # black background


def test_render_rejects_bad_shapes():
    with pytest.raises(DataError, match="render needs"):
        M.render(np.zeros((3, 32, 32), np.uint8), np.zeros((3, 4)))


# ---------------------------------------------------------------- co-occurrence
def test_combo_index_label_round_trip():
    all_attrs = M.combo_attrs(np.arange(16))
    assert np.array_equal(M.combo_index(all_attrs), np.arange(16))
    assert M.combo_index([[1, 0, 0, 0]])[0] == 8 and M.combo_index([[0, 1, 1, 1]])[0] == 7  # thick is the top bit
    labels = [M.combo_label(i) for i in range(16)]
    assert len(set(labels)) == 16
    assert M.combo_label(M.combo_index([[1, 0, 1, 0]])[0]) == "thick · left · red · small"
    assert M.combo_label(7) == "thin · right · red · large"
    for i, lab in enumerate(labels):  # the label names each attribute value
        t, s, r, ln = all_attrs[i]
        assert lab.split(" · ") == [("thick" if t else "thin"), ("right" if s else "left"), ("red" if r else "blue"),
                                    ("large" if ln else "small")]


def test_cell_kind():
    assert M.cell_kind(4, (1, 0, 1, 0)) == "heldout" and M.cell_kind(4, 10) == "heldout"
    assert M.cell_kind(9, 0) == "heldout" and M.cell_kind(8, 0) == "common"
    assert M.cell_kind(3, (1, 0, 0, 0)) == "rare" and M.cell_kind(0, 7) == "rare"
    kinds = [M.cell_kind(d, c) for d in range(10) for c in range(16)]
    assert kinds.count("heldout") == 4 and kinds.count("rare") == 20 and kinds.count("common") == 136


def test_probability_table_matches_the_design():
    assert np.allclose(M.digit_combo_probs(), design_table(), atol=1e-12)
    assert M.combo_probs()[[8, 7]] == pytest.approx([0.004, 0.004])


def test_training_co_occurrence(mnist):
    y = mnist.y_train.numpy()
    a = M.sample_attributes(y, seed=0)
    n = len(y)
    table = design_table()
    counts = M.cell_counts(y, a)
    assert counts.sum() == n and np.array_equal(counts.sum(1), np.bincount(y, minlength=10))
    # held-out cells: not one training image
    for d, *attrs in M.HELDOUT_CELLS:
        assert counts[d, M.combo_index([attrs])[0]] == 0
    # the pooled combination counts follow the design (chi-square over the 16 combinations)
    expected = (np.bincount(y, minlength=10)[:, None] * table).sum(0)
    chi2 = scipy.stats.chisquare(counts.sum(0), expected)
    assert chi2.pvalue > 1e-3, chi2
    # rare combinations: < 1% each, and about 0.4% (a bit more: the held-out removal renormalises 4 digits' rows)
    for combo in M.RARE_COMBOS:
        i = M.combo_index([combo])[0]
        share, p = counts[:, i].sum() / n, expected[i] / n
        print(f"rare {combo}: {share:.4%} of training (expected {p:.4%})")
        assert share < 0.01
        assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / n)
        assert 0.0035 < p < 0.0045
    # thick and red entangled: the Pearson correlation of the design table, about 0.74
    e_t, e_r = (M.combo_attrs(np.arange(16))[:, j] @ (expected / n) for j in (0, 2))
    e_tr = (M.combo_attrs(np.arange(16))[:, 0] * M.combo_attrs(np.arange(16))[:, 2]) @ (expected / n)
    rho = (e_tr - e_t * e_r) / np.sqrt(e_t * (1 - e_t) * e_r * (1 - e_r))
    corr = M.attribute_correlations(a)
    print(f"thick/red correlation {corr[0, 2]:.4f} (designed {rho:.4f})")
    assert corr[0, 2] == pytest.approx(rho, abs=4 * (1 - rho**2) / np.sqrt(n))
    assert np.allclose(corr, np.corrcoef(a.T.astype(float)), atol=1e-9)
    assert abs(corr[0, 1]) < 0.05 and abs(corr[0, 3]) < 0.05


def test_test_split_is_uniform_and_covers_every_cell(mnist):
    y = mnist.y_test.numpy()
    a = M.sample_attributes(y, seed=0, split="test")
    counts = M.cell_counts(y, a)
    assert counts.min() > 0  # every (digit, combination), held-out cells included
    assert scipy.stats.chisquare(counts.sum(0)).pvalue > 1e-3  # uniform over the 16 combinations
    for d, *attrs in M.HELDOUT_CELLS:
        assert counts[d, M.combo_index([attrs])[0]] > 30  # about 1000 / 16 = 62 per cell


def test_condition_vector_numbers():
    c = M.condition_vector([3, 0], [[1, 0, 1, 1], [0, 1, 0, 0]])
    assert c.dtype == torch.float32 and c.shape == (2, 14)
    expect = torch.zeros(2, 14)
    expect[0, 3] = expect[1, 0] = 1
    expect[0, 10:] = torch.tensor([1.0, 0, 1, 1])
    expect[1, 10:] = torch.tensor([0.0, 1, 0, 0])
    assert torch.equal(c, expect)
    assert M.CONDITION_NAMES[:10] == tuple(f"digit_{d}" for d in range(10))
    assert M.CONDITION_NAMES[10:] == M.ATTRIBUTES == ("thick", "slant", "red", "large")


# ---------------------------------------------------------------- the data set and its cache
@pytest.fixture
def small_mnist(mnist, monkeypatch):
    """morpho.py's MNIST reader replaced by the first 300 training and 160 test digits (a cache in seconds)."""
    arrays = {"train": (mnist.x_train[:300, 0].numpy(), mnist.y_train[:300].numpy().astype(np.uint8)),
              "test": (mnist.x_test[:160, 0].numpy(), mnist.y_test[:160].numpy().astype(np.uint8))}
    monkeypatch.setattr(M, "load_mnist_arrays", lambda root, source="auto", download=False: arrays)
    return arrays


def test_cache_round_trip(small_mnist, tmp_path, monkeypatch):
    calls = []
    path = M.build_morpho(tmp_path, seed=5, verbose=False, progress=lambda k, n: calls.append((k, n)))
    assert path == tmp_path / "morpho-mnist" / "v1-seed5.npz" == M.cache_path(tmp_path, 5)
    assert calls[-1] == (460, 460) and [k for k, _ in calls] == sorted(k for k, _ in calls)
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind
    first = M.load_morpho(tmp_path, 5, verbose=False)

    def no_mnist(*a, **k):
        raise AssertionError("the second load must read the cache, not MNIST")

    monkeypatch.setattr(M, "load_mnist_arrays", no_mnist)
    t = time.perf_counter()
    again = M.load_morpho(tmp_path, 5, verbose=False)
    assert time.perf_counter() - t < 3
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(first, k), getattr(again, k))
    assert torch.equal(first.extras_train["attributes"], again.extras_train["attributes"])
    assert first.info == again.info

    # what was cached is what render() draws for the seeded attributes
    x, y = small_mnist["train"]
    a = M.sample_attributes(y, 5, "train")
    assert torch.equal(first.x_train, M.render(x, a))
    assert torch.equal(first.y_train, torch.from_numpy(y.astype(np.int64)))
    assert torch.equal(first.extras_train["attributes"], M.condition_vector(y, a))
    xt, yt = small_mnist["test"]
    assert torch.equal(first.extras_test["attributes"], M.condition_vector(yt, M.sample_attributes(yt, 5, "test")))


def test_training_seed_does_not_redraw_the_data_set(small_mnist, tmp_path):
    """load_dataset's seed is the training seed (the CLI's --seed): morpho-mnist stays the one fixed draw (seed 0)."""
    a = load_dataset("morpho-mnist", root=tmp_path, seed=3)
    b = load_dataset("morpho-mnist", root=tmp_path, seed=0)
    assert a.info["seed"] == 0 and torch.equal(a.extras_train["attributes"], b.extras_train["attributes"])
    assert os.listdir(tmp_path / "morpho-mnist") == ["v1-seed0.npz"]


def test_dataset_fields(small_mnist, tmp_path):
    d = M.load_morpho(tmp_path, seed=0, verbose=False)
    assert d.name == "morpho-mnist" and d.num_classes == 10 and d.class_names == [str(i) for i in range(10)]
    assert d.x_train.shape == (300, 3, 28, 28) and d.x_train.dtype == torch.uint8
    assert d.x_test.shape == (160, 3, 28, 28) and d.y_train.dtype == torch.int64
    ea = d.extras_train["attributes"]
    assert ea.shape == (300, 14) and ea.dtype == torch.float32
    assert torch.equal(ea[:, :10].argmax(1), d.y_train)
    info = d.info
    assert info["attributes"] == list(M.CONDITION_NAMES) and info["measured"] == list(M.ATTRIBUTES)
    assert info["rare_combos"] == [[1, 0, 0, 0], [0, 1, 1, 1]] and info["seed"] == 0
    assert info["heldout_cells"] == [[4, 1, 0, 1, 0], [7, 0, 1, 0, 1], [2, 1, 1, 1, 1], [9, 0, 0, 0, 0]]
    cc = np.array(info["cell_counts_train"])
    assert cc.shape == (10, 16) and cc.sum() == 300
    assert np.array_equal(cc, M.cell_counts(d.y_train.numpy(), ea[:, 10:].numpy()))
    assert np.allclose(info["correlations"], np.corrcoef(ea[:, 10:].numpy().T), atol=1e-5)
    # every image measures as the attributes it was drawn with (a few % slack for 300 items)
    assert M.attribute_accuracy(d.x_train, ea)["all"] > 0.98


def test_cache_write_is_atomic_and_damage_is_rebuilt(small_mnist, tmp_path, monkeypatch):
    def crash(f, **arrays):
        f.write(b"half a file")
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(M.np, "savez_compressed", crash)
        with pytest.raises(KeyboardInterrupt):
            M.build_morpho(tmp_path, seed=1, verbose=False)
    assert os.listdir(tmp_path / "morpho-mnist") == []  # neither a cache nor a temporary file
    path = M.cache_path(tmp_path, 1)
    path.write_bytes(b"not a zip file")
    d = M.load_morpho(tmp_path, seed=1, verbose=False)  # unreadable: rebuilt
    assert len(d.x_train) == 300 and np.load(path)["grey_train"].shape == (300, 28, 28)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a truncated zip
    assert torch.equal(M.load_morpho(tmp_path, seed=1, verbose=False).x_train, d.x_train)
    with pytest.raises(DataError, match="seed must be"):
        M.load_morpho(tmp_path, seed=-1, verbose=False)


def test_missing_mnist_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("morpho-mnist", root=tmp_path / "nowhere")
    msg = str(e.value)
    assert "\n" not in msg and "MNIST" in msg and "morpho-mnist" in msg
    assert not (tmp_path / "nowhere" / "morpho-mnist").exists()


def test_registered():
    assert "morpho-mnist" in DATASETS
    assert DATASETS["morpho-mnist"][0] is M.morpho_mnist


@pytest.mark.slow
def test_full_data_set(mnist, tmp_path, monkeypatch):
    """All 70k images (about 20 s): the whole test split measures as drawn, clean and blurred."""
    arrays = {"train": (mnist.x_train[:, 0].numpy(), mnist.y_train.numpy()),
              "test": (mnist.x_test[:, 0].numpy(), mnist.y_test.numpy())}
    monkeypatch.setattr(M, "load_mnist_arrays", lambda root, source="auto", download=False: arrays)
    t = time.perf_counter()
    d = M.load_morpho(tmp_path, seed=0, verbose=False)
    print(f"built in {time.perf_counter() - t:.1f} s; cache {M.cache_path(tmp_path, 0).stat().st_size / 1e6:.1f} MB")
    acc = M.attribute_accuracy(d.x_test, d.extras_test["attributes"])
    blurred = torch.from_numpy(gaussian_filter(d.x_test.numpy().astype(np.float32) / 255, (0, 0, 0.7, 0.7)))
    acc_b = M.attribute_accuracy(blurred, d.extras_test["attributes"])
    print("test split clean", acc, "blurred", acc_b)
    assert min(acc[k] for k in M.ATTRIBUTES) >= 0.995 and min(acc_b[k] for k in M.ATTRIBUTES) >= 0.99
    cc = np.array(d.info["cell_counts_train"])
    assert all(cc[dg, M.combo_index([c])[0]] == 0 for dg, *c in M.HELDOUT_CELLS)


# ---------------------------------------------------------------- morpho-mnist-hard: rarer rare combinations
def test_hard_rare_share_probabilities():
    """The shipped table is unchanged; at HARD_RARE_SHARE the rare combinations get 0.05% each and the other 14
    are the design's rescaled, summing to 1; both rare combinations go against the thick-red entanglement."""
    assert np.allclose(M.digit_combo_probs(), design_table(), atol=1e-12)
    hard = M.combo_probs(M.HARD_RARE_SHARE)
    assert hard[[8, 7]] == pytest.approx([0.0005, 0.0005]) and hard.sum() == pytest.approx(1.0)
    base, others = M.combo_probs(), [i for i in range(16) if i not in (7, 8)]
    np.testing.assert_allclose(hard[others] / hard[others].sum(), base[others] / base[others].sum(), rtol=1e-12)
    for t, _s, r, _l in M.RARE_COMBOS:
        assert t != r  # thick and blue, or thin and red: P = 0.15 each in the base model
    for bad in (0.0, -0.1, 0.25, 1.0):
        with pytest.raises(DataError):
            M.combo_probs(bad)


def test_hard_training_draw(mnist):
    """On the 60k training digits: each rare combination about 0.05% (30 images; 4 binomial SDs), the test split
    the same as the shipped set's."""
    y = mnist.y_train.numpy()
    a = M.sample_attributes(y, seed=0, rare_share=M.HARD_RARE_SHARE)
    counts = M.cell_counts(y, a).sum(0)
    n = len(y)
    expected = (np.bincount(y, minlength=10)[:, None] * M.digit_combo_probs(M.HARD_RARE_SHARE)).sum(0)
    for combo in M.RARE_COMBOS:
        i = M.combo_index([combo])[0]
        p = expected[i] / n
        assert 0.0004 < p < 0.0006 and abs(counts[i] - expected[i]) < 4 * np.sqrt(n * p * (1 - p))
        assert counts[i] / n <= 0.0008
    yt = mnist.y_test.numpy()
    assert np.array_equal(M.sample_attributes(yt, 0, "test", M.HARD_RARE_SHARE), M.sample_attributes(yt, 0, "test"))


def test_hard_data_set_cache_and_fields(small_mnist, tmp_path):
    d = load_dataset("morpho-mnist-hard", root=tmp_path)
    shipped = load_dataset("morpho-mnist", root=tmp_path)
    assert d.name == "morpho-mnist-hard" and shipped.name == "morpho-mnist"
    assert sorted(os.listdir(tmp_path / "morpho-mnist")) == ["v1-seed0-rare0.0005.npz", "v1-seed0.npz"]
    assert M.cache_path(tmp_path, 0, M.HARD_RARE_SHARE).name == "v1-seed0-rare0.0005.npz"
    assert d.info["rare_share"] == 0.0005 and "rare_share" not in shipped.info
    assert d.info["rare_combos"] == shipped.info["rare_combos"]
    assert torch.equal(d.x_test, shipped.x_test) and torch.equal(d.extras_test["attributes"],
                                                               shipped.extras_test["attributes"])
    x, y = small_mnist["train"]
    assert torch.equal(d.extras_train["attributes"],
                       M.condition_vector(y, M.sample_attributes(y, 0, "train", M.HARD_RARE_SHARE)))
    assert DATASETS["morpho-mnist-hard"][0] is M.morpho_mnist_hard
