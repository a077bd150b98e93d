"""Attribute conditions: parsing --attrs, the fields a data set fixes, and the attribute metrics against models whose
answer is known (an oracle that draws the real rendered digit for the asked cell, a model that ignores its condition),
plus a short real training run end to end through the CLI's sample --attrs."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from cvae_core.data import morpho
from cvae_core.errors import ConfigError
from cvae_core.eval import attributes as A
from cvae_core.registry import build_model

NAMES = list(morpho.CONDITION_NAMES)


def test_parse_attrs():
    v = A.parse_attrs("digit=4, thick=1,slant=0,red=0.25", NAMES)
    ref = torch.zeros(14)
    ref[4], ref[10], ref[12] = 1, 1, 0.25  # large left out: 0
    torch.testing.assert_close(v, ref)
    for bad, msg in (("thick=1", r"must set digit=\.\.\."), ("digit=12,thick=1", "digit must be one of 0, 1"),
                     ("digit=3,thick=2", r"thick must be in \[0, 1\]"), ("digit=3,thick=x", "must be a number"),
                     ("digit=3,bold=1", "unknown attribute 'bold'; this model knows digit, thick, slant, red, large"),
                     ("digit=3,thick", "not NAME=VALUE")):
        with pytest.raises(ConfigError, match=msg):
            A.parse_attrs(bad, NAMES)


def _fake_data(n=40):
    g = torch.Generator().manual_seed(0)
    attrs = torch.randint(0, 2, (n, 14), generator=g).float()
    return types.SimpleNamespace(image_shape=(3, 28, 28), num_classes=10, extras_train={"attributes": attrs})


def test_condition_fields():
    data = _fake_data()
    assert A.condition_fields("flow_cvae", data) == {"image_shape": (3, 28, 28), "num_classes": 10,
                                                     "condition": "attributes", "cond_dim": 14}
    assert A.condition_fields("flow_cvae", data, {"condition": "class"}) == {"image_shape": (3, 28, 28),
                                                                              "num_classes": 10}
    assert "condition" not in A.condition_fields("vae", data)  # unconditional models ignore the attributes
    assert "condition" not in A.condition_fields("ct3vae", data)  # class centres keep the class condition
    assert A.condition_fields("cvae", data, {"condition": "attributes"})["cond_dim"] == 14


class _Stub:
    """Just enough of a LatentModel for generate(): sample(n, y, eps) -> images chosen by `draw(y)`."""

    def __init__(self, draw):
        self.draw = draw
        self.config = types.SimpleNamespace(condition="attributes")
        self.cond_dim = 14
        self._p = torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        return iter([self._p])

    def prior_noise(self, n, generator=None):
        return torch.randn(n, 2, generator=generator)

    def sample(self, n, y=None, tau=None, eps=None):
        return self.draw(y)


def _real_digit_images(mnist):
    """One real MNIST digit image per digit class (the first of each in the test split), grey (10, 28, 28) uint8."""
    first = [int(np.flatnonzero(mnist.y_test.numpy() == d)[0]) for d in range(10)]
    return mnist.x_test[first, 0].numpy()


def test_attribute_scores_of_an_oracle_and_of_a_model_that_ignores_its_condition(mnist):
    """The oracle renders the asked cell from a real digit: its measured accuracy is >= 0.99 everywhere. A model that
    always draws a thin, left-slanted, blue, small digit scores exactly 0.5 per attribute over the 160 balanced cells,
    1/16 for all four at once, and on the held-out cells exactly the share of their attribute values it matches."""
    grey = _real_digit_images(mnist)

    def oracle(y):
        c = y.numpy()
        return morpho.render(grey[c[:, :10].argmax(1)], (c[:, 10:] > 0.5).astype(np.uint8)).float() / 255

    s = A.attribute_scores(_Stub(oracle), n_per_cell=2)
    assert s["attr_accuracy"] >= 0.99 and s["heldout_attr_accuracy"] >= 0.99 and s["combo_accuracy"] >= 0.97, s
    fixed = morpho.render(grey[:1], np.zeros((1, 4), np.uint8)).float() / 255
    s = A.attribute_scores(_Stub(lambda y: fixed.expand(len(y), -1, -1, -1)), n_per_cell=2)
    for name in morpho.ATTRIBUTES:
        assert s[f"attr_accuracy_{name}"] == 0.5
    assert s["combo_accuracy"] == 1 / 16
    held = np.array([c[1:] for c in morpho.HELDOUT_CELLS])  # their (thick, slant, red, large)
    assert s["heldout_attr_accuracy"] == pytest.approx((held == 0).mean())
    half = morpho.attribute_accuracy(fixed, np.full((1, 4), 0.5))  # 0.5 asks for the 1 side (A.asked_bits)
    assert A.asked_bits([0.5, 0.49, 1, 0]).tolist() == [1, 0, 1, 0] and half["all"] == 0.0
    rare = np.array(morpho.RARE_COMBOS)
    assert s["rare_attr_accuracy"] == pytest.approx((rare == 0).mean())
    assert s["attr_samples"] == 160 * 2


def test_example_conditions():
    c = A.example_conditions({"name": "morpho-mnist"}, 20, seed=1)
    assert c.shape == (20, 14) and torch.equal(c[:, :10].argmax(1), torch.arange(20) % 10)
    assert torch.equal(c, A.example_conditions({"name": "morpho-mnist"}, 20, seed=1))
    c = A.example_conditions({"name": "celeba", "attributes": [f"a{i}" for i in range(40)]}, 5)
    assert c.shape == (5, 40) and set(c.unique().tolist()) <= {0.0, 1.0}


def test_score_cell_on_a_fresh_model():
    model = build_model("flow_cvae", seed=0, arch="mlp", hidden=16, latent_dim=4, image_shape=(3, 28, 28),
                        condition="attributes", cond_dim=14).eval()
    r = A.score_cell(model, 4, [1, 0, 1, 0], n=6, seed=3)
    assert r["images"].shape == (6, 3, 28, 28) and r["predicted"].shape == (6, 4)
    ref = morpho.attribute_accuracy(r["images"], np.tile([1, 0, 1, 0], (6, 1)))
    assert r["accuracy"] == ref
    again = A.score_cell(model, 4, [1, 0, 1, 0], n=6, seed=3)
    assert torch.equal(r["images"], again["images"])  # seeded
