"""morpho-mnist: MNIST digits redrawn with four binary attributes and controlled co-occurrence (SPEC section 8).

A CelebA stand-in that ships with the project, in the spirit of Morpho-MNIST (Castro et al., "Morpho-MNIST:
Quantitative Assessment and Diagnostics for Representation Learning", arXiv 1809.10780): every attribute is drawn
on purpose and can be measured back from the pixels exactly, so generated images are scored without a learned
classifier (SPEC section 7).

Attributes (``ATTRIBUTES``, 1 / 0): thick / thin stroke, slanted right / left (the top leans right / left),
red / blue ink, large / small. A model is conditioned on ``CONDITION_NAMES``: the one-hot digit, then the four
attributes (14 floats, ``condition_vector``).

Rendering (``render``), per image: skeletonize the MNIST digit (at 2x), deskew the centre line by its image moments
and shear it to +-``SHEAR``, scale it to a centre-line height (``CENTRE_HEIGHT``), centre it, and redraw it with a
fixed stroke width (``STROKE_WIDTH``) from the distance transform of the centre line, at 2x with a one-pixel soft
edge, then area-downsampled to 28x28 (anti-aliased). The grey ink is then tinted (``TINTS``) on black. Redrawing
from the centre line is what makes thickness and height exact: the original pen width is gone.

Co-occurrence (``sample_attributes``), seeded: in training thick, slant and large are fair coins and red follows
thick (P(red | thick) = 0.85, P(red | thin) = 0.15), so thick and red are entangled on purpose; the two
``RARE_COMBOS`` get 0.4% of training each; the ``HELDOUT_CELLS`` (digit + combination) never occur in training.
The test split draws the 16 combinations uniformly, so every cell, held-out ones included, has test images.
``morpho-mnist-hard`` is the same data set with the two rare combinations at ``HARD_RARE_SHARE`` = 0.05% of training
each (about 30 images, 3 per digit): both break the thick-red entanglement (thick and blue; thin and red), so a model
cannot compose them from what it sees often. Its test split is the same; only the training split's draw differs.

Built once from the offline MNIST (about 16 s on one core) into ``<data root>/morpho-mnist/v1-seed<seed>.npz``
(grey ink + attributes, 5.5 MB; colour is applied at load), which later loads read in about 0.6 s.
"""

from __future__ import annotations

import os
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cvae_core.data.dataset import Dataset
from cvae_core.data.mnist import default_data_root, load_mnist_arrays
from cvae_core.errors import DataError

ATTRIBUTES = ("thick", "slant", "red", "large")
CONDITION_NAMES = tuple(f"digit_{d}" for d in range(10)) + ATTRIBUTES
# (thick, slant, red, large): 0.4% of the training set each, pooled over digits
RARE_COMBOS = ((1, 0, 0, 0), (0, 1, 1, 1))
RARE_SHARE = 0.004
HARD_RARE_SHARE = 0.0005  # morpho-mnist-hard: the same rare combinations, 0.05% of training each
# (digit, thick, slant, red, large): never in training, uniform share of the test set
HELDOUT_CELLS = ((4, 1, 0, 1, 0), (7, 0, 1, 0, 1), (2, 1, 1, 1, 1), (9, 0, 0, 0, 0))
P_RED_GIVEN_THICK = (0.15, 0.85)  # P(red = 1 | thick = 0), P(red = 1 | thick = 1)

VERSION = 1  # part of the cache file name: bump it when rendering or sampling changes
SHEAR = 0.35  # x shift per unit height of the centre line after deskewing (about 19 degrees)
STROKE_WIDTH = (1.5, 4.0)  # px, thin / thick: ink per unit of centre-line length
CENTRE_HEIGHT = (10.0, 17.5)  # px, small / large centre line; ink height = this + stroke width
TINTS = ((0.16, 0.43, 1.0), (1.0, 0.24, 0.16))  # RGB multipliers of the grey ink: blue (red = 0), red (red = 1)

# Thresholds of predict_attributes, on the measure() values. Set by scanning thresholds on 10,000-20,000 rendered
# training images, clean and blurred with a Gaussian of sigma 0.7 and 1.0 px (model samples are blurry). Thickness:
# class medians 1.8 (thin) and 4.9 px (thick); at 3.6 the errors are 0.1% clean, 0.25% (sigma 0.7) and 1.5% (sigma
# 1.0), about the smallest sum; lower favours clean images, higher blurred ones. Height: class medians 10.0 and
# 18.0 px and no image between 11.4 and 15.3 (clean or blurred); 14.0 sits in that gap. Slant and redness are
# signed by construction (+-0.33 and +-0.72 at the class medians; nothing within 0.09 of 0), so their thresholds are 0.
THRESHOLDS = {"thickness": 3.6, "slant": 0.0, "redness": 0.0, "height": 14.0}

_SKEL_REL, _INK_REL, _MASS_REL, _SHARPEN, _BACKGROUND_Q = 0.6, 0.4, 0.05, 1.0, 0.1  # see measure()


# ---------------------------------------------------------------- attribute combinations
def combo_index(attrs) -> np.ndarray:
    """(N, 4) attributes in ATTRIBUTES order -> (N,) int in 0..15; thick is the most significant bit."""
    a = np.asarray(attrs).astype(np.int64).reshape(-1, 4)
    return 8 * a[:, 0] + 4 * a[:, 1] + 2 * a[:, 2] + a[:, 3]


def combo_attrs(idx) -> np.ndarray:
    """Inverse of combo_index: (N,) indices -> (N, 4) int64 attributes."""
    i = np.asarray(idx, dtype=np.int64).reshape(-1)
    return np.stack([(i >> 3) & 1, (i >> 2) & 1, (i >> 1) & 1, i & 1], axis=1)


def combo_label(idx: int) -> str:
    """Combination index -> "thick · left · red · small"."""
    t, s, r, ln = combo_attrs(int(idx))[0]
    return " · ".join(("thick" if t else "thin", "right" if s else "left", "red" if r else "blue",
                       "large" if ln else "small"))


def cell_kind(digit: int, combo) -> str:
    """"heldout" (never in training), "rare" (RARE_COMBOS) or "common"; combo: an index or 4 attributes."""
    attrs = tuple(int(v) for v in (combo_attrs(combo)[0] if np.ndim(combo) == 0 else combo))
    if (int(digit), *attrs) in HELDOUT_CELLS:
        return "heldout"
    return "rare" if attrs in RARE_COMBOS else "common"


def _check_share(rare_share: float) -> float:
    if not 0 < float(rare_share) < 1 / (2 * len(RARE_COMBOS)):
        raise DataError(f"morpho-mnist rare_share must be in (0, {1 / (2 * len(RARE_COMBOS)):g}), got {rare_share}")
    return float(rare_share)


def combo_probs(rare_share: float = RARE_SHARE) -> np.ndarray:
    """(16,) training distribution of the combinations before the held-out cells are removed: the base model
    (thick, slant, large fair coins; red | thick) with each rare combination set to `rare_share` and the other 14
    rescaled in proportion so the total stays 1."""
    rare_share = _check_share(rare_share)
    a = combo_attrs(np.arange(16))
    p_red = np.asarray(P_RED_GIVEN_THICK)[a[:, 0]]
    base = 0.125 * np.where(a[:, 2] == 1, p_red, 1 - p_red)
    rare = np.isin(np.arange(16), combo_index(RARE_COMBOS))
    return np.where(rare, rare_share, base * (1 - rare_share * rare.sum()) / base[~rare].sum())


def digit_combo_probs(rare_share: float = RARE_SHARE) -> np.ndarray:
    """(10, 16) training distribution per digit: combo_probs() with the digit's held-out cells removed and the rest
    renormalised. Sampling from it is the same as redrawing every image that lands on a held-out cell."""
    p = np.tile(combo_probs(rare_share), (10, 1))
    for d, *attrs in HELDOUT_CELLS:
        p[d, combo_index([attrs])[0]] = 0.0
    return p / p.sum(1, keepdims=True)


def sample_attributes(digits, seed: int = 0, split: str = "train", rare_share: float = RARE_SHARE) -> np.ndarray:
    """(N,) digits -> (N, 4) uint8 attributes; train: digit_combo_probs(rare_share), test: uniform over the 16
    combinations (whatever `rare_share`). Seeded by (seed, split), so the two splits never share a random stream."""
    d = np.asarray(digits, dtype=np.int64).reshape(-1)
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    if not 0 <= int(seed) < 2**32:
        raise DataError(f"morpho-mnist seed must be an integer in 0 .. 2^32-1, got {seed}")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    if split == "test":
        idx = rng.integers(0, 16, len(d))
    else:
        cdf = np.cumsum(digit_combo_probs(rare_share), axis=1)
        cdf[:, -1] = 1.0  # no rounding gap at the top
        u = rng.random(len(d))
        idx = (u[:, None] >= cdf[d]).sum(1)  # first k with cdf > u; a zero-probability cell is never chosen
    return combo_attrs(idx).astype(np.uint8)


def condition_vector(digits, attrs) -> torch.Tensor:
    """(N,) digits and (N, 4) attributes -> (N, 14) float32: one-hot digit, then the attributes (CONDITION_NAMES)."""
    d = torch.as_tensor(np.asarray(digits), dtype=torch.int64).reshape(-1)
    a = torch.as_tensor(np.asarray(attrs), dtype=torch.float32).reshape(-1, 4)
    if len(a) != len(d):
        raise DataError(f"condition_vector: {len(d)} digits but {len(a)} attribute rows")
    return torch.cat([torch.nn.functional.one_hot(d, 10).float(), a], dim=1)


def cell_counts(digits, attrs) -> np.ndarray:
    """(10, 16) number of items per (digit, combination index)."""
    d = np.asarray(digits, dtype=np.int64).reshape(-1)
    return np.bincount(16 * d + combo_index(attrs), minlength=160).reshape(10, 16)


def attribute_correlations(attrs) -> np.ndarray:
    """(4, 4) Pearson correlations between the attributes (0 where an attribute is constant)."""
    a = np.asarray(attrs, dtype=np.float64).reshape(-1, 4)
    a = a - a.mean(0)
    sd = np.sqrt((a * a).mean(0))
    z = np.divide(a, sd, out=np.zeros_like(a), where=sd > 0)
    c = z.T @ z / max(len(a), 1)
    np.fill_diagonal(c, 1.0)
    return c


# ---------------------------------------------------------------- rendering
def _skeletons(binary: np.ndarray) -> np.ndarray:
    from skimage.morphology import skeletonize

    out = np.zeros_like(binary)
    for i in range(len(binary)):  # ~30 us per 56x56 image; skimage has no batched 2-D thinning
        out[i] = skeletonize(binary[i])
    return out


def _centre_line_points(sk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skeleton stack (n, S, S) -> (item, y, x) of its pixels plus the midpoints of 8-connected neighbour pairs (so
    the points stay dense after scaling up), in 28-px coordinates where pixel j spans [j, j + 1)."""
    S = sk.shape[1]
    items, ys, xs = [], [], []
    n, r, c = np.nonzero(sk)
    items.append(n), ys.append(r.astype(np.float64)), xs.append(c.astype(np.float64))
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        lo, hi = max(0, -dx), S - max(0, dx)
        both = sk[:, : S - dy, lo:hi] & sk[:, dy:, lo + dx : hi + dx]
        n, r, c = np.nonzero(both)
        items.append(n), ys.append(r + dy / 2), xs.append(c + lo + dx / 2)
    n = np.concatenate(items)
    order = np.argsort(n, kind="stable")  # grouped by item for reduceat
    scale = 28 / S
    return n[order], (np.concatenate(ys)[order] + 0.5) * scale, (np.concatenate(xs)[order] + 0.5) * scale


def _per_item(ufunc, v: np.ndarray, starts: np.ndarray, has: np.ndarray) -> np.ndarray:
    out = np.zeros(len(starts))
    out[has] = ufunc.reduceat(v, starts[has])
    return out


def render_grey(images, attrs, progress: Callable[[int, int], None] | None = None,
                chunk: int = 2000) -> np.ndarray:
    """MNIST digits (N, 28, 28) uint8 and attributes (N, 4) -> grey ink (N, 28, 28) uint8, deterministic.

    The colour attribute is ignored here (see colourise). progress(done, total) is called after each chunk."""
    from scipy.ndimage import distance_transform_edt

    x = np.asarray(images)
    a = np.asarray(attrs).astype(np.int64).reshape(-1, 4)
    if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(a):
        raise DataError(f"render needs (N, 28, 28) digits and (N, 4) attributes, got {x.shape} and {a.shape}")
    N = len(x)
    out = np.zeros((N, 28, 28), np.uint8)
    for s0 in range(0, N, chunk):
        xb, ab = x[s0 : s0 + chunk], a[s0 : s0 + chunk]
        n = len(xb)
        # 1. centre line of the digit as drawn, at 2x (bilinear upsampling smooths the pixel staircase)
        up = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(xb)).float()[:, None] / 255,
                                             scale_factor=2, mode="bilinear", align_corners=False)[:, 0]
        item, y, xx = _centre_line_points(_skeletons((up > 0.4).numpy()))
        cnt = np.bincount(item, minlength=n).astype(np.float64)
        has = cnt > 0
        starts = np.concatenate([[0], np.cumsum(cnt)[:-1]]).astype(np.int64)
        c = np.maximum(cnt, 1)
        # 2. moments of the centre line: deskew (mu11 / mu02 = 0), then shear to the target slant; y points down,
        #    so a top leaning right has mu11 / mu02 = -SHEAR
        cy, cx = np.bincount(item, y, n) / c, np.bincount(item, xx, n) / c
        dy, dx = y - cy[item], xx - cx[item]
        skew = np.bincount(item, dx * dy, n) / np.maximum(np.bincount(item, dy * dy, n), 1e-9)
        target = np.where(ab[:, 1] == 1, -SHEAR, SHEAR)
        xs = dx + (target - skew)[item] * dy
        # 3. scale to the target centre-line height; squeeze x (only) for the ~1% of digits that would not fit
        ymin, ymax = _per_item(np.minimum, dy, starts, has), _per_item(np.maximum, dy, starts, has)
        xmin, xmax = _per_item(np.minimum, xs, starts, has), _per_item(np.maximum, xs, starts, has)
        width = np.asarray(STROKE_WIDTH)[ab[:, 0]]
        fy = np.asarray(CENTRE_HEIGHT)[ab[:, 3]] / np.maximum(ymax - ymin, 1.0)
        fx = np.minimum(fy, (28 - width - 1.5) / np.maximum(xmax - xmin, 1e-3))
        # 4. centre the centre line's bounding box; rasterise the points at 2x
        X = (xs - (xmin + xmax)[item] / 2) * fx[item] + 14
        Y = (dy - (ymin + ymax)[item] / 2) * fy[item] + 14
        line = np.zeros((n, 56, 56), bool)
        line[item, np.clip(np.rint(2 * Y - 0.5), 0, 55).astype(np.int64),
             np.clip(np.rint(2 * X - 0.5), 0, 55).astype(np.int64)] = True
        # 5. redraw: ink 1 within half the stroke width of the line (= `width` px at 2x), a one-pixel linear edge;
        #    a straight line then carries exactly `width` of ink per unit length; 2x2 area mean -> 28x28
        ink = np.zeros((n, 56, 56), np.float32)
        for i in np.flatnonzero(has):
            ink[i] = np.clip(width[i] + 0.5 - distance_transform_edt(~line[i]), 0, 1)
        out[s0 : s0 + n] = np.rint(ink.reshape(n, 28, 2, 28, 2).mean((2, 4)) * 255)
        if progress is not None:
            progress(s0 + n, N)
    return out


def colourise(grey, red) -> torch.Tensor:
    """Grey ink (N, 28, 28) uint8 and (N,) red flags -> (N, 3, 28, 28) uint8 ink * TINTS[red] on black."""
    g = np.asarray(grey)
    r = np.asarray(red).astype(np.int64).reshape(-1)
    lut = np.rint(np.arange(256)[None, None, :] * np.asarray(TINTS)[:, :, None]).astype(np.uint8)  # (2, 3, 256)
    out = np.empty((len(g), 3, *g.shape[1:]), np.uint8)
    for t in (0, 1):
        sel = np.flatnonzero(r == t)
        for ch in range(3):
            out[sel, ch] = lut[t, ch][g[sel]]
    return torch.from_numpy(out)


def render(images, attrs, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """MNIST digits (N, 28, 28) uint8 + attributes (N, 4) -> colour images (N, 3, 28, 28) uint8."""
    return colourise(render_grey(images, attrs, progress), np.asarray(attrs).reshape(-1, 4)[:, 2])


# ---------------------------------------------------------------- measurement (SPEC section 7)
def _as_float_images(images) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu()
        x = images.numpy() if images.dtype == torch.uint8 else images.float().numpy()
    else:
        x = np.asarray(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"attribute measurement needs images (N, 3, H, W), got shape {x.shape}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255
    return np.clip(np.nan_to_num(x.astype(np.float32)), 0, 1)


def _line_length(sk: np.ndarray) -> np.ndarray:
    """Length of each skeleton in px: 1 per horizontal or vertical link, sqrt 2 per diagonal link that is not the
    corner of a staircase (whose two orthogonal links already count it)."""
    n = len(sk)
    a, b, c, d = sk[:, :-1, :-1], sk[:, :-1, 1:], sk[:, 1:, :-1], sk[:, 1:, 1:]
    orth = (sk[:, :, :-1] & sk[:, :, 1:]).reshape(n, -1).sum(1) + (sk[:, :-1] & sk[:, 1:]).reshape(n, -1).sum(1)
    diag = (a & d & ~b & ~c).reshape(n, -1).sum(1) + (b & c & ~a & ~d).reshape(n, -1).sum(1)
    return orth + np.sqrt(2) * diag


def measure(images) -> dict[str, np.ndarray]:
    """Continuous attribute measurements of images (N, 3, H, W), uint8 or float in [0, 1], numpy or torch.

    - ink = the brightest channel (both tints have a channel at 1, so ink is the grey before tinting) less the
      background (the image's 10% quantile: a haze or a grey background is not ink); what counts as ink is relative
      to each image's own brightest pixel, so blurry model samples are measured like data.
    - "thickness" (px): total ink (pixels above 5% of the maximum) / centre-line length, the stroke width for a line
      of any shape. The centre line is the skeleton of the pixels above 0.6 of the maximum after an unsharp mask
      (ink + (ink - Gaussian(ink, 1 px))), which keeps the small loops of blurred thin digits open. The ink is in
      absolute units on purpose: blur moves ink but keeps it (and a decoder mean keeps the ink of the images it
      averages), whereas dividing by the peak would turn every blurred thin stroke thick; the price is that a
      uniformly dimmed image reads thinner.
    - "slant": -mu11 / mu02 of the ink (central image moments, y down): the x shift per unit height, > 0 leaning right.
    - "redness": (R - B) / (R + B) over the ink pixels: +0.72 for the red tint, -0.72 for the blue.
    - "height" (px): height of the ink's bounding box (pixels above 0.4 of the maximum) minus the stroke width
      (thickness clipped to STROKE_WIDTH), i.e. the centre-line height, the same for thin and thick strokes.
    An empty image gets zeros (and so some prediction); 1000 images take about 30 ms on one core.
    """
    from scipy.ndimage import gaussian_filter

    x = _as_float_images(images)
    n = len(x)
    if n == 0:
        return {k: np.zeros(0) for k in ("thickness", "slant", "redness", "height")}
    ink = x.max(1)  # (N, H, W)
    # less the background: a low quantile, as even a blurred large thick digit leaves most pixels dark
    ink = np.maximum(ink - np.quantile(ink.reshape(n, -1), _BACKGROUND_Q, axis=1)[:, None, None], 0)
    peak = ink.reshape(n, -1).max(1)
    floor = np.maximum(peak, 1e-3)[:, None, None]  # an empty image has no ink pixel
    sharp = ink + _SHARPEN * (ink - gaussian_filter(ink, (0, 1, 1)))
    line = _skeletons(sharp > _SKEL_REL * floor)
    mass = (ink * (ink > _MASS_REL * floor)).reshape(n, -1).sum(1)
    thickness = mass / np.maximum(_line_length(line), 1.0)
    is_ink = ink > _INK_REL * floor
    w = ink * is_ink
    rows = is_ink.any(2)  # (N, H)
    H = rows.shape[1]
    box = np.where(rows.any(1), H - rows[:, ::-1].argmax(1) - rows.argmax(1), 0)
    height = box - np.clip(thickness, *STROKE_WIDTH)
    yy, xx = np.mgrid[: ink.shape[1], : ink.shape[2]].astype(np.float32)
    tot = np.maximum(w.reshape(n, -1).sum(1), 1e-9)
    cy = (w * yy).reshape(n, -1).sum(1) / tot
    cx = (w * xx).reshape(n, -1).sum(1) / tot
    dy, dx = yy - cy[:, None, None], xx - cx[:, None, None]
    mu02, mu11 = (w * dy * dy).reshape(n, -1).sum(1), (w * dx * dy).reshape(n, -1).sum(1)
    slant = -mu11 / np.maximum(mu02, 1e-9)
    if x.shape[1] == 3:
        R, B = (x[:, 0] * is_ink).reshape(n, -1).sum(1), (x[:, 2] * is_ink).reshape(n, -1).sum(1)
        redness = (R - B) / np.maximum(R + B, 1e-9)
    else:
        redness = np.zeros(n)
    f64 = lambda v: np.asarray(v, np.float64)  # noqa: E731
    return {"thickness": f64(thickness), "slant": f64(slant), "redness": f64(redness), "height": f64(height)}


def predict_attributes(images, measured: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """(N, 4) int64 attributes in ATTRIBUTES order: measure() compared with THRESHOLDS (value > threshold -> 1)."""
    m = measure(images) if measured is None else measured
    return np.stack([m[k] > THRESHOLDS[k] for k in ("thickness", "slant", "redness", "height")], 1).astype(np.int64)


def attribute_accuracy(images, attrs_requested) -> dict[str, float]:
    """Share of images whose measured attribute is the one asked for: {thick, slant, red, large, all}; "all" is
    the mean over the four. attrs_requested: (N, 4) in ATTRIBUTES order or (N, 14) condition vectors, binary or
    continuous (rounded at 0.5)."""
    req = attrs_requested.detach().cpu().numpy() if isinstance(attrs_requested, torch.Tensor) else attrs_requested
    req = np.asarray(req, dtype=np.float64)
    if req.ndim != 2 or req.shape[1] not in (4, len(CONDITION_NAMES)):
        raise DataError(f"requested attributes must be (N, 4) or (N, {len(CONDITION_NAMES)}), got {req.shape}")
    req = (req[:, -4:] >= 0.5).astype(np.int64)
    pred = predict_attributes(images)
    if len(pred) != len(req):
        raise DataError(f"{len(pred)} images but {len(req)} requested attribute rows")
    acc = (pred == req).mean(0) if len(req) else np.full(4, np.nan)
    out = {k: float(v) for k, v in zip(ATTRIBUTES, acc, strict=True)}
    out["all"] = float(np.mean(acc))
    return out


# ---------------------------------------------------------------- the data set and its cache
def cache_path(root: str | Path | None = None, seed: int = 0, rare_share: float = RARE_SHARE) -> Path:
    root = Path(root) if root is not None else default_data_root()
    tail = "" if _check_share(rare_share) == RARE_SHARE else f"-rare{rare_share:g}"
    return root / "morpho-mnist" / f"v{VERSION}-seed{int(seed)}{tail}.npz"


_KEYS = ("grey_train", "attrs_train", "y_train", "grey_test", "attrs_test", "y_test")


def build_morpho(root: str | Path | None = None, seed: int = 0, verbose: bool = True, *, source: str = "auto",
                 download: bool = False, progress: Callable[[int, int], None] | None = None,
                 rare_share: float = RARE_SHARE) -> Path:
    """Render the data set from MNIST into cache_path(root, seed) (written to a temporary file, then renamed, so a
    crash never leaves half a cache); returns the path. About 16 s on one core for the 70k images."""
    try:
        arrays = load_mnist_arrays(root, source=source, download=download)
    except DataError as e:
        raise DataError(f"morpho-mnist is rendered from MNIST, which could not be read: {e}") from None
    path = cache_path(root, seed, rare_share)
    total = sum(len(arrays[s][0]) for s in ("train", "test"))
    bar = None
    if verbose and progress is None:
        bar = tqdm(total=total, unit="img", desc="rendering morpho-mnist", file=sys.stderr, dynamic_ncols=True)
    out, offset = {}, 0
    for split in ("train", "test"):
        x, y = arrays[split]

        def tick(k: int, _n: int, offset: int = offset) -> None:
            if bar is not None:
                bar.update(offset + k - bar.n)
            if progress is not None:
                progress(offset + k, total)

        attrs = sample_attributes(y, seed, split, rare_share)
        out[f"grey_{split}"] = render_grey(x, attrs, tick)
        out[f"attrs_{split}"], out[f"y_{split}"] = attrs, np.asarray(y, np.uint8)
        offset += len(x)
    if bar is not None:
        bar.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:  # a file object: np.savez would otherwise append ".npz" to the name
            np.savez_compressed(f, version=np.int64(VERSION), seed=np.int64(seed), **out)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if verbose:
        print(f"morpho-mnist (seed {seed}) written to {path}", file=sys.stderr)
    return path


def _read_cache(path: Path, seed: int) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing, unreadable or from another version."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            arr = {k: z[k] for k in (*_KEYS, "version", "seed")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # a damaged file raises one of these
        print(f"morpho-mnist: rebuilding the unreadable cache {path} ({type(e).__name__})", file=sys.stderr)
        return None
    ok = int(arr["version"]) == VERSION and int(arr["seed"]) == seed and all(
        arr[f"grey_{s}"].shape[1:] == (28, 28) and len(arr[f"grey_{s}"]) == len(arr[f"attrs_{s}"]) ==
        len(arr[f"y_{s}"]) for s in ("train", "test"))
    return arr if ok else None


def load_morpho(root: str | Path | None = None, seed: int = 0, *, source: str = "auto", download: bool = False,
                verbose: bool = True, rare_share: float = RARE_SHARE):
    """The morpho-mnist Dataset, rendered on the first call (build_morpho) and read from the cache afterwards.
    `rare_share` other than RARE_SHARE: each rare combination's share of training (``morpho-mnist-hard``: 0.05%)."""
    path = cache_path(root, seed, rare_share)
    arr = _read_cache(path, seed)
    if arr is None:
        build_morpho(root, seed, verbose, source=source, download=download, rare_share=rare_share)
        arr = _read_cache(path, seed)
        if arr is None:
            raise DataError(f"morpho-mnist: could not read back the cache just written to {path}")
    ytr, yte = (torch.from_numpy(arr[f"y_{s}"].astype(np.int64)) for s in ("train", "test"))
    atr, ate = arr["attrs_train"], arr["attrs_test"]
    info = {"source": "rendered from MNIST", "version": VERSION, "seed": int(seed),
            "attributes": list(CONDITION_NAMES), "measured": list(ATTRIBUTES),
            "rare_combos": [list(c) for c in RARE_COMBOS], "heldout_cells": [list(c) for c in HELDOUT_CELLS],
            "cell_counts_train": cell_counts(ytr.numpy(), atr).tolist(),
            "correlations": np.round(attribute_correlations(atr), 6).tolist()}
    if rare_share != RARE_SHARE:  # the shipped set's info stays as it was
        info["rare_share"] = float(rare_share)
    name = "morpho-mnist" if rare_share == RARE_SHARE else "morpho-mnist-hard" if rare_share == HARD_RARE_SHARE \
        else f"morpho-mnist-rare{rare_share:g}"
    return Dataset(name, colourise(arr["grey_train"], atr[:, 2]), ytr,
                   colourise(arr["grey_test"], ate[:, 2]), yte, 10, [str(d) for d in range(10)], info,
                   {"attributes": condition_vector(ytr, atr)}, {"attributes": condition_vector(yte, ate)})


def morpho_mnist(root=None, source: str = "auto", download: bool = False, **_):
    """Builder for DATASETS. The data set is one fixed set (attribute seed 0): ``load_dataset``'s `seed` is a
    training seed (the CLI passes --seed), and re-drawing the attributes per training seed would change which
    images are rare between runs that are meant to be compared. ``load_morpho(root, seed)`` builds another draw."""
    return load_morpho(root, 0, source=source, download=download)


def morpho_mnist_hard(root=None, source: str = "auto", download: bool = False, **_):
    """Builder for DATASETS: morpho-mnist with the rare combinations at HARD_RARE_SHARE (0.05%) of training each (the
    same attribute seed 0, the same test split)."""
    return load_morpho(root, 0, source=source, download=download, rare_share=HARD_RARE_SHARE)
