"""What the Generate page draws, without Streamlit: a sample grid from fixed prior noise, the latent dimensions
ordered by how much information they carry, a traversal along each of them, an interpolation between two images
(in z, and beside it in pixels), and any of these pictures as PNG bytes.

Fixed noise is the point: the page draws its noise once per (seed, noise shape) with a private generator, so that a
move of beta, nu, tau or the condition changes only what that control changes. Runs of the same latent size and
prior family share their noise, so the beta sweep's grids line up cell by cell.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

GRID = 64  # samples in a grid (8 x 8)
PER_ROW = 8
TRAVERSE = 9  # points along one latent dimension
SPAN = 3.0  # a traversal runs from -SPAN to +SPAN standard deviations of the encoder means around the start
STEPS = 10  # points of an interpolation, end points included
STAT_IMAGES = 1000  # test images behind the per-dimension statistics


# ------------------------------------------------------------------ fixed noise and conditions
def fixed_noise(model, n: int, seed: int) -> torch.Tensor:
    """The model family's prior noise for n samples from a private generator seeded with `seed` (the global RNG is
    not touched, so a training thread may keep using it). Equal for every model with the same noise shape."""
    return model.prior_noise(n, generator=torch.Generator().manual_seed(int(seed)))


def class_rows(noise_row: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise, y) for one row per class with the same noise in every row: column j of every row decodes the noise
    `noise_row[j]`, so a column shows one 'style' across the classes. noise_row (k, ...) -> (K k, ...), y (K k,).
    The Generate page's grid and the Train page's preview (``jobs.TrainingJob``) both draw this way."""
    k = len(noise_row)
    y = torch.arange(num_classes).repeat_interleave(k)
    return noise_row.repeat(num_classes, *[1] * (noise_row.dim() - 1)), y


@torch.no_grad()
def decode_noise(model, noise: torch.Tensor, y: torch.Tensor | None, tau: float) -> torch.Tensor:
    """Images (n, C, H, W) in [0, 1] on the CPU: the prior latents of `noise` at sampling scale `tau`, decoded."""
    return model.sample(len(noise), y=y, tau=float(tau), eps=noise).float().cpu()


# ------------------------------------------------------------------ latent dimensions
@dataclass(frozen=True)
class LatentStats:
    """Per-dimension numbers over STAT_IMAGES test images: the order (most informative first), the score each is
    ordered by and what that score is (``by``: "KL" in nats, or "variance" of the encoder means where the family's KL
    does not factorise over dimensions), and the mean and standard deviation of the encoder means (a traversal's
    centre and step)."""

    order: tuple[int, ...]
    score: tuple[float, ...]  # in `order`
    by: str
    mean: torch.Tensor  # (m,)
    std: torch.Tensor  # (m,)


@torch.no_grad()
def latent_stats(model, x: torch.Tensor, y: torch.Tensor | None) -> LatentStats:
    """Order the latent dimensions by their average KL(q(z_d|x) || p(z_d)) over the images `x` (uint8 or [0, 1]
    floats), or, where the KL does not factorise (Student-t, flow priors), by the variance of the encoder means over
    the images (the active-units statistic). Ties keep the dimension order."""
    device = next(model.parameters()).device
    xb = model.prepare_batch(x.to(device))
    yb = None if y is None else y.to(device)
    q = model.encode(xb, yb)
    mu = q.mean.float()
    kl = model.kl_per_dim(q, yb)
    if kl is not None:
        score, by = kl.float().mean(0), "KL"
    else:
        score, by = mu.var(0, unbiased=False), "variance"
    order = sorted(range(len(score)), key=lambda d: (-float(score[d]), d))
    return LatentStats(tuple(order), tuple(float(score[d]) for d in order), by, mu.mean(0).cpu(),
                       mu.std(0, unbiased=False).cpu())


@torch.no_grad()
def decode(model, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """The decoder's mean images (n, C, H, W) in [0, 1] on the CPU of latents z (n, m)."""
    device = next(model.parameters()).device
    yv = None if y is None else y.to(device)
    return model.mean_image(model.decode(z.to(device, next(model.parameters()).dtype), yv)).float().cpu()


def traversal_latents(start: torch.Tensor, dims: list[int], stats: LatentStats, points: int = TRAVERSE,
                      span: float = SPAN) -> torch.Tensor:
    """(len(dims) points, m) latents: row r moves dimension dims[r] of `start` (m,) through start_d + s * std_d for s
    in linspace(-span, span, points), std_d the spread of the encoder means; the other dimensions stay."""
    steps = torch.linspace(-span, span, points)
    rows = []
    for d in dims:
        z = start.repeat(points, 1)
        z[:, d] = start[d] + steps * stats.std[d]
        rows.append(z)
    return torch.cat(rows)


def interpolation_latents(za: torch.Tensor, zb: torch.Tensor, steps: int = STEPS) -> torch.Tensor:
    """(steps, m) latents on the straight line from za to zb, both ends included."""
    t = torch.linspace(0, 1, steps).unsqueeze(1)
    return (1 - t) * za + t * zb


def pixel_blend(xa: torch.Tensor, xb: torch.Tensor, steps: int = STEPS) -> torch.Tensor:
    """(steps, C, H, W) images (1 - t) xa + t xb: the interpolation in pixels, to set beside the one in z."""
    t = torch.linspace(0, 1, steps).view(-1, 1, 1, 1)
    return (1 - t) * xa.float() + t * xb.float()


def endpoint_conditions(ya: torch.Tensor | None, yb: torch.Tensor | None, steps: int = STEPS
                        ) -> torch.Tensor | None:
    """The condition of each interpolation point: the nearer end's (a's for the first half, b's for the second), so
    that no point is decoded with a mixture of two classes that no training image had."""
    if ya is None:
        return None
    near_a = torch.linspace(0, 1, steps) < 0.5
    return torch.stack([ya if a else yb for a in near_a.tolist()])


# ------------------------------------------------------------------ pictures
def grid_array(images: torch.Tensor, nrow: int = PER_ROW, scale: int = 3) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> a uint8 grid picture, (H', W') for one channel and (H', W', 3) otherwise,
    upscaled by `scale` without blurring (2 px grey borders between the images)."""
    g = tile(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=0.35)  # (C, H', W')
    arr = g.mul(255).round_().to(torch.uint8)
    out = arr.permute(1, 2, 0).numpy()
    out = out[:, :, 0] if images.shape[1] == 1 else out
    return out.repeat(scale, axis=0).repeat(scale, axis=1)


def tile(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: float = 0.0) -> torch.Tensor:
    """(N, C, H, W) -> (C, H', W'): the images in rows of `nrow`, `padding` pixels of `pad_value` around each; one
    image is returned as it is. The same picture as ``torchvision.utils.make_grid`` (tests/eval/test_generate.py
    compares them), whose import (torchvision, then torch._dynamo: 1.9 s on a 2-core CPU) was most of the time
    before the Home page's first grid showed."""
    if images.shape[0] == 1:
        return images[0]
    n, c, h, w = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    out = images.new_full((c, rows * (h + padding) + padding, cols * (w + padding) + padding), pad_value)
    for k in range(n):
        y, x = (k // cols) * (h + padding) + padding, (k % cols) * (w + padding) + padding
        out[:, y:y + h, x:x + w] = images[k]
    return out


def png_bytes(picture: np.ndarray) -> bytes:
    """A uint8 picture (H, W) or (H, W, 3) as PNG bytes (zlib level 1: a 64-image grid in a few milliseconds)."""
    from PIL import Image  # optional (it comes with torchvision and streamlit): here, not on import

    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
