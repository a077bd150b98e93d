"""Evaluation metrics (SPEC section 1): negative ELBO (nats/image and bits/dim), importance-sampled NLL,
rate and distortion, KL per latent dimension, active units, per-pixel MSE.

Images are continuous values in [0, 1], so Gaussian likelihoods are densities: nats can be negative and bits/dim
are those of a continuous density (no dequantisation offset), comparable only between models on the same data.
"""

from __future__ import annotations

import math

import torch

from cvae_core.data import check_images, check_labels
from cvae_core.errors import ConfigError, DataError
from cvae_core.models.base import LatentModel
from cvae_core.models.gaussian import gaussian_nll


def logmeanexp(a: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(a, dim) - math.log(a.shape[dim])


@torch.no_grad()
def importance_nll(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None, n_samples: int,
                   max_decode: int = 4096, log_sigma: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """-log (1/S) sum_s p(x|z_s) p(z_s) / q(z_s|x), z_s ~ q(z|x); per item (B,). Also returns the same-sample
    ELBO estimate, so that IS-NLL <= -ELBO holds item by item (Jensen). p(z) is the model's prior at the items'
    conditions (a learned flow prior p(z|y) included).

    Decodes at most `max_decode` images at once (memory stays bounded for any S). The likelihood component sees
    one importance sample of the B images at a time, so a variance shared per batch (sigma_vae) is pooled over
    the same B images as in training. With `log_sigma`, p(x|z) is instead the Gaussian N(decoder mean, sigma^2)
    at that fixed log sigma (a variance frozen at its training value: a likelihood that does not fit itself to
    the images it scores)."""
    q = model.encode(x, y)
    B = len(x)
    chunk = max(1, max_decode // B)
    log_w = []
    for s0 in range(0, n_samples, chunk):
        S = min(chunk, n_samples - s0)
        z = q.sample((S,))  # (S, B, m)
        yy = None if y is None else y.repeat(S, *([1] * (y.dim() - 1)))
        logits = model.decode(z.reshape(S * B, -1), yy).view(S, B, *x.shape[1:])
        if log_sigma is None:
            log_px = torch.stack([-model.nll(x, logits[s])[0] for s in range(S)])  # (S, B)
        else:
            log_px = torch.stack([-gaussian_nll(x, model.mean_image(logits[s]), log_sigma) for s in range(S)])
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


class TickMeans:
    """A fit() callback that computes the encoder means of fixed images once per log tick, records their active
    units (``au``) and hands them to every callback with ``on_means(model, record, means, labels)`` (a live
    certificate, a latent map), instead of one encoder pass each. ``jobs.TrainingJob`` does the same for the app."""

    def __init__(self, x: torch.Tensor, cond: torch.Tensor | None, labels: torch.Tensor, callbacks=()):
        self.x, self.cond, self.labels, self.callbacks = x, cond, labels, list(callbacks)

    @torch.no_grad()
    def on_log(self, model: LatentModel, record: dict, history) -> None:
        was_training = model.training
        model.eval()
        means = encoder_means(model, self.x, self.cond if model.conditional else None)
        record["au"] = active_units(means)
        for cb in self.callbacks:
            cb.on_means(model, record, means, self.labels)
        model.train(was_training)


def active_units(means: torch.Tensor, threshold: float = 0.01) -> int:
    """AU = #{j : Var_x(E_q[z_j]) > threshold} (Burda et al. 2016), from encoder means (N, m); 0 for one image
    (no spread to measure)."""
    if len(means) < 2:
        return 0
    return int((means.var(0) > threshold).sum())


@torch.no_grad()
def train_sigma(model: LatentModel, x_u8: torch.Tensor, y: torch.Tensor | None = None, *, max_items: int = 5_000,
                batch_size: int = 500, seed: int = 0) -> float:
    """The decoder standard deviation a calibrated-variance model settles on over its training data:
    sigma^2 = mean over pixels and items of (x - xhat(z))^2 with z ~ q(z|x), as in training (SPEC section 1). Uses
    an evenly spaced subset of at most `max_items` images (the estimate's relative error is far below 1% there)."""
    device = next(model.parameters()).device
    idx = torch.linspace(0, len(x_u8) - 1, min(max_items, len(x_u8))).round().long()
    sq, count = 0.0, 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, len(idx), batch_size):
            b = idx[i : i + batch_size]
            x = model.prepare_batch(x_u8[b].to(device))
            yb = None if y is None or not model.conditional else y[b].to(device)
            xhat = model.mean_image(model.decode(model.encode(x, yb).sample(), yb))
            sq += (x - xhat).pow(2).sum().item()
            count += x.numel()
    return math.sqrt(sq / count)


def check_inputs(model: LatentModel, x: torch.Tensor, y: torch.Tensor | None, what: str) -> None:
    """One-line errors, before any work, for images that are not the model's (``check_images``: shape, dtype, NaN,
    range; one host sync) and for a condition y that a conditional model lacks, of another length than x, or with class
    indices outside the model's classes."""
    check_images(x, model.config.image_shape, what=what, min_items=1)
    if not model.conditional:
        return
    if y is None:
        raise ConfigError(f"{what}: {type(model).__name__} is conditional: it needs the {model.config.condition} "
                          "condition y of the images")
    if model.class_conditional:
        check_labels(y, model.config.num_classes, len(x), what=f"{what}: y")
    elif not (torch.is_tensor(y) and y.dim() == 2 and y.shape == (len(x), model.cond_dim)):
        got = f"{y.dtype} of shape {tuple(y.shape)}" if torch.is_tensor(y) else type(y).__name__
        raise DataError(f"{what}: y must be the attribute vectors ({len(x)}, {model.cond_dim}), got {got}")


@torch.no_grad()
def evaluate(model: LatentModel, x_u8: torch.Tensor, y: torch.Tensor | None = None, *, batch_size: int = 500,
             is_samples: int = 0, seed: int = 0, au_threshold: float = 0.01, extras: dict | None = None,
             train_x: torch.Tensor | None = None, train_y: torch.Tensor | None = None,
             train_sigma_value: float | None = None, means_out: list | None = None) -> dict:
    """Metrics on a held-out set of uint8 images. Reproducible: the noise is seeded and the global RNG kept.

    The family's own named terms are averaged (``item_terms``): `loss` is its objective, `rate` and `distortion`
    the terms its ``rate_key`` / ``distortion_key`` name, `neg_elbo` when the family has one. Likelihood components
    that pool over a batch (sigma_vae's shared variance) see batches of `batch_size`.

    With `train_x` (the training images), models whose decoder variance is fitted to the images being scored
    (sigma_vae, bs_vae, sigma_cvae) also get `neg_elbo_train_sigma`: the test -ELBO with the variance frozen at its
    training-set value `train_sigma` (a fair figure to compare models by); for fixed-variance models it equals
    `neg_elbo`. A caller that scores several subsets of one test set passes the `train_sigma_value` it already has
    (the same seeded number ``train_sigma`` would give), so the training images are not decoded again.

    With `train_x`, every Gaussian-decoder model (fixed variance included) also gets ``distortion_train_sigma``:
    the test -log p(x|z), z ~ q(z|x), of a Gaussian decoder whose variance is the model's own training-set MSE
    (``train_mse_sigma`` its sigma): a distortion that compares models of different likelihoods, the y axis of the
    rate-distortion curve. For a calibrated model it is ``neg_elbo_train_sigma`` minus the rate. With `is_samples`
    as well, ``is_nll_train_sigma`` is the importance-sampled NLL of that same Gaussian decoder (sigma =
    ``train_sigma`` for a calibrated model, ``train_mse_sigma`` for a fixed-variance one): a likelihood that compares
    models of different decoders.

    Example (a shipped run against the numbers its folder recorded on the same 500 test images):
        >>> import json, pathlib, cvae_core
        >>> from cvae_core import evaluate, load_dataset, load_run
        >>> run = pathlib.Path(cvae_core.__file__).parents[1] / "checkpoints" / "mnist_vae"
        >>> model, info = load_run(run)
        >>> m = evaluate(model, load_dataset("mnist").x_test[:500])
        >>> sorted(k for k in m if k in ("loss", "rate", "distortion", "neg_elbo", "au"))
        ['au', 'distortion', 'loss', 'neg_elbo', 'rate']
        >>> abs(m["neg_elbo"] - info["check"]["neg_elbo"]) < 1e-3 * abs(info["check"]["neg_elbo"])
        True
    """
    check_inputs(model, x_u8, y, what="evaluate")
    if train_x is not None:
        check_inputs(model, train_x, train_y if model.conditional else None, what="evaluate: train_x")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n_pix = model.n_pixels
    yc = y if model.conditional else None
    fixed_sigma = d_sigma = None
    if train_x is not None and model.calibrated_variance:
        fixed_sigma = train_sigma_value if train_sigma_value is not None else train_sigma(model, train_x, train_y,
                                                                                           seed=seed)
    if train_x is not None and getattr(model.config, "likelihood", "gaussian") == "gaussian":
        # every Gaussian-decoder family, fixed variance too: the distortion at sigma^2 = its training-set MSE
        d_sigma = fixed_sigma if fixed_sigma is not None else train_sigma(model, train_x, train_y, seed=seed)
    if d_sigma is not None:
        frozen_gen = torch.Generator(device).manual_seed(seed + 1)
    sums: dict[str, float] = {}
    kl_dims, means = [], []

    def add(key: str, v: torch.Tensor) -> None:
        sums[key] = sums.get(key, 0.0) + v.sum().item()

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for i in range(0, len(x_u8), batch_size):
            x = model.prepare_batch(x_u8[i : i + batch_size].to(device))
            yb = None if yc is None else yc[i : i + batch_size].to(device)
            eb = {k: v[i : i + batch_size].to(device) for k, v in (extras or {}).items()} or None
            for k, v in model.item_terms(x, yb, eb).items():
                add(k, v)
            q = model.encode(x, yb)
            add("mse_at_mean", (model.mean_image(model.decode(q.mean, yb)) - x).pow(2).flatten(1).mean(1))
            if d_sigma is not None:  # its own seeded generator: the numbers above do not depend on it
                z = torch.normal(q.mean, q.stddev, generator=frozen_gen)
                # the frozen variance makes the likelihood a plain Gaussian at sigma = train_sigma
                nll = gaussian_nll(x, model.mean_image(model.decode(z, yb)), math.log(d_sigma))
                add("distortion_frozen", nll)
                if fixed_sigma is not None:
                    add("neg_elbo_frozen", nll + model.kl(q, z, yb))
            kd = model.kl_per_dim(q, yb)
            if kd is not None:
                kl_dims.append(kd.sum(0))
            means.append(q.mean.float().cpu())
            if is_samples:
                add("is_nll", importance_nll(model, x, yb, is_samples)[0])
                if d_sigma is not None:  # its own seeded draws: the numbers above do not depend on it
                    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                        torch.manual_seed(seed + 2 + i)
                        add("is_nll_frozen", importance_nll(model, x, yb, is_samples,
                                                            log_sigma=math.log(d_sigma))[0])
    n = len(x_u8)
    avg = {k: v / n for k, v in sums.items()}
    mu = torch.cat(means)  # (N, m)
    if means_out is not None:  # the encoder means, for a caller that needs them too (no second encoder pass)
        means_out.append(mu)
    out = {
        "loss": avg["loss"],
        "rate": avg[model.rate_key],
        "distortion": avg[model.distortion_key],
        "mse": avg["mse_at_mean"],
        "au": active_units(mu, au_threshold),
        "kl_per_dim": (torch.stack(kl_dims).sum(0) / n).tolist() if kl_dims else None,
        "n_test": n,
    }
    if "neg_elbo" in avg:
        out["neg_elbo"] = avg["neg_elbo"]
        out["bits_per_dim"] = avg["neg_elbo"] / (n_pix * math.log(2))
        if train_x is not None:
            out["neg_elbo_train_sigma"] = avg.get("neg_elbo_frozen", avg["neg_elbo"])
    if fixed_sigma is not None:
        out["train_sigma"] = fixed_sigma
    if d_sigma is not None:  # a distortion that compares across likelihoods (the rate-distortion curve's)
        out["distortion_train_sigma"], out["train_mse_sigma"] = avg["distortion_frozen"], d_sigma
    if "log_sigma" in avg:
        out["log_sigma"] = avg["log_sigma"]
    if is_samples:
        out["is_nll"] = avg["is_nll"]
        out["is_samples"] = is_samples
        if "is_nll_frozen" in avg:
            out["is_nll_train_sigma"] = avg["is_nll_frozen"]
    out.update(model.family_numbers())
    model.train(was_training)
    return out


CHECK_SLICE = 500  # test images behind a run's check.json
CHECK_KEYS = ("loss", "rate", "distortion", "mse", "neg_elbo", "au")


def check_numbers(model: LatentModel, data) -> dict:
    """Numbers a run folder records (check.json) so that a reload can be verified exactly: ``evaluate`` on the first
    CHECK_SLICE test images with seed 0, plus the mean of 8 samples from fixed noise. A bug that fresh weights hide
    (swapped mean/log-variance heads, a wrong scale, a dtype slip) changes them."""
    x, y = data.x_test[:CHECK_SLICE], data.y_for(model, "test")[:CHECK_SLICE]
    m = evaluate(model, x, y, seed=0, extras={k: v[:CHECK_SLICE] for k, v in data.extras_test.items()})
    out = {k: m[k] for k in CHECK_KEYS if k in m}
    noise = model.prior_noise(8, generator=torch.Generator().manual_seed(0))
    yy = (torch.arange(8) % model.config.num_classes if model.class_conditional
          else y[:8] if model.conditional else None)  # attribute models: the first test images' conditions
    out["sample_mean"] = model.sample(8, yy, eps=noise).float().mean().item()
    out["n_test"] = len(x)
    return out
