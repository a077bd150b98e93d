"""metrics.py against independent computations. The reference model is linear-Gaussian, so log p(x) is exact:
z ~ N(0, I_m), x | z ~ N(W z + c, s^2 I_n)  =>  x ~ N(c, W W^T + s^2 I)  (scipy's multivariate_normal)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _helpers import fit_small
from scipy import special, stats
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence

from cvae_core.data import to_float
from cvae_core.eval.likelihood import evaluate, importance_nll, logmeanexp
from cvae_core.models.base import LatentModel, ModelConfig
from cvae_core.registry import build_model, image_model_names


class LinearGaussian(LatentModel):
    """Encoder q(z|x) = N(A x + b, diag exp(2 log_s)); decoder mean W z + c, fixed noise exp(log_sx).
    Works in the dtype of its parameters (inputs are cast), so the maths runs in float64."""

    def __init__(self, W, c, log_sx, A, b, log_s, image_shape):
        n, m = W.shape
        super().__init__(ModelConfig(image_shape=image_shape, latent_dim=m, arch="mlp"))
        as_p = lambda t: nn.Parameter(torch.as_tensor(t, dtype=torch.float64).clone())  # noqa: E731
        self.W, self.c, self.log_sx = as_p(W), as_p(c), as_p(log_sx)
        self.A, self.b, self.log_s = as_p(A), as_p(b), as_p(log_s)

    def encode(self, x, y=None):
        xf = x.to(self.W.dtype).flatten(1)  # (B, n)
        mu = xf @ self.A.T + self.b  # (B, m)
        return Independent(Normal(mu, self.log_s.exp().expand_as(mu)), 1)

    def prior(self, y=None, n=None):
        shape = (n or 1, self.config.latent_dim)
        return Independent(Normal(self.W.new_zeros(shape), self.W.new_ones(shape)), 1)

    def decode(self, z, y=None):
        return (z @ self.W.T + self.c).view(-1, *self.config.image_shape)

    def nll(self, x, logits):
        x = x.to(logits.dtype)
        return -Normal(logits, self.log_sx.exp()).log_prob(x).flatten(1).sum(1), {}

    def kl(self, q, z=None, y=None):
        return kl_divergence(q, self.prior(n=q.batch_shape[0]))

    def kl_per_dim(self, q, y=None):
        return kl_divergence(q.base_dist, Normal(0.0, 1.0))

    def mean_image(self, logits):
        return logits


def linear_gaussian(m=2, image_shape=(1, 2, 2), sx=0.3, seed=0, posterior=True, shift=0.0, widen=0.0):
    """A linear-Gaussian model whose encoder is the exact posterior (posterior=True; W has orthogonal columns so
    the posterior covariance is diagonal), optionally perturbed: A scaled by (1 - shift), log_s + widen."""
    rng = np.random.default_rng(seed)
    n = math.prod(image_shape)
    Q, _ = np.linalg.qr(rng.normal(size=(n, m)))
    d = rng.uniform(0.5, 1.5, size=m)
    W = Q * d  # (n, m), W^T W = diag(d^2)
    c = rng.uniform(0.3, 0.7, size=n)
    post_var = 1 / (1 + d**2 / sx**2)  # diagonal of (I + W^T W / s^2)^-1
    A = (post_var[:, None] * W.T) / sx**2  # posterior mean = A (x - c)
    b = -A @ c
    log_s = 0.5 * np.log(post_var)
    if not posterior:
        A, log_s = A * (1 - shift), log_s + widen
    model = LinearGaussian(W, c, math.log(sx), A, b, log_s, image_shape)
    exact = stats.multivariate_normal(mean=c, cov=W @ W.T + sx**2 * np.eye(n))
    return model, exact


def _data(model, n_items=300, seed=1):
    """uint8 images drawn from the model's own marginal (so the posterior is well used), and their floats."""
    rng = np.random.default_rng(seed)
    W, c, sx = model.W.detach().numpy(), model.c.detach().numpy(), math.exp(model.log_sx.item())
    z = rng.normal(size=(n_items, W.shape[1]))
    x = z @ W.T + c + sx * rng.normal(size=(n_items, W.shape[0]))
    x_u8 = torch.from_numpy(np.clip(np.round(x * 255), 0, 255).astype(np.uint8)).view(-1, *model.config.image_shape)
    return x_u8, to_float(x_u8).double()


# ---------------------------------------------------------------- importance-sampled NLL
def test_logmeanexp_matches_scipy():
    a = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 30
    ref = special.logsumexp(a.numpy(), axis=0) - math.log(50)
    np.testing.assert_allclose(logmeanexp(a, 0).numpy(), ref, rtol=1e-13)


def test_is_nll_exact_with_the_true_posterior():
    """With q = p(z|x) every importance weight equals p(x): IS-NLL = -ELBO = -log p(x) for any S."""
    model, exact = linear_gaussian(posterior=True)
    _, x = _data(model, 40)
    ref = -exact.logpdf(x.flatten(1).numpy())
    torch.manual_seed(0)
    for S in (1, 5):
        nll, neg_elbo = importance_nll(model, x, None, S)
        np.testing.assert_allclose(nll.numpy(), ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(neg_elbo.numpy(), ref, rtol=1e-10, atol=1e-10)


def _posterior_kl(model, x):
    """KL(q(z|x) || p(z|x)) per item, with the exact posterior N(Sigma W^T (x - c) / s^2, Sigma),
    Sigma = (I + W^T W / s^2)^-1, from the general (full-covariance) Gaussian KL formula."""
    W, c, s2 = model.W.detach().numpy(), model.c.detach().numpy(), math.exp(2 * model.log_sx.item())
    m = W.shape[1]
    Sigma = np.linalg.inv(np.eye(m) + W.T @ W / s2)
    xf = x.flatten(1).numpy()
    mp = (xf - c) @ W @ Sigma.T / s2  # (N, m): rows of Sigma W^T (x - c) / s^2
    mq = xf @ model.A.detach().numpy().T + model.b.detach().numpy()
    Vq = np.diag(np.exp(2 * model.log_s.detach().numpy()))
    Si = np.linalg.inv(Sigma)
    dm = mp - mq
    return 0.5 * (np.trace(Si @ Vq) + np.einsum("ni,ij,nj->n", dm, Si, dm) - m
                  + np.log(np.linalg.det(Sigma) / np.linalg.det(Vq)))


def test_is_nll_converges_to_exact_log_likelihood():
    """With a mismatched encoder the S-sample bound tightens towards -log p(x) as S grows (300 items, seed 0).
    At S=1 the expected gap is E KL(q || posterior) (~2 nats here; checked to 5 standard errors of the item mean).
    At S=4000 the bias is O(Var(w)/S) ~ 1e-3 and the noise ~1e-3: tolerance 5 SE + 0.005 nats."""
    model, exact = linear_gaussian(posterior=False, shift=0.4, widen=0.6)
    _, x = _data(model, 300)
    ref = -exact.logpdf(x.flatten(1).numpy())
    torch.manual_seed(0)
    gap, se = {}, {}
    for S in (1, 10, 4000):
        nll, _ = importance_nll(model, x, None, S)
        g = nll.numpy() - ref
        gap[S], se[S] = g.mean(), g.std(ddof=1) / math.sqrt(len(g))
    kl_post = _posterior_kl(model, x).mean()
    assert kl_post > 1.0  # the mismatch is real, so convergence is not trivial
    assert abs(gap[1] - kl_post) < 5 * se[1]
    assert gap[1] - gap[10] > 5 * se[1]  # the bound tightens
    assert gap[10] - gap[4000] > 0.03
    assert abs(gap[4000]) < 5 * se[4000] + 0.005


def test_is_nll_not_above_same_sample_neg_elbo_exactly():
    """log-mean-exp >= mean, sample by sample: IS-NLL <= -ELBO computed from the same S draws (no tolerance)."""
    model, _ = linear_gaussian(posterior=False, shift=0.3, widen=0.4)
    _, x = _data(model, 100)
    torch.manual_seed(3)
    nll, neg_elbo = importance_nll(model, x, None, 16)
    assert (nll <= neg_elbo).all()
    assert (neg_elbo - nll).mean() > 0.05  # strictly below for a mismatched q


@pytest.mark.parametrize("name", image_model_names())
def test_is_nll_same_samples_for_registry_models(name, mnist_small):
    """Recompute log w = log p(x|z) + log p(z) - log q(z|x) for the same draws (re-seeded) with torch.distributions
    (scipy's multivariate t for the Student-t family; the class prior's centre for class-centre models) and scipy's
    logsumexp; check IS-NLL <= -ELBO item by item. The likelihood component sees one importance sample
    of the 12 images at a time (sigma_vae pools its variance over those 12, as over a training batch); the
    decoder's input layer is scaled up so that images differ between samples and pooling over all S x 12 would
    give different numbers. Conditional models get the test labels: q(z|x,y) and p(x|z,y) must see the label of
    each item in every importance sample (a wrong repeat of y would decode sample s with other items' labels)."""
    torch.manual_seed(0)
    model = build_model(name, arch="mlp", hidden=32, latent_dim=4, **fit_small(name)).eval()
    with torch.no_grad():
        model.decoder.body[0].weight.mul_(30.0)
    x = to_float(mnist_small.x_test[:12])
    y = mnist_small.y_test[:12] if model.conditional else None
    S = 6
    torch.manual_seed(5)
    nll, neg_elbo = importance_nll(model, x, y, S)
    assert (nll <= neg_elbo + 1e-4).all()  # float32: equality up to rounding when all weights coincide
    torch.manual_seed(5)
    with torch.no_grad():
        q = model.encode(x, y)
        z = q.sample((S,))  # (S, B, m), the same draws
        logits = torch.cat([model.decode(z[s], y) for s in range(S)])  # sample by sample, each item its own y
        log_px = torch.stack([-model.nll(x, logits.view(S, 12, *x.shape[1:])[s])[0] for s in range(S)])  # (S, 12)
        pooled_all = -model.nll(x.repeat(S, 1, 1, 1), logits)[0].view(S, 12)
        if y is not None:  # the label matters: decoding with shuffled labels gives other likelihoods
            wrong = torch.cat([model.decode(z[s], y.roll(1)) for s in range(S)])
            assert (wrong - logits).abs().max() > 1e-3
        centre = model.centres[y] if hasattr(model, "centres") else torch.zeros(12, 4)  # (12, m) prior means
        if hasattr(model, "t3"):  # Student-t family: scipy's multivariate t, item by item (SPEC section 3)
            nu, n = model.config.nu, 784
            mu, log_var = model.encoder_params(x, y)
            q_scale = math.sqrt(nu / (nu + n)) * torch.exp(0.5 * log_var)
            tau = model.default_tau

            def t_logpdf(loc, scale, pts):
                return stats.multivariate_t(loc=loc.numpy(), shape=np.diag(scale.numpy() ** 2),
                                            df=nu + n).logpdf(pts.numpy())

            log_pz = torch.tensor(np.array([[t_logpdf(centre[i], torch.full((4,), tau), z[s, i]) for i in range(12)]
                                            for s in range(S)]), dtype=torch.float32)
            log_q = torch.tensor(np.array([[t_logpdf(mu[i], q_scale[i], z[s, i]) for i in range(12)]
                                           for s in range(S)]), dtype=torch.float32)
        else:
            log_pz = Normal(centre, torch.ones(())).log_prob(z).sum(-1)
            log_q = Normal(q.base_dist.loc, q.base_dist.scale).log_prob(z).sum(-1)
    if name == "sigma_vae":  # the scaled decoder makes the two poolings clearly different
        assert (pooled_all - log_px).abs().max() > 1.0
    log_w = (log_px + log_pz - log_q).double().numpy()
    ref_nll = -(special.logsumexp(log_w, axis=0) - math.log(S))
    np.testing.assert_allclose(nll.double().numpy(), ref_nll, rtol=1e-5)
    np.testing.assert_allclose(neg_elbo.double().numpy(), -log_w.mean(0), rtol=1e-5)


def test_evaluate_is_nll_below_neg_elbo_on_average():
    """evaluate's IS-NLL (S=64) vs its one-sample -ELBO on 300 items, seed 0: the expected gap is
    E KL(q || posterior) (~2 nats), the one-sample noise of the mean ~0.2 nats; S=64 is within ~0.02 of exact."""
    model, exact = linear_gaussian(posterior=False, shift=0.4, widen=0.6)
    x_u8, x = _data(model, 300)
    out = evaluate(model, x_u8, is_samples=64, seed=0)
    assert out["is_nll"] < out["neg_elbo"] - 0.2
    assert out["is_nll"] == pytest.approx(float(-exact.logpdf(x.flatten(1).numpy()).mean()), abs=0.05)
    assert out["is_samples"] == 64


# ---------------------------------------------------------------- evaluate: rate, distortion, bits/dim, AU
def test_evaluate_terms_match_closed_forms():
    """Rate is deterministic (closed-form KL); distortion is a one-sample estimate of the analytic
    E_q[-log p(x|z)] = n/2 log(2 pi s^2) + (||x - W mu - c||^2 + tr(W diag(v) W^T)) / (2 s^2); tolerance 5 SE."""
    model, _ = linear_gaussian(posterior=False, shift=0.2, widen=0.3, m=3, image_shape=(1, 2, 3))
    model.config.beta = 0.37
    x_u8, x = _data(model, 400)
    out = evaluate(model, x_u8, batch_size=64, seed=0)
    W, c = model.W.detach().numpy(), model.c.detach().numpy()
    s2 = math.exp(2 * model.log_sx.item())
    A, b, v = model.A.detach().numpy(), model.b.detach().numpy(), np.exp(2 * model.log_s.detach().numpy())
    xf = x.flatten(1).numpy()
    mu = xf @ A.T + b
    kl = 0.5 * (mu**2 + v - 1 - np.log(v))  # (N, m), per dim
    n = 6
    sq = ((xf - mu @ W.T - c) ** 2).sum(1) + np.trace(W @ np.diag(v) @ W.T)  # E_q ||x - W z - c||^2
    dist = n / 2 * np.log(2 * np.pi * s2) + sq / (2 * s2)
    # spread of the one-sample estimate per item, by direct simulation with another seed
    rng = np.random.default_rng(9)
    zs = mu + np.sqrt(v) * rng.normal(size=mu.shape)
    one = n / 2 * np.log(2 * np.pi * s2) + ((xf - zs @ W.T - c) ** 2).sum(1) / (2 * s2)
    se = one.std(ddof=1) / math.sqrt(len(one))
    assert out["rate"] == pytest.approx(kl.sum(1).mean(), rel=1e-9)
    np.testing.assert_allclose(out["kl_per_dim"], kl.mean(0), rtol=1e-9)
    assert sum(out["kl_per_dim"]) == pytest.approx(out["rate"], rel=1e-12)
    assert abs(out["distortion"] - dist.mean()) < 5 * se
    assert out["neg_elbo"] == pytest.approx(out["distortion"] + out["rate"], rel=1e-12)
    assert out["loss"] == pytest.approx(out["distortion"] + 0.37 * out["rate"], rel=1e-12)
    assert out["bits_per_dim"] == pytest.approx(out["neg_elbo"] / (6 * math.log(2)), rel=1e-12)
    recon = mu @ W.T + c  # decoder mean at the encoder mean
    assert out["mse"] == pytest.approx(((recon - xf) ** 2).mean(), rel=1e-9)
    assert out["n_test"] == 400 and "is_nll" not in out


def test_bits_per_dim_on_mnist_model(mnist_small):
    model = build_model("bs_vae", arch="mlp", hidden=32, latent_dim=4, seed=0)
    out = evaluate(model, mnist_small.x_test[:64], mnist_small.y_test[:64])
    assert out["bits_per_dim"] == pytest.approx(out["neg_elbo"] / (28 * 28 * math.log(2)), rel=1e-12)
    assert all(math.isfinite(out[k]) for k in ("neg_elbo", "rate", "distortion", "mse"))


def _au_model(scales, enc_log_s):
    """Encoder means mu_j = scales_j * x_j (one pixel per latent dim), large encoder noise on every dim."""
    m = len(scales)
    return LinearGaussian(np.ones((m, m)) * 0.1, np.full(m, 0.5), math.log(0.3), np.diag(scales), np.zeros(m),
                          np.full(m, enc_log_s), (1, 1, m))


def test_active_units_counted_on_constructed_encoder():
    """Var_x(x_j) = 1/12 for uniform pixels, so Var(mu_j) = s_j^2/12: dims with s in {1, 1, 0.6} are active
    (0.083, 0.083, 0.03 > 0.01), s in {0.2, 0.05, 0} are not (0.0033, 0.0002, 0). The encoder's noise is large
    (sigma 3): AU must use the encoder *mean*, not samples."""
    scales = np.array([1.0, 0.05, 1.0, 0.0, 0.2, 0.6])
    model = _au_model(scales, enc_log_s=math.log(3.0))
    rng = np.random.default_rng(0)
    x_u8 = torch.from_numpy(rng.integers(0, 256, size=(2000, 1, 1, 6), dtype=np.uint8))
    out = evaluate(model, x_u8, batch_size=333)
    mu = to_float(x_u8).double().flatten(1).numpy() * scales
    assert out["au"] == 3
    assert out["au"] == int((mu.var(0) > 0.01).sum())
    assert evaluate(model, x_u8, au_threshold=0.05)["au"] == 2  # only the two s = 1 dims (0.083)
    assert evaluate(model, x_u8, au_threshold=0.0)["au"] == 5  # every dim with any spread
    # the batch split does not change deterministic metrics
    one_batch = evaluate(model, x_u8, batch_size=5000)
    assert one_batch["au"] == out["au"]
    assert one_batch["rate"] == pytest.approx(out["rate"], rel=1e-12)


# ---------------------------------------------------------------- reproducibility and RNG hygiene
def test_evaluate_reproducible_and_keeps_global_rng(mnist_small):
    model = build_model("vae", arch="mlp", hidden=32, latent_dim=4, seed=0)
    model.train()
    x, y = mnist_small.x_test[:64], mnist_small.y_test[:64]
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    a = evaluate(model, x, y, is_samples=4, seed=7, batch_size=20)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    torch.manual_seed(999)  # a different global state must not matter
    b = evaluate(model, x, y, is_samples=4, seed=7, batch_size=20)
    c = evaluate(model, x, y, is_samples=4, seed=8, batch_size=20)
    assert a == b
    assert a["distortion"] != c["distortion"] and a["is_nll"] != c["is_nll"]  # the seed drives the noise
    assert a["rate"] == pytest.approx(c["rate"], rel=1e-6)  # the closed-form KL does not depend on it
    assert model.training  # the train/eval mode is restored


def test_active_units_from_encoder_means_matches_evaluate(mnist_small):
    """The cheap AU the app computes at every tick (encoder means only) equals evaluate()'s AU, and both equal
    a count done here with numpy on the raw means."""
    from cvae_core.eval.likelihood import active_units, encoder_means

    model = build_model("bs_vae", seed=0).eval()
    x = mnist_small.x_test[:200]
    means = encoder_means(model, x, batch_size=64)
    with torch.no_grad():
        direct = model.encode(to_float(x)).mean.numpy()
    np.testing.assert_allclose(means.numpy(), direct, rtol=1e-5, atol=1e-6)
    for thr in (1e-4, 1e-3, 0.01):
        expected = int((np.var(direct.astype(np.float64), axis=0, ddof=1) > thr).sum())
        assert active_units(means, thr) == expected
    assert active_units(means) == evaluate(model, x)["au"]


def test_importance_nll_in_chunks_matches_one_sample_at_a_time(mnist_small):
    """max_decode = B decodes one importance sample per chunk (bounded memory for any S); the result equals a
    reference that draws z_s one at a time from the same seed and combines log w with scipy's logsumexp."""
    torch.manual_seed(0)
    model = build_model("sigma_vae", arch="mlp", hidden=32, latent_dim=4).eval()
    x = to_float(mnist_small.x_test[:10])
    S = 7
    torch.manual_seed(11)
    nll, neg_elbo = importance_nll(model, x, None, S, max_decode=10)
    torch.manual_seed(11)
    with torch.no_grad():
        q = model.encode(x)
        rows = []
        for _ in range(S):
            z = q.sample((1,))[0]  # (B, m), the chunk's draw
            log_px = -model.nll(x, model.decode(z))[0]
            rows.append(log_px + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z))
    log_w = torch.stack(rows).double().numpy()
    np.testing.assert_allclose(nll.double().numpy(), -(special.logsumexp(log_w, 0) - math.log(S)), rtol=1e-5)
    np.testing.assert_allclose(neg_elbo.double().numpy(), -log_w.mean(0), rtol=1e-5)


@pytest.mark.parametrize("name", ["vae", "bs_vae"])
def test_distortion_at_the_training_mse_sigma_against_a_plain_loop(name, mnist):
    """distortion_train_sigma = mean over test images of sum over pixels of (x - xhat(z))^2 / (2 s^2) + log s
    + log(2 pi) / 2, z ~ q(z|x) from the generator seeded seed + 1, s^2 = the training-set MSE (train_sigma); for the
    calibrated bs_vae it is also its frozen-variance -ELBO minus the rate."""
    from cvae_core.eval.likelihood import train_sigma

    model = build_model(name, seed=0, arch="mlp", hidden=32, latent_dim=4).eval()
    x_test, x_train = mnist.x_test[:300], mnist.x_train[:400]
    m = evaluate(model, x_test, batch_size=128, seed=0, train_x=x_train)
    s = train_sigma(model, x_train, seed=0)
    assert m["train_mse_sigma"] == s
    gen, total = torch.Generator().manual_seed(1), 0.0
    with torch.no_grad():
        for i in range(0, 300, 128):
            x = to_float(x_test[i : i + 128])
            q = model.encode(x)
            z = torch.normal(q.mean, q.stddev, generator=gen)
            xhat = model.mean_image(model.decode(z))
            sq = (x - xhat).pow(2).flatten(1).sum(1)
            total += (sq / (2 * s * s) + 784 * (math.log(s) + 0.5 * math.log(2 * math.pi))).sum().item()
    assert m["distortion_train_sigma"] == pytest.approx(total / 300, rel=1e-5)
    if name == "bs_vae":
        assert m["distortion_train_sigma"] + m["rate"] == pytest.approx(m["neg_elbo_train_sigma"], rel=1e-5)
    else:  # a fixed-variance model's own -ELBO is at its fixed sigma = 1, not at its training MSE
        assert m["neg_elbo_train_sigma"] == m["neg_elbo"] and abs(s - 1.0) > 0.5


def test_is_nll_of_the_flow_prior_with_frozen_sigma_matches_quadrature():
    """flow_cvae (m = 2, a learned conditional RealNVP prior far from N(0, I)) with the decoder variance frozen:
    log p(x|y) = log ∫ N(x; decoder(z, y), s^2) p(z|y) dz by a 2-D Riemann sum over z (321^2 points on [-8, 8]^2,
    where the prior's mass lies; p(z|y) from the flow's own log_prob, checked to integrate to 1 on the grid), against
    importance_nll(log_sigma=log s) with S = 4000. The flow's layers are scaled up from their near-identity start so
    that p(z|y) is not N(0, I). Tolerance: 5 standard errors of the IS estimate + 0.02 nats."""
    torch.manual_seed(0)
    model = build_model("flow_cvae", arch="mlp", hidden=16, latent_dim=2, image_shape=(1, 3, 3), flow_hidden=8,
                        flow_transforms=2).eval()
    with torch.no_grad():
        for p_ in model.flow.parameters():
            p_.mul_(1.5)
        model.flow.base.net[-1].weight.mul_(30)
        for t in model.flow.transform.transforms:
            [m for m in t.hyper.modules() if isinstance(getattr(m, "weight", None), nn.Parameter)][-1].weight.mul_(40)
    log_s = math.log(0.5)  # the images' noise is 0.3: a variance fitted to them would differ
    y = torch.arange(4) % 10
    with torch.no_grad():
        x = model.mean_image(model.decode(torch.randn(4, 2), y)) \
            + 0.3 * torch.randn(4, 1, 3, 3)
        g = torch.linspace(-8, 8, 321)
        zz = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)  # (G, 2)
        cell = (g[1] - g[0]).item() ** 2
        ref = []
        for i in range(4):
            yi = y[i].repeat(len(zz))
            log_pz = model.prior(yi).log_prob(zz)  # (G,)
            assert torch.logsumexp(log_pz, 0).exp().item() * cell == pytest.approx(1.0, abs=2e-3)
            assert (log_pz - Normal(0.0, 1.0).log_prob(zz).sum(-1)).abs().max() > 1.0  # not N(0, I)
            from cvae_core.models.gaussian import gaussian_nll
            log_px = -gaussian_nll(x[i].expand(len(zz), -1, -1, -1), model.mean_image(model.decode(zz, yi)), log_s)
            ref.append(-(torch.logsumexp(log_px + log_pz, 0) + math.log(cell)).item())
        torch.manual_seed(1)
        runs = [importance_nll(model, x, y, 4000, log_sigma=log_s)[0] for _ in range(4)]
    est = torch.stack(runs)  # (4 repeats, 4 items)
    se = est.std(0) / 2
    for i in range(4):
        assert est[:, i].mean().item() == pytest.approx(ref[i], abs=5 * se[i].item() + 0.02)
    # the model's own batch-fitted variance is another likelihood: without log_sigma the numbers differ
    torch.manual_seed(1)
    assert (importance_nll(model, x, y, 200)[0] - est[0]).abs().max() > 0.1


def test_evaluate_is_nll_train_sigma(mnist_small):
    """``is_nll_train_sigma``: the IS-NLL of the Gaussian decoder at the model's training sigma (fixed-variance
    models: at their training-set MSE), recomputed from the same seeded draws (its own generator per batch)."""
    torch.manual_seed(0)
    for name in ("sigma_cvae", "cvae"):
        model = build_model(name, arch="mlp", hidden=32, latent_dim=4).eval()
        x, y, tx, ty = mnist_small.x_test[:40], mnist_small.y_test[:40], mnist_small.x_train[:200], \
            mnist_small.y_train[:200]
        out = evaluate(model, x, y, seed=3, train_x=tx, train_y=ty, is_samples=5, batch_size=20)
        sigma = out["train_sigma"] if name == "sigma_cvae" else out["train_mse_sigma"]
        ref = []
        for i in range(0, 40, 20):
            torch.manual_seed(3 + 2 + i)
            ref.append(importance_nll(model, to_float(x[i:i + 20]), y[i:i + 20], 5, log_sigma=math.log(sigma))[0])
        assert out["is_nll_train_sigma"] == pytest.approx(torch.cat(ref).mean().item(), rel=1e-5)
        if name == "cvae":  # sigma = 1 against its training MSE's sigma: another likelihood
            assert out["is_nll_train_sigma"] < out["is_nll"] - 50
