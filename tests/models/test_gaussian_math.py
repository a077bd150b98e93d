"""SPEC section 1, the Gaussian family's likelihood and KL terms, each checked against an independent computation
(torch.distributions, a brute-force formula in numpy, scipy's optimiser, Monte Carlo, autograd). Float64 throughout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import optimize
from torch.distributions import Bernoulli, Independent, Normal, kl_divergence

from cvae_core.models.gaussian import (
    bernoulli_nll,
    gaussian_nll,
    kl_std_normal_per_dim,
    sigma_batch_nll,
    sigma_image_distortion,
    soft_clip_log_sigma,
)
from cvae_core.registry import build_model


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _np_gauss_nll(x: np.ndarray, mean: np.ndarray, log_sigma) -> np.ndarray:
    """Brute-force -log N(x; mean, sigma^2) summed over every axis but the first."""
    s2 = np.exp(2 * np.asarray(log_sigma, dtype=np.float64))
    v = 0.5 * (x - mean) ** 2 / s2 + 0.5 * np.log(2 * np.pi * s2)
    return np.broadcast_to(v, x.shape).reshape(len(x), -1).sum(1)


# ---------------------------------------------------------------- gaussian_nll / bernoulli_nll
@pytest.mark.parametrize("kind", ["scalar_float", "scalar_tensor", "per_image", "per_pixel"])
def test_gaussian_nll_matches_torch_normal(kind):
    g = _gen(0)
    x = torch.rand(5, 3, 4, 4, generator=g)
    mean = torch.rand(5, 3, 4, 4, generator=g)
    log_sigma = {"scalar_float": -1.3, "scalar_tensor": torch.tensor(0.4),
                 "per_image": torch.randn(5, 1, 1, 1, generator=g),
                 "per_pixel": torch.randn(5, 3, 4, 4, generator=g)}[kind]
    got = gaussian_nll(x, mean, log_sigma)
    ref = -Normal(mean, torch.exp(torch.as_tensor(log_sigma))).log_prob(x).flatten(1).sum(1)
    assert got.shape == (5,)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.numpy(), _np_gauss_nll(x.numpy(), mean.numpy(),
                                                          torch.as_tensor(log_sigma).numpy()), rtol=1e-12)


def test_bernoulli_nll_matches_brute_force():
    g = _gen(1)
    logits = 4 * torch.randn(4, 1, 5, 5, generator=g)
    x = torch.rand(4, 1, 5, 5, generator=g)  # grey values: cross-entropy
    x[0] = (x[0] > 0.5).double()  # one binary image
    got = bernoulli_nll(x, logits)
    p = 1 / (1 + np.exp(-logits.numpy()))
    xn = x.numpy()
    ref = np.zeros(4)
    for i in range(4):  # the loop the formula describes
        for v, pv in zip(xn[i].ravel(), p[i].ravel(), strict=True):
            ref[i] -= v * math.log(pv) + (1 - v) * math.log(1 - pv)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)
    # on a binary image it is the Bernoulli log-likelihood
    ref_bin = -Bernoulli(logits=logits[0]).log_prob(x[0]).sum()
    torch.testing.assert_close(got[0], ref_bin, rtol=1e-12, atol=1e-12)


def test_bernoulli_nll_stable_for_extreme_logits():
    logits = torch.tensor([[[[200.0, -200.0]]]])
    x = torch.tensor([[[[1.0, 0.0]]]])
    assert bernoulli_nll(x, logits).item() == pytest.approx(0.0, abs=1e-80)
    assert bernoulli_nll(1 - x, logits).item() == pytest.approx(400.0, rel=1e-12)  # log(1+e^200) ~ 200, twice


# ---------------------------------------------------------------- soft clip
def test_soft_clip_formula_and_bounds():
    ls = torch.linspace(-60, 40, 401)
    got = soft_clip_log_sigma(ls)
    ref = -6 + np.logaddexp(0.0, ls.numpy() + 6)  # -6 + softplus(log sigma + 6), SPEC section 1
    # atol 3e-9: torch's softplus returns its input above 20, an error of at most log1p(e^-20) = 2.1e-9
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-13, atol=3e-9)
    assert (got >= -6).all()  # lower bound
    assert got[0].item() == pytest.approx(-6.0, abs=1e-20)  # at -60 the bound is reached to float precision
    assert (torch.diff(got) >= 0).all()  # non-decreasing; strictly where -6 + softplus is resolvable in float64
    assert (torch.diff(got[ls >= -30]) > 0).all()
    far = ls > 10  # identity far above the floor: error log1p(exp(-(ls+6))) < 1.2e-7
    assert (got[far] - ls[far]).abs().max().item() < 1.2e-7
    # close to the floor it is not the identity: at log sigma = -6 it gives -6 + log 2
    assert soft_clip_log_sigma(torch.tensor(-6.0)).item() == pytest.approx(-6 + math.log(2), rel=1e-14)


def test_soft_clip_gradient_is_sigmoid():
    ls = torch.linspace(-20, 20, 81, requires_grad=True)
    (g,) = torch.autograd.grad(soft_clip_log_sigma(ls).sum(), ls)
    ref = 1 / (1 + np.exp(-(ls.detach().numpy() + 6)))
    np.testing.assert_allclose(g.numpy(), ref, rtol=1e-12, atol=3e-9)  # 3e-9: softplus is linear above 20


# ---------------------------------------------------------------- sigma-VAE: one optimal sigma per batch
def _residual_batch(seed: int, scale: float, shape=(6, 2, 5, 5)):
    g = _gen(seed)
    mean = torch.rand(*shape, generator=g)
    x = mean + scale * torch.randn(*shape, generator=g)
    return x, mean


@pytest.mark.parametrize("scale", [0.05, 1.0, 7.0])
def test_sigma_vae_sigma_is_clipped_root_mse(scale):
    x, mean = _residual_batch(2, scale)
    _, log_sigma = sigma_batch_nll(x, mean)
    mse = np.mean((x.numpy() - mean.numpy()) ** 2)  # over all of (B, C, H, W)
    ref = -6 + np.logaddexp(0.0, 0.5 * np.log(mse) + 6)
    assert log_sigma.shape == ()
    assert log_sigma.item() == pytest.approx(ref, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("scale", [0.05, 1.0, 7.0])
def test_sigma_vae_optimal_sigma_minimises_gaussian_nll(scale):
    """scipy minimises the batch-mean Gaussian NLL over one shared log sigma; the model's sigma must be that
    minimiser, up to the soft clip's shift delta = log1p(exp(-(log sigma* + 6)))."""
    x, mean = _residual_batch(3, scale)
    xn, mn = x.numpy(), mean.numpy()
    res = optimize.minimize_scalar(lambda s: _np_gauss_nll(xn, mn, s).mean(), bounds=(-10, 10),
                                   method="bounded", options={"xatol": 1e-10})
    nll, log_sigma = sigma_batch_nll(x, mean)
    delta = math.log1p(math.exp(-(res.x + 6)))
    assert abs(log_sigma.item() - res.x) <= delta + 1e-6  # 1e-6: the optimiser's tolerance on a flat minimum
    # the NLL the model reports is the Gaussian NLL at its sigma, and is within n*delta^2 (+ slack) of scipy's min
    np.testing.assert_allclose(nll.numpy(), _np_gauss_nll(xn, mn, log_sigma.item()), rtol=1e-12)
    n = x[0].numel()
    assert nll.mean().item() >= res.fun - 1e-9
    assert nll.mean().item() - res.fun <= n * delta**2 * 1.01 + 1e-9


@pytest.mark.parametrize("scale", [1.0, 7.0])
def test_sigma_vae_batch_mean_nll_closed_form(scale):
    """Mean over the batch = (n/2)(1 + log(2 pi sigma*^2)) when the clip is inactive (log sigma* >= 0 here:
    the clip shifts log sigma by delta <= 2.5e-3 and the NLL, stationary there, by n*delta^2 <= 6e-6*n)."""
    x, mean = _residual_batch(4, scale)
    n = x[0].numel()
    s2 = np.mean((x.numpy() - mean.numpy()) ** 2)
    nll, _ = sigma_batch_nll(x, mean)
    closed = 0.5 * n * (1 + np.log(2 * np.pi * s2))
    assert nll.mean().item() == pytest.approx(closed, rel=1e-5)
    # per image it is not constant: images with larger residuals get a larger NLL
    per_img_sse = ((x - mean) ** 2).flatten(1).sum(1)
    assert torch.equal(torch.argsort(nll), torch.argsort(per_img_sse))


def test_sigma_vae_gradient_envelope_theorem():
    """sigma* is not detached; by the envelope theorem the gradient wrt the decoder mean equals that with sigma
    held fixed at sigma*, and equals the closed form d/dmean (n/2) log mean (x-mean)^2."""
    x, mean = _residual_batch(5, 7.0)  # clip inactive: log sigma* ~ 2, shift 3e-4
    mean.requires_grad_(True)
    nll, log_sigma = sigma_batch_nll(x, mean)
    (g_free,) = torch.autograd.grad(nll.mean(), mean)
    (g_fixed,) = torch.autograd.grad(gaussian_nll(x, mean, log_sigma.detach()).mean(), mean)
    n, N = x[0].numel(), x.numel()
    r = (x - mean).detach()
    g_closed = 0.5 * n * (-2 * r / N) / r.pow(2).mean()
    torch.testing.assert_close(g_free, g_closed, rtol=1e-5, atol=0)  # tolerance: 2*delta from the soft clip
    torch.testing.assert_close(g_fixed, g_closed, rtol=2e-3, atol=0)


def test_sigma_functions_gradcheck():
    x, mean = _residual_batch(6, 0.3, shape=(3, 1, 2, 3))
    mean.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda m: sigma_batch_nll(x, m)[0], (mean,))
    assert torch.autograd.gradcheck(lambda m: sigma_image_distortion(x, m)[0], (mean,))


# ---------------------------------------------------------------- Beta-Sigma VAE: one optimal sigma per image
def test_bs_vae_distortion_matches_spec_formula():
    g = _gen(7)
    x = torch.rand(8, 3, 6, 6, generator=g)
    mean = torch.rand(8, 3, 6, 6, generator=g)
    mean[0] = x[0]  # a perfect reconstruction: MSE 0, D = (n/2)(log 1e-5 + 1) stays finite
    d, log_sigma = sigma_image_distortion(x, mean)
    xn, mn = x.numpy(), mean.numpy()
    n = 3 * 6 * 6
    ref = np.empty(8)
    for i in range(8):  # SPEC: D_i = (n/2)(log(2 pi MSE_i + 1e-5) + 1), MSE_i over the pixels of image i
        mse_i = sum((a - b) ** 2 for a, b in zip(xn[i].ravel(), mn[i].ravel(), strict=True)) / n
        ref[i] = n / 2 * (math.log(2 * math.pi * mse_i + 1e-5) + 1)
    np.testing.assert_allclose(d.numpy(), ref, rtol=1e-12)
    assert d[0].item() == pytest.approx(n / 2 * (math.log(1e-5) + 1), rel=1e-12)
    assert log_sigma.shape == (8,)


def test_bs_vae_per_image_sigma_minimises_each_images_nll():
    g = _gen(8)
    mean = torch.rand(5, 1, 7, 7, generator=g)
    scales = torch.tensor([0.1, 0.3, 1.0, 2.0, 0.05]).view(5, 1, 1, 1)
    x = mean + scales * torch.randn(5, 1, 7, 7, generator=g)
    d, log_sigma = sigma_image_distortion(x, mean)
    xn, mn = x.numpy(), mean.numpy()
    n = 49
    for i in range(5):
        f = lambda s, i=i: _np_gauss_nll(xn[i : i + 1], mn[i : i + 1], s)[0]  # noqa: E731
        res = optimize.minimize_scalar(f, bounds=(-10, 10), method="bounded", options={"xatol": 1e-10})
        s2_opt = math.exp(2 * res.x)
        s2_model = math.exp(2 * log_sigma[i].item())
        # the model's variance is MSE_i + 1e-5/(2 pi): the minimiser shifted by the constant in D's log.
        # rel 1e-6: the optimiser locates a flat minimum to ~sqrt(machine eps); the shift is >= 6e-4 relative here
        assert s2_model == pytest.approx(s2_opt + 1e-5 / (2 * math.pi), rel=1e-6)
        # D_i is the minimal NLL up to (n/2) log(1 + 1e-5/(2 pi MSE_i)) (< 2e-3 nats here)
        gap = n / 2 * math.log1p(1e-5 / (2 * math.pi * s2_opt))
        assert d[i].item() - res.fun == pytest.approx(gap, abs=1e-6)


# ---------------------------------------------------------------- KL(q || N(0, I))
def test_kl_closed_form_vs_torch_kl_divergence():
    g = _gen(9)
    mu = 2 * torch.randn(7, 5, generator=g)
    log_sigma = torch.randn(7, 5, generator=g)
    got = kl_std_normal_per_dim(mu, log_sigma)
    ref = kl_divergence(Normal(mu, log_sigma.exp()), Normal(torch.zeros(()), torch.ones(())))
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    assert (got >= 0).all()
    assert kl_std_normal_per_dim(torch.zeros(3), torch.zeros(3)).abs().max().item() == 0.0


def test_kl_closed_form_vs_monte_carlo():
    """KL = E_q[log q(z) - log p(z)] estimated with 400k samples (seed 10). Tolerance: 5 standard errors of the
    MC mean (computed from the same samples), so a wrong constant or factor of 2 fails while noise passes."""
    mu = torch.tensor([0.5, -1.0, 2.0, 0.0])
    log_sigma = torch.tensor([-0.5, 0.3, 0.0, -2.0])
    q = Independent(Normal(mu, log_sigma.exp()), 1)
    p = Independent(Normal(torch.zeros(4), torch.ones(4)), 1)
    z = mu + log_sigma.exp() * torch.randn(400_000, 4, generator=_gen(10))  # z ~ q
    terms = (q.log_prob(z) - p.log_prob(z)).numpy()
    se = terms.std(ddof=1) / math.sqrt(len(terms))
    closed = kl_std_normal_per_dim(mu, log_sigma).sum().item()
    assert abs(terms.mean() - closed) < 5 * se
    assert se < 0.01  # the test has power: 5 SE < 0.05 nats on a KL of ~4.4 nats


@pytest.mark.parametrize("name", ["vae", "sigma_vae", "bs_vae"])
def test_model_kl_per_dim_sums_to_kl_and_matches_torch(name):
    torch.manual_seed(11)
    model = build_model(name, arch="mlp", hidden=16, latent_dim=6, image_shape=(1, 4, 4)).double()
    x = torch.rand(9, 1, 4, 4, generator=_gen(12))
    q = model.encode(x)
    kd = model.kl_per_dim(q)
    assert kd.shape == (9, 6)
    torch.testing.assert_close(kd.sum(-1), model.kl(q), rtol=1e-13, atol=1e-13)
    ref = kl_divergence(q, model.prior(n=9))  # Independent(Normal) vs Independent(Normal), registered in torch
    torch.testing.assert_close(model.kl(q), ref, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- the models' nll components
def test_model_nll_components_match_independent_likelihoods():
    torch.manual_seed(13)
    g = _gen(14)
    x = torch.rand(4, 1, 4, 4, generator=g)
    logits = 2 * torch.randn(4, 1, 4, 4, generator=g)
    m = torch.sigmoid(logits)
    kw = dict(arch="mlp", hidden=8, latent_dim=2, image_shape=(1, 4, 4))

    vae = build_model("vae", sigma=0.3, **kw)
    ref = -Normal(m, 0.3).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(vae.nll(x, logits)[0], ref, rtol=1e-12, atol=1e-12)

    bern = build_model("vae", likelihood="bernoulli", **kw)
    xb = (x > 0.5).double()
    torch.testing.assert_close(bern.nll(xb, logits)[0], -Bernoulli(logits=logits).log_prob(xb).flatten(1).sum(1),
                               rtol=1e-12, atol=1e-12)

    sig = build_model("sigma_vae", **kw)
    nll, extras = sig.nll(x, logits)
    ls = -6 + np.logaddexp(0, 0.5 * np.log(np.mean((x - m).numpy() ** 2)) + 6)
    torch.testing.assert_close(nll, -Normal(m, math.exp(ls)).log_prob(x).flatten(1).sum(1), rtol=1e-12, atol=1e-12)
    assert extras["log_sigma"].item() == pytest.approx(ls, rel=1e-12)

    bs = build_model("bs_vae", **kw)
    d, extras = bs.nll(x, logits)
    mse = ((x - m) ** 2).flatten(1).mean(1).numpy()
    np.testing.assert_allclose(d.numpy(), 16 / 2 * (np.log(2 * np.pi * mse + 1e-5) + 1), rtol=1e-12)
    np.testing.assert_allclose(np.exp(2 * extras["log_sigma"].numpy()), mse + 1e-5 / (2 * np.pi), rtol=1e-12)
