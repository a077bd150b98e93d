"""The Generate page's maths (cvae_core.eval.generate), each against an independent computation: fixed noise, the
decoded grid, the KL order of the latent dimensions, traversals, interpolations and the PNG pictures."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cvae_core.eval import generate as G
from cvae_core.registry import build_model
from cvae_core.runs import catalog
from cvae_core.runs.folder import load_run

SWEEP = catalog.sweep_root()


def tiny(name: str, **kw):
    torch.manual_seed(0)
    return build_model(name, latent_dim=6, arch="mlp", hidden=32, **kw).eval()


def test_fixed_noise_is_the_seeded_standard_normal_and_leaves_the_global_stream_alone():
    m = tiny("vae")
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = G.fixed_noise(m, 64, 7)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, torch.randn(64, 6, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(a, G.fixed_noise(tiny("bs_vae"), 64, 7))  # same noise for every model of that shape
    assert not torch.equal(a, G.fixed_noise(m, 64, 8))


def test_a_grid_decodes_tau_times_the_noise_for_a_standard_normal_prior():
    m, _ = load_run(SWEEP / "bs_beta3")
    eps = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    for tau in (0.0, 0.5, 1.7):
        want = m.mean_image(m.decoder(tau * eps))  # z = 0 + tau * 1 * eps, decoded by hand
        got = G.decode_noise(m, G.fixed_noise(m, 64, 0), None, tau)
        assert got.shape == (64, 1, 28, 28)
        torch.testing.assert_close(got, want.float(), atol=1e-6, rtol=1e-5)
    flat = G.decode_noise(m, G.fixed_noise(m, 64, 0), None, 0.0)
    assert torch.equal(flat, flat[:1].expand_as(flat))  # tau = 0: every cell is the prior mean's image


def test_class_rows_repeat_one_noise_row_per_class():
    noise = torch.arange(12.0).view(4, 3)
    rep, y = G.class_rows(noise, 10)
    assert rep.shape == (40, 3) and y.tolist() == [k for k in range(10) for _ in range(4)]
    for k in range(10):
        assert torch.equal(rep[4 * k : 4 * k + 4], noise)


def test_latent_stats_order_dimensions_by_their_average_kl():
    m = tiny("vae")
    with torch.no_grad():  # make dimension 4 carry the most
        m.enc_head.weight[4] *= 40  # rows 0..m-1 of the head are the means
    x = torch.rand(200, 1, 28, 28)
    s = G.latent_stats(m, x, None)
    with torch.no_grad():
        q = m.encode(x)
        mu, sd = q.base_dist.loc.double(), q.base_dist.scale.double()
    kl = (0.5 * (mu**2 + sd**2 - 1 - torch.log(sd**2))).mean(0)  # closed form, per dimension
    want = sorted(range(6), key=lambda d: -float(kl[d]))
    assert s.by == "KL" and list(s.order) == want and s.order[0] == 4
    assert list(s.score) == pytest.approx([float(kl[d]) for d in want], rel=1e-4)
    assert s.mean.tolist() == pytest.approx(mu.mean(0).tolist(), abs=1e-5)
    assert s.std.tolist() == pytest.approx(mu.std(0, unbiased=False).tolist(), rel=1e-4)


def test_a_student_t_run_is_ordered_by_the_variance_of_its_encoder_means():
    m = tiny("t3vae")
    x = torch.rand(100, 1, 28, 28)
    s = G.latent_stats(m, x, None)
    with torch.no_grad():
        var = m.encode(x).mean.double().var(0, unbiased=False)
    assert s.by == "variance" and list(s.order) == sorted(range(6), key=lambda d: -float(var[d]))
    assert list(s.score) == pytest.approx(sorted(var.tolist(), reverse=True), rel=1e-4)


def test_a_traversal_moves_one_dimension_per_row_through_the_spread():
    stats = G.LatentStats(order=(2, 0, 1), score=(3.0, 2.0, 1.0), by="KL", mean=torch.zeros(3),
                          std=torch.tensor([0.5, 2.0, 1.0]))
    start = torch.tensor([0.1, -0.2, 0.3])
    z = G.traversal_latents(start, [2, 0], stats, points=5, span=2.0)
    assert z.shape == (10, 3)
    steps = np.linspace(-2, 2, 5)
    np.testing.assert_allclose(z[:5, 2].numpy(), 0.3 + steps * 1.0, atol=1e-6)
    np.testing.assert_allclose(z[5:, 0].numpy(), 0.1 + steps * 0.5, atol=1e-6)
    assert torch.equal(z[:5, :2], start[:2].expand(5, 2)) and torch.equal(z[5:, 1:], start[1:].expand(5, 2))


def test_interpolations_in_z_and_in_pixels_run_end_to_end():
    za, zb = torch.tensor([0.0, 2.0]), torch.tensor([4.0, -2.0])
    z = G.interpolation_latents(za, zb, steps=5)
    assert torch.equal(z[0], za) and torch.equal(z[-1], zb) and z[2].tolist() == pytest.approx([2.0, 0.0])
    xa, xb = torch.zeros(1, 2, 2), torch.ones(1, 2, 2)
    px = G.pixel_blend(xa, xb, steps=5)
    assert px[:, 0, 0, 0].tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    conds = G.endpoint_conditions(torch.tensor(3), torch.tensor(8), steps=5)
    assert conds.tolist() == [3, 3, 8, 8, 8]  # t < 0.5 takes A's condition
    assert G.endpoint_conditions(None, None) is None


@pytest.mark.parametrize("channels", [1, 3])
def test_png_pictures_hold_the_grid_pixel_for_pixel(channels):
    imgs = torch.rand(64, channels, 28, 28)
    arr = G.grid_array(imgs, nrow=8, scale=3)
    side = (8 * 30 + 2) * 3  # 8 cells of 28 px with 2 px borders, then one border, all x3
    assert arr.shape == ((side, side) if channels == 1 else (side, side, 3)) and arr.dtype == np.uint8
    # cell (row 1, col 2) at scale 1 starts at 2 + 30 * k
    cell = arr[3 * (2 + 30):3 * (2 + 30 + 28):3, 3 * (2 + 60):3 * (2 + 60 + 28):3]
    want = (imgs[10].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(cell, want[:, :, 0] if channels == 1 else want)
    back = np.asarray(Image.open(io.BytesIO(G.png_bytes(arr))))
    np.testing.assert_array_equal(back, arr)


def test_attribute_conditions_are_the_one_hot_digit_then_the_attributes():
    from cvae_core.eval.attributes import cell_conditions  # what the Generate page's attribute grid is drawn with

    c = cell_conditions(4, (1.0, 0.0, 0.5, 0.0), 3)
    assert c.shape == (3, 14) and c[:, :10].argmax(1).tolist() == [4, 4, 4] and c[:, :10].sum().item() == 3
    assert c[0, 10:].tolist() == [1.0, 0.0, 0.5, 0.0]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 23), nrow=st.integers(1, 12), channels=st.sampled_from([1, 3]), h=st.integers(1, 9),
       w=st.integers(1, 9), padding=st.integers(0, 3))
def test_tile_is_torchvisions_make_grid(n, nrow, channels, h, w, padding):
    """The grid is drawn without importing torchvision (1.9 s before the Home page's first grid); the picture is
    the one make_grid draws, border pixels included (make_grid turns one channel into three: compare channel 0)."""
    from torchvision.utils import make_grid

    imgs = torch.rand(n, channels, h, w)
    want = make_grid(imgs, nrow=nrow, padding=padding, pad_value=0.35)
    got = G.tile(imgs, nrow=nrow, padding=padding, pad_value=0.35)
    assert torch.equal(got, want[:channels])
