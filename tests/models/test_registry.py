"""Generic tests parametrised over ``registry.MODELS`` (zuko's test_flows.py style): every registered model, both
architectures, three image shapes. A model added to the registry is picked up here without editing this file."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from _helpers import fit_small
from torch.distributions import kl_divergence
from zuko.distributions import NormalizingFlow

from cvae_core.errors import ConfigError
from cvae_core.models.base import LatentModel
from cvae_core.registry import MODELS, build_model, image_model_names, make_config
from cvae_core.runs.folder import load_run, save_run

NAMES = image_model_names()  # the image models; seq_cvae has its own tests (test_sequence.py)
ARCHS = ["conv", "mlp"]
SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]
# every registered model with its defaults, plus the non-default likelihood of the plain VAE
VARIANTS = [(n, {}) for n in NAMES] + [("vae", {"likelihood": "bernoulli"})]
VARIANT_IDS = [n + ("-" + "-".join(f"{v}" for v in o.values()) if o else "") for n, o in VARIANTS]
SMALL = dict(hidden=32, latent_dim=5)


def _build(name, arch, shape, seed=0, **over):
    return build_model(name, seed=seed, arch=arch, image_shape=shape, **SMALL, **(fit_small(name) | over))


def _batch(shape, b=3, seed=0, k=10):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, *shape, generator=g), torch.randint(0, k, (b,), generator=g)


def test_registry_entries_are_consistent():
    assert len(NAMES) >= 3 and set(MODELS) - set(NAMES) == {"seq_cvae"}  # the one model that is not over images
    for name, spec in MODELS.items():
        assert spec.description and spec.family
        if name not in NAMES:
            with pytest.raises(ConfigError, match="built over a base language model"):
                build_model(name)
            continue
        cfg = spec.config_cls()  # every field defaulted
        assert dataclasses.is_dataclass(cfg)
        assert isinstance(build_model(name, arch="mlp", hidden=8, latent_dim=2, **fit_small(name)), spec.model_cls)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", NAMES)
def test_shapes(name, arch, shape):
    model = _build(name, arch, shape)
    x, y = _batch(shape)
    q = model.encode(x, y)
    assert q.batch_shape == (3,) and q.event_shape == (5,)
    z = q.rsample()
    assert z.shape == (3, 5)
    logits = model.decode(z, y)
    assert logits.shape == (3, *shape)
    ys = torch.arange(4) % model.config.num_classes if model.conditional else None
    p = model.prior(ys, 4)
    assert p.event_shape == (5,) and p.sample().shape == (4, 5)
    s = model.sample(4, ys)
    assert s.shape == (4, *shape) and s.min() >= 0 and s.max() <= 1
    r = model.reconstruct(x, y)
    assert r.shape == (3, *shape) and r.min() >= 0 and r.max() <= 1
    # reconstruct = decoder mean at the encoder mean
    torch.testing.assert_close(r, model.mean_image(model.decode(q.mean, y)))
    assert model.n_pixels == math.prod(shape)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name,over", VARIANTS, ids=VARIANT_IDS)
def test_loss_terms(name, over, arch, shape):
    """Read through the family's own named terms: `loss` is the batch mean of the per-item objective and the only
    term with a graph; the terms the family names as rate and distortion exist; loss = D + beta R (+ the family's
    `penalty` term, RST-VAE's lambda LTS) for every family, and for ELBO families (those with a `neg_elbo` term)
    neg_elbo = D + R. D and mse are recomputed from the same noise (re-seeded) with the model's parts, and for ELBO
    families R with torch.distributions.kl_divergence (the Student-t family's gamma-power R is checked against a
    brute-force loop in test_student_t.py)."""
    beta = 0.37
    model = _build(name, arch, shape, beta=beta, **over)
    x, y = _batch(shape, b=4, seed=1)
    if over.get("likelihood") == "bernoulli":
        x = (x > 0.5).float()
    torch.manual_seed(3)
    terms = model.loss(x, y)
    torch.manual_seed(3)
    items = model.item_terms(x, y)
    assert set(terms) == set(items) and {"loss", model.rate_key, model.distortion_key} <= set(terms)
    for k, v in items.items():
        assert v.shape == (4,) and torch.isfinite(v).all(), k
        torch.testing.assert_close(terms[k], v.mean(), rtol=1e-6, atol=1e-6)
    D, R = terms[model.distortion_key], terms[model.rate_key]
    penalty = terms.get("penalty", torch.tensor(0.0))  # a family's extra objective term (RST-VAE: lambda LTS)
    torch.testing.assert_close(terms["loss"], D + beta * R + penalty, rtol=1e-6, atol=1e-5)  # every family
    if "neg_elbo" in terms:
        torch.testing.assert_close(terms["neg_elbo"], D + R, rtol=1e-6, atol=1e-5)
    torch.manual_seed(3)
    with torch.no_grad():
        q = model.encode(x, y)
        z = q.rsample()
        logits = model.decode(z, y)
        rec = model.nll(x, logits)[0]
    assert rec.shape == (4,)
    torch.testing.assert_close(D, rec.mean(), rtol=1e-5, atol=1e-4)
    if "neg_elbo" in terms and model.closed_form_kl:
        kl = kl_divergence(q, model.prior(y if model.conditional else None, 4))
        assert kl.shape == (4,) and (kl >= 0).all()
        torch.testing.assert_close(R, kl.mean(), rtol=1e-5, atol=1e-5)
    elif "neg_elbo" in terms:  # a Monte-Carlo KL: log q - log p at the very z the reconstruction used
        with torch.no_grad():
            kl = q.log_prob(z) - model.prior(y if model.conditional else None, 4).log_prob(z)
        assert kl.shape == (4,)
        torch.testing.assert_close(R, kl.mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(terms["mse"], (model.mean_image(logits) - x).pow(2).mean(), rtol=1e-5, atol=1e-7)
    assert terms["loss"].requires_grad and not D.requires_grad and not R.requires_grad  # only `loss` has a graph
    # a phase may minimise another term: then that one carries the graph instead
    torch.manual_seed(3)
    other = model.loss(x, y, objective=model.distortion_key)
    assert other[model.distortion_key].requires_grad and not other["loss"].requires_grad
    with pytest.raises(ConfigError, match="no term 'nope'"):
        model.loss(x, y, objective="nope")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name,over", VARIANTS, ids=VARIANT_IDS)
def test_every_parameter_gets_a_gradient(name, over, arch, shape):
    model = _build(name, arch, shape, **over)
    x, y = _batch(shape, b=4, seed=2)
    torch.manual_seed(0)
    model.loss(x, y)["loss"].backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name,over", VARIANTS, ids=VARIANT_IDS)
def test_save_load_round_trip(name, over, arch, tmp_path):
    shape = (3, 32, 32)
    model = _build(name, arch, shape, seed=4, beta=2.5, **over).eval()
    x, y = _batch(shape, b=3, seed=5)
    run = save_run(tmp_path / "run", model)
    loaded, info = load_run(run)
    assert type(loaded) is type(model) and not loaded.training
    assert dataclasses.asdict(loaded.config) == dataclasses.asdict(model.config)
    assert info["model"] == name
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with torch.no_grad():
        torch.testing.assert_close(loaded.reconstruct(x, y), model.reconstruct(x, y), rtol=0, atol=0)
        q0, q1 = model.encode(x, y), loaded.encode(x, y)
        assert torch.equal(q0.mean, q1.mean) and torch.equal(q0.stddev, q1.stddev)
        torch.manual_seed(6)
        a = model.loss(x, y)
        torch.manual_seed(6)
        b = loaded.loss(x, y)
    assert {k: v.item() for k, v in a.items()} == {k: v.item() for k, v in b.items()}


@pytest.mark.parametrize("name", NAMES)
def test_seeded_build_is_reproducible(name):
    a = build_model(name, seed=11, arch="mlp", hidden=16, latent_dim=3, **fit_small(name))
    b = build_model(name, seed=11, arch="mlp", hidden=16, latent_dim=3, **fit_small(name))
    c = build_model(name, seed=12, arch="mlp", hidden=16, latent_dim=3, **fit_small(name))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def _cond(model, n):
    """A class per sample for conditional models (all the same class, so tau = 0 gives equal images), else None."""
    return torch.full((n,), 3, dtype=torch.long) if model.conditional else None


@pytest.mark.parametrize("name", NAMES)
def test_sample_tau_scales_prior_noise(name):
    """sample(n, tau) decodes z = mean + (tau / default_tau) * (z_prior - mean), z_prior a draw of the prior (whose
    own scale is the family's default tau); tau = 0 is the prior mean (all images equal)."""
    model = _build(name, "mlp", (1, 28, 28), seed=7).eval()
    y = _cond(model, 4)
    torch.manual_seed(8)
    p = model.prior(y, 4)
    flow = isinstance(p, NormalizingFlow)  # a flow prior: tau scales the base noise, then z = f(u)
    base = p.base if flow else p
    with torch.no_grad():
        draw = base.sample()  # the same draw sample() will make after re-seeding
    for tau in (0.0, 0.5, 1.0):
        torch.manual_seed(8)
        s = model.sample(4, y, tau=tau)
        with torch.no_grad():
            u = base.mean + tau / model.default_tau * (draw - base.mean)
            ref = model.mean_image(model.decode(p.transform.inv(u) if flow else u, y))
        torch.testing.assert_close(s, ref, rtol=1e-6, atol=1e-6)
    s0 = model.sample(4, y, tau=0.0)
    assert torch.equal(s0[0], s0[3])


def test_make_config_rejects_bad_options():
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        make_config("nope")
    with pytest.raises(ConfigError, match="no option latent_size"):
        make_config("vae", latent_size=3)
    for name in NAMES:
        for bad in (dict(latent_dim=0), dict(latent_dim=2.5), dict(hidden=0), dict(hidden="abc"), dict(num_classes=0),
                    dict(image_shape=(28, 28)), dict(image_shape=(1, 0, 28)), dict(beta=-1.0), dict(beta=float("nan")),
                    dict(arch="resnet")):
            with pytest.raises(ConfigError, match=name):
                make_config(name, **bad)
    with pytest.raises(ConfigError, match="likelihood"):
        make_config("vae", likelihood="laplace")
    with pytest.raises(ConfigError, match="sigma"):
        make_config("vae", sigma=0.0)
    cfg = make_config("vae", image_shape=[3, 32, 32], beta=4.0)  # JSON gives lists
    assert cfg.image_shape == (3, 32, 32) and cfg.beta == 4.0
    cfg = make_config("vae", latent_dim=np.int64(8))  # a numpy sweep value becomes a plain int (JSON-safe)
    assert type(cfg.latent_dim) is int and cfg.latent_dim == 8


GAUSSIAN_NOISE = [n for n in NAMES if MODELS[n].model_cls.prior_noise is LatentModel.prior_noise
                  and MODELS[n].model_cls.prior_latents is LatentModel.prior_latents]


@pytest.mark.parametrize("name", GAUSSIAN_NOISE)
def test_sample_from_fixed_noise_goes_through_the_prior(name):
    """sample(eps=...) decodes prior.mean + tau * prior.stddev * eps, computed here from the prior directly (for the
    families whose prior noise is one standard normal; the Student-t noise is tested in test_student_t.py)."""
    model = build_model(name, seed=3).eval()
    y = _cond(model, 6)
    eps = model.prior_noise(6, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(eps, torch.randn(6, model.config.latent_dim, generator=torch.Generator().manual_seed(4)))
    p = model.prior(y, 6)
    for tau in (0.0, 0.5, 1.0):
        expected = torch.sigmoid(model.decode(p.mean + tau * p.stddev * eps, y))
        torch.testing.assert_close(model.sample(6, y, tau=tau, eps=eps), expected, rtol=0, atol=0)
    # same noise, same images; fresh noise, different images
    assert torch.equal(model.sample(6, y, eps=eps), model.sample(6, y, eps=eps))
    assert not torch.equal(model.sample(6, y, eps=eps), model.sample(6, y))


COND = [n for n in NAMES if MODELS[n].config_cls().__dict__.get("condition", "none") != "none"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", COND)
def test_conditioning_changes_encoder_decoder_and_samples(name, arch):
    """For every conditional model: another class gives another posterior, another decoder output for the same z,
    and other samples from the same noise; the same class gives the same ones. The condition is a config field, so
    a model rebuilt from its config alone is conditional too."""
    model = _build(name, arch, (1, 28, 28), seed=1).eval()
    assert model.conditional and model.cond_dim == model.config.num_classes == 10
    x, _ = _batch((1, 28, 28), b=4, seed=2)
    y1, y2 = torch.tensor([0, 1, 2, 3]), torch.tensor([5, 6, 7, 8])
    z = torch.randn(4, 5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert not torch.allclose(model.encode(x, y1).mean, model.encode(x, y2).mean)
        assert not torch.allclose(model.decode(z, y1), model.decode(z, y2))
        torch.testing.assert_close(model.decode(z, y1), model.decode(z, y1.clone()))
    noise = model.prior_noise(4, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(model.sample(4, y1, eps=noise), model.sample(4, y2, eps=noise))
    # the one-hot vector the networks see, against torch's own one_hot
    torch.testing.assert_close(model.condition_vector(y1), torch.nn.functional.one_hot(y1, 10).float())
    rebuilt = build_model(name, make_config(name, **dataclasses.asdict(model.config)))
    assert rebuilt.conditional and rebuilt.cond_dim == 10


# conditional models that accept attribute vectors (class-centre models need a class)
ATTR_COND = [n for n in COND if not hasattr(MODELS[n].config_cls, "centre_separation")]


@pytest.mark.parametrize("name", COND)
def test_bad_conditions_are_one_line_errors(name):
    model = _build(name, "mlp", (1, 28, 28))
    x, _ = _batch((1, 28, 28), b=2)
    for y, msg in ((None, "needs a class condition"), (torch.zeros(2, 10), "one integer per item"),
                   (torch.zeros(2, 3, dtype=torch.long), "one integer per item")):
        with pytest.raises(ConfigError, match=msg):
            model.encode(x, y)
    with pytest.raises(ConfigError, match="cond_dim = num_classes = 10"):
        make_config(name, cond_dim=7)
    with pytest.raises(ConfigError, match="condition must be 'class' or 'attributes'"):
        make_config(name, condition="pixels")
    if name not in ATTR_COND:
        with pytest.raises(ConfigError, match="class centres need a class condition"):
            make_config(name, condition="attributes", cond_dim=3)
        return
    with pytest.raises(ConfigError, match="needs cond_dim >= 1"):
        make_config(name, condition="attributes")
    attr = build_model(name, condition="attributes", cond_dim=3, arch="mlp", hidden=8, latent_dim=2)
    assert attr.cond_dim == 3 and attr.enc_head.in_features == 8 + 3
    a = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.25]])  # continuous values in [0, 1] are allowed
    torch.testing.assert_close(attr.condition_vector(a), a)
    with pytest.raises(ConfigError, match=r"attribute condition has shape \(B, 3\) \(got \(2, 4\)\)"):
        attr.encode(x, torch.zeros(2, 4))
