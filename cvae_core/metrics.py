"""Evaluation metrics (SPEC section 1): negative ELBO (nats/image and bits/dim), importance-sampled NLL,
rate and distortion, KL per latent dimension, active units, per-pixel MSE.

Images are continuous values in [0, 1], so Gaussian likelihoods are densities: nats can be negative and bits/dim
are those of a continuous density (no dequantisation offset), comparable only between models on the same data.
"""

from __future__ import annotations

import math

import torch

from .models.base import LatentModel


def logmeanexp(a: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(a, dim) - math.log(a.shape[dim])


@torch.no_grad()
def importance_nll(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None, n_samples: int,
                   max_decode: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """-log (1/S) sum_s p(x|z_s) p(z_s) / q(z_s|x), z_s ~ q(z|x); per item (B,). Also returns the same-sample
    ELBO estimate, so that IS-NLL <= -ELBO holds item by item (Jensen).

    Decodes at most `max_decode` images at once (memory stays bounded for any S). The likelihood component sees
    one importance sample of the B images at a time, so a variance shared per batch (sigma_vae) is pooled over
    the same B images as in training."""
    q = model.encode(x, y)
    B = len(x)
    chunk = max(1, max_decode // B)
    log_w = []
    for s0 in range(0, n_samples, chunk):
        S = min(chunk, n_samples - s0)
        z = q.sample((S,))  # (S, B, m)
        yy = None if y is None else y.repeat(S, *([1] * (y.dim() - 1)))
        logits = model.decode(z.reshape(S * B, -1), yy).view(S, B, *x.shape[1:])
        log_px = torch.stack([-model.nll(x, logits[s])[0] for s in range(S)])  # (S, B)
        log_pz = model.prior(yy, S * B).log_prob(z.reshape(S * B, -1)).view(S, B)
        log_w.append(log_px + log_pz - q.log_prob(z))
    log_w = torch.cat(log_w)  # (S, B)
    return -logmeanexp(log_w, 0), -log_w.mean(0)


@torch.no_grad()
def encoder_means(model: LatentModel, x_u8: torch.Tensor, y: torch.Tensor | None = None,
                  batch_size: int = 500) -> torch.Tensor:
    """E_q[z | x] for every image, (N, m) float32 on the CPU. Deterministic (no sampling)."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(x_u8), batch_size):
        yb = None if y is None else y[i : i + batch_size].to(device)
        out.append(model.encode(model.prepare_batch(x_u8[i : i + batch_size].to(device)), yb).mean.float().cpu())
    return torch.cat(out)


def active_units(means: torch.Tensor, threshold: float = 0.01) -> int:
    """AU = #{j : Var_x(E_q[z_j]) > threshold} (Burda et al. 2016), from encoder means (N, m)."""
    return int((means.var(0) > threshold).sum())


@torch.no_grad()
def evaluate(model: LatentModel, x_u8: torch.Tensor, y: torch.Tensor | None = None, *, batch_size: int = 500,
             is_samples: int = 0, seed: int = 0, au_threshold: float = 0.01) -> dict:
    """Metrics on a held-out set of uint8 images. Reproducible: the noise is seeded and the global RNG kept.

    Likelihood components that pool over a batch (sigma_vae's shared variance) see batches of `batch_size`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n_pix = model.n_pixels
    sums = {"rec": 0.0, "kl": 0.0, "mse": 0.0, "is_nll": 0.0}
    kl_dims, means = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, len(x_u8), batch_size):
            x = model.prepare_batch(x_u8[i : i + batch_size].to(device))
            yb = None if y is None else y[i : i + batch_size].to(device)
            q = model.encode(x, yb)
            z = q.sample()
            logits = model.decode(z, yb)
            sums["rec"] += model.nll(x, logits)[0].sum().item()
            sums["kl"] += model.kl(q, z, yb).sum().item()
            sums["mse"] += (model.reconstruct(x, yb) - x).pow(2).flatten(1).mean(1).sum().item()
            kd = model.kl_per_dim(q, yb)
            if kd is not None:
                kl_dims.append(kd.sum(0))
            means.append(q.mean.float().cpu())
            if is_samples:
                sums["is_nll"] += importance_nll(model, x, yb, is_samples)[0].sum().item()
    n = len(x_u8)
    mu = torch.cat(means)  # (N, m)
    rate, distortion = sums["kl"] / n, sums["rec"] / n
    neg_elbo = distortion + rate
    out = {
        "neg_elbo": neg_elbo,
        "bits_per_dim": neg_elbo / (n_pix * math.log(2)),
        "rate": rate,
        "distortion": distortion,
        "loss": distortion + model.config.beta * rate,
        "mse": sums["mse"] / n,
        "au": active_units(mu, au_threshold),
        "kl_per_dim": (torch.stack(kl_dims).sum(0) / n).tolist() if kl_dims else None,
        "n_test": n,
    }
    if is_samples:
        out["is_nll"] = sums["is_nll"] / n
        out["is_samples"] = is_samples
    model.train(was_training)
    return out
