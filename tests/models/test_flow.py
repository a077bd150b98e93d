"""The flow prior of flow_cvae (SPEC section 2) against independent computations: the change-of-variables density
with the autograd Jacobian, normalisation on a 2-D grid, the Monte-Carlo KL against the closed form when the flow is
the identity, and the two-stage fit raising the likelihood of the encoder means."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from cvae_core.errors import ConfigError
from cvae_core.eval.likelihood import encoder_means
from cvae_core.registry import build_model, make_config
from cvae_core.train import TrainConfig, fit


def _flow_model(latent_dim=3, cond_dim=4, transforms=3, seed=0, **over):
    model = build_model("flow_cvae", seed=seed, arch="mlp", hidden=16, latent_dim=latent_dim, condition="attributes",
                        cond_dim=cond_dim, flow_transforms=transforms, flow_hidden=16, **over)
    # move the prior far from its near-identity start, so the checks below see a real non-linear flow
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.flow.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return model.double().eval()


def test_log_density_is_the_change_of_variables_with_the_autograd_jacobian():
    """log p(z|y) = log N(u; mu_p(y), sigma_p(y)^2) + log|det du/dz|, u = f^-1(z), the Jacobian by autograd, the
    base by hand (not through zuko), item by item in float64."""
    model = _flow_model()
    g = torch.Generator().manual_seed(1)
    y = torch.rand(5, 4, generator=g, dtype=torch.float64)
    z = 1.5 * torch.randn(5, 3, generator=g, dtype=torch.float64)
    got = model.prior(y).log_prob(z)
    for i in range(5):
        c = y[i : i + 1]
        dist = model.flow(c)
        inv = lambda v, d=dist: d.transform(v.view(1, 3)).view(3)  # noqa: E731  z -> u
        u = inv(z[i])
        J = torch.autograd.functional.jacobian(inv, z[i])  # (3, 3)
        mu, log_sigma = model.flow.base.net(c).view(2, 3)
        log_base = (-0.5 * ((u - mu) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * math.log(2 * math.pi)).sum()
        ref = log_base + torch.linalg.slogdet(J).logabsdet
        torch.testing.assert_close(got[i], ref, rtol=1e-10, atol=1e-10)


def test_prior_density_integrates_to_one_in_2d():
    """Riemann sum of exp(log p(z|y)) over a fine 2-D grid covering the mass: 1 within 1%, for two conditions."""
    model = _flow_model(latent_dim=2, cond_dim=2, transforms=4, seed=3)
    side = torch.linspace(-10, 10, 501, dtype=torch.float64)
    zz = torch.cartesian_prod(side, side)  # (501^2, 2)
    cell = (side[1] - side[0]) ** 2
    for y0 in ([0.0, 1.0], [1.0, 0.3]):
        y = torch.tensor([y0], dtype=torch.float64).expand(len(zz), 2)
        with torch.no_grad():
            mass = (model.prior(y).log_prob(zz).exp().sum() * cell).item()
        assert abs(mass - 1) < 0.01, (y0, mass)


def test_monte_carlo_kl_converges_to_the_closed_form_when_the_flow_is_the_identity():
    """Couplings whose shift and log-scale networks output exactly 0 make f the identity: p(z|y) is then the Gaussian
    base N(mu_p(y), sigma_p(y)^2), so the model's one-sample KL averaged over many z ~ q must agree with torch's
    closed-form Gaussian KL within 4 standard errors (and the standard error is small: < 1% of the KL)."""
    model = _flow_model(transforms=2, seed=4)
    with torch.no_grad():
        for t in model.flow.transform.transforms:
            last = list(t.hyper.children())[-1]
            last.weight.zero_()
            last.bias.zero_()
    z0 = torch.randn(7, 3, dtype=torch.float64)
    torch.testing.assert_close(model.flow(torch.rand(7, 4, dtype=torch.float64)).transform(z0), z0)  # the identity
    g = torch.Generator().manual_seed(5)
    y = torch.rand(2, 4, generator=g, dtype=torch.float64)
    mu_q = torch.randn(2, 3, generator=g, dtype=torch.float64)
    sd_q = 0.3 + torch.rand(2, 3, generator=g, dtype=torch.float64)
    q = Independent(Normal(mu_q, sd_q), 1)
    S = 200_000
    torch.manual_seed(6)
    with torch.no_grad():
        z = q.sample((S,)).view(S * 2, 3)  # rows alternate between the two items
        q_rows = Independent(Normal(mu_q.repeat(S, 1), sd_q.repeat(S, 1)), 1)
        mc = model.kl(q_rows, z, y.repeat(S, 1)).view(S, 2)
        mu_p, log_sp = model.flow.base.net(y).chunk(2, dim=-1)
        exact = kl_divergence(q, Independent(Normal(mu_p, log_sp.exp()), 1))  # (2,)
    se = mc.std(0) / math.sqrt(S)
    assert (se < 0.01 * exact).all()
    assert ((mc.mean(0) - exact).abs() < 4 * se).all(), (mc.mean(0), exact, se)


def test_two_stage_fit_raises_the_likelihood_of_encoder_means(mnist_small):
    """Two phases over parameter groups: the encoder and decoder train with the KL to N(0, I) while the prior stays
    at its initial weights, then only the prior trains, by maximum likelihood on the detached encoder means. The mean
    log p(mu_q(x, y) | y) of held-out images rises by more than 2 nats over the untrained prior (and above N(0, I)'s),
    and neither phase touches the other's parameters."""
    data = mnist_small
    model = build_model("flow_cvae", seed=0, arch="mlp", hidden=64, latent_dim=4, two_stage=True, flow_hidden=32,
                        prior_fraction=0.5)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    assert [(p.name, p.objective) for p in model.phases()] == [("autoencoder", "loss_gauss"), ("prior", "prior_nll")]

    class AtBoundary:  # the weights at the last log tick of the autoencoder phase (step 200 of 400)
        state = None

        def on_log(self, model, rec, hist):
            if rec["phase"] == "autoencoder":
                AtBoundary.state = {k: v.clone() for k, v in model.state_dict().items()}

    hist = fit(model, data, TrainConfig(steps=400, batch_size=128, lr=2e-3, seed=0, log_every=50),
               callbacks=[AtBoundary()])
    assert hist.status == "finished" and [r["phase"] for r in hist.records] == ["autoencoder"] * 4 + ["prior"] * 4
    mid, end = AtBoundary.state, model.state_dict()
    flow = [k for k in end if k.startswith("flow.") and "mask" not in k]
    nets = [k for k in end if not k.startswith("flow.")]
    assert nets and {k.split(".")[0] for k in nets} == {"encoder", "enc_head", "decoder"}
    # phase 1 trained every network and left the prior as it was; phase 2 trained the prior and nothing else
    assert all(not torch.equal(start[k], mid[k]) for k in nets) and all(torch.equal(start[k], mid[k]) for k in flow)
    assert all(torch.equal(mid[k], end[k]) for k in nets) and all(not torch.equal(mid[k], end[k]) for k in flow)
    mu = encoder_means(model, data.x_test[:500], data.y_test[:500])
    y = data.y_test[:500]
    with torch.no_grad():
        fitted = model.prior(y).log_prob(mu).mean().item()
        model.load_state_dict({**end, **{k: v for k, v in start.items() if k.startswith("flow.")}})
        untrained = model.prior(y).log_prob(mu).mean().item()
        std_normal = Independent(Normal(torch.zeros(4), torch.ones(4)), 1).log_prob(mu).mean().item()
    print(f"mean log p(mu|y): fitted {fitted:.2f}, untrained {untrained:.2f}, N(0, I) {std_normal:.2f}")
    assert fitted > untrained + 2 and fitted > std_normal + 2, (fitted, untrained, std_normal)


def test_prior_samples_follow_the_flow():
    """sample() draws z = f(mu_p + tau sigma_p eps): at tau = 1 the samples have the flow's density, so the mean
    log-density of prior samples matches -entropy estimated from zuko's own rsample within 0.1 nat."""
    model = _flow_model(latent_dim=2, cond_dim=4, seed=7)
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=torch.float64).expand(20_000, 4)
    noise = model.prior_noise(20_000, generator=torch.Generator().manual_seed(8)).double()
    with torch.no_grad():
        z = model.prior_latents(noise, y)
        ours = model.prior(y).log_prob(z).mean().item()
        torch.manual_seed(9)
        theirs = model.prior(y).log_prob(model.prior(y).sample()).mean().item()
    assert abs(ours - theirs) < 0.1, (ours, theirs)


def test_config_checks():
    for bad, msg in ((dict(flow_transforms=0), "flow_transforms"), (dict(flow_hidden=0), "flow_hidden"),
                     (dict(prior_fraction=1.0), "prior_fraction")):
        with pytest.raises(ConfigError, match=msg):
            make_config("flow_cvae", **bad)


def test_no_mask_nonzero_per_step():
    """zuko's CouplingTransform computes its split with mask.nonzero() whenever flow(c) is built: a device-to-host
    sync per coupling on CUDA. The model caches the split: after the first step, a training step (loss and backward,
    both phases' terms) dispatches no nonzero at all; and the flow's density is unchanged by the caching."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from zuko.flows import RealNVP

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__.startswith("nonzero"):
                Count.n += 1
            return func(*args, **(kwargs or {}))

    model = build_model("flow_cvae", seed=0, arch="mlp", hidden=16, latent_dim=4, two_stage=True)
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    model.loss(x, y)["loss"].backward()  # the first call computes the split once
    with Count():
        for objective in ("loss", "loss_gauss", "prior_nll"):
            model.loss(x, y, objective=objective)[objective].backward()
    assert Count.n == 0
    plain = RealNVP(4, context=10, transforms=4, hidden_features=(64, 64))
    plain.load_state_dict(model.flow.state_dict(), strict=False)
    plain.base = model.flow.base
    z, c = torch.randn(8, 4), model.condition_vector(y)
    torch.testing.assert_close(model.flow(c).log_prob(z), plain(c).log_prob(z))


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.7])
def test_tau_scales_the_base_noise_before_the_flow(tau):
    """sample() at any tau: running the flow's inverse f^-1 (zuko's transform) on the sampled z gives back exactly
    u = mu_p(y) + tau sigma_p(y) eps, with mu_p, sigma_p computed here from the prior encoder's raw output."""
    model = _flow_model(latent_dim=3, cond_dim=4, seed=11)
    y = torch.rand(6, 4, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    eps = torch.randn(6, 3, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    with torch.no_grad():
        z = model.prior_latents(eps, y, tau)
        u = model.flow(y).transform(z)
        mu, log_sigma = model.flow.base.net(y).chunk(2, dim=-1)
    torch.testing.assert_close(u, mu + tau * log_sigma.exp() * eps, rtol=1e-9, atol=1e-9)
