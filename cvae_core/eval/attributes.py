"""Attribute conditions: parsing them, giving them to models, and scoring what a model generates for them.

- ``condition_fields(model_name, data, overrides)``: the config fields a data set fixes (image shape, classes, and an
  attribute condition of the data set's width when it has attribute vectors and the user did not choose a condition);
- ``parse_attrs(text, names)``: ``"digit=4,thick=1,slant=0.3"`` -> the condition vector a model sees;
- ``cell_conditions`` / ``score_cell`` / ``attribute_metrics``: generate N images for a requested combination and
  measure with the data set's pixel measurement functions whether the attributes came out right (SPEC section 7:
  measured analytically, not by a learned classifier), over all combinations and split into common, rare (each
  < 1% of training) and held-out (never seen in training) ones.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from cvae_core.data import morpho
from cvae_core.errors import ConfigError, DataError
from cvae_core.eval.classifier import load_classifier
from cvae_core.eval.likelihood import encoder_means, evaluate, train_sigma
from cvae_core.eval.projection import pca_2d
from cvae_core.eval.samples import frechet_distance_of_features
from cvae_core.registry import MODELS, make_config


def condition_fields(model_name: str, data, overrides: dict | None = None) -> dict[str, Any]:
    """Fields set by the data set: image_shape and num_classes always; for a conditional model on a data set with
    attribute vectors, condition="attributes" and cond_dim = their width unless `overrides` chose a condition."""
    out: dict[str, Any] = {"image_shape": data.image_shape, "num_classes": data.num_classes}
    fields = {f.name for f in dataclasses.fields(MODELS[model_name].config_cls)}
    attrs = data.extras_train.get("attributes")
    chosen = (overrides or {}).get("condition")
    if "condition" not in fields or attrs is None or chosen == "class":
        return out
    attr = {"condition": "attributes", "cond_dim": int(attrs.shape[1])}
    if chosen == "attributes" or _accepts(model_name, attr):
        out.update(attr)  # models with class centres (cgvae, ct3vae) keep their class condition
    return out


def _accepts(model_name: str, fields: dict) -> bool:
    try:
        make_config(model_name, **fields)
    except ConfigError:
        return False
    return True


def parse_attrs(text: str, names: list[str]) -> torch.Tensor:
    """`"digit=4,thick=1,slant=0,red=1,large=0"` -> the (d,) float condition vector over `names` (the data set's
    condition names). Values are numbers in [0, 1] (continuous values are allowed); a one-hot group such as
    digit_0..digit_9 is set by ``digit=K`` and must be given; other attributes left out are 0."""
    vec = torch.zeros(len(names))
    groups = _one_hot_groups(names)
    seen: set[str] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, val = part.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--attrs: {part!r} is not NAME=VALUE")
        if key in groups:
            members = groups[key]
            if val.strip() not in members:
                raise ConfigError(f"--attrs: {key} must be one of {', '.join(members)} (got {val.strip()!r})")
            vec[names.index(f"{key}_{val.strip()}")] = 1.0
        elif key in names:
            try:
                v = float(val)
            except ValueError:
                raise ConfigError(f"--attrs: {key} must be a number in [0, 1] (got {val!r})") from None
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"--attrs: {key} must be in [0, 1] (got {v:g})")
            vec[names.index(key)] = v
        else:
            choices = [*groups, *(n for n in names if not _group_of(n, groups))]
            raise ConfigError(f"--attrs: unknown attribute {key!r}; this model knows {', '.join(choices)}")
        seen.add(key)
    missing = [g for g in groups if g not in seen]
    if missing:
        raise ConfigError(f"--attrs must set {', '.join(f'{g}=...' for g in missing)}")
    return vec


def _one_hot_groups(names: list[str]) -> dict[str, list[str]]:
    """Names like digit_0 .. digit_9 form a one-hot group "digit" with members "0" .. "9"."""
    groups: dict[str, list[str]] = {}
    for n in names:
        head, _, tail = n.rpartition("_")
        if head and tail.isdigit():
            groups.setdefault(head, []).append(tail)
    return {g: m for g, m in groups.items() if len(m) >= 2}


def _group_of(name: str, groups: dict[str, list[str]]) -> bool:
    head, _, tail = name.rpartition("_")
    return head in groups and tail in groups[head]


def example_conditions(dataset_info: dict, n: int, seed: int = 0) -> torch.Tensor:
    """n condition vectors to show an attribute-conditional run with when no particular one is asked for (the Home
    page's sample grid): for morpho-mnist, the digits in turn, each with a seeded random combination of the four
    attributes; for another attribute set, seeded random binary attributes."""
    rng = np.random.default_rng(seed)
    names = dataset_info.get("attributes") or []
    if str(dataset_info.get("name", "")).startswith("morpho-mnist"):
        return morpho.condition_vector(np.arange(n) % 10, morpho.combo_attrs(rng.integers(0, 16, n)))
    if not names:
        raise DataError("this run does not record the names of its attributes (its data set info has none)")
    return torch.from_numpy(rng.integers(0, 2, (n, len(names))).astype(np.float32))


# ------------------------------------------------------------------ generating and scoring combinations
def asked_bits(attrs) -> np.ndarray:
    """Asked attribute values in [0, 1] -> the 0/1 side they ask for, rounded half up (0.5 counts as 1): the one
    rule behind the cell an asked condition falls in and the accuracy of its samples (``morpho.attribute_accuracy``
    rounds the same way)."""
    return (np.asarray(attrs, dtype=float) >= 0.5).astype(int)


def cell_conditions(digit: int, attrs, n: int) -> torch.Tensor:
    """n copies of the morpho-mnist condition vector for (digit, attrs (4,) in [0, 1]), (n, 14) float32."""
    return morpho.condition_vector(np.full(n, int(digit)), _repeat(attrs, n))


def _repeat(attrs, n: int) -> np.ndarray:
    """(4,) attributes -> (n, 4) float32 rows (a copy: torch warns about read-only numpy views)."""
    return np.tile(np.asarray(attrs, dtype=np.float32).reshape(1, len(morpho.ATTRIBUTES)), (n, 1))


@torch.no_grad()
def generate(model, cond: torch.Tensor, *, seed: int = 0, tau: float | None = None,
             batch_size: int = 500) -> torch.Tensor:
    """Images (N, C, H, W) in [0, 1] on the CPU for the conditions `cond` (N, d), from seeded prior noise (a private
    generator: the global RNG is not touched, so a training thread may keep using it)."""
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(cond), batch_size):
        c = cond[i : i + batch_size]
        noise = model.prior_noise(len(c), generator=g)
        out.append(model.sample(len(c), y=c.to(device), tau=tau, eps=noise).float().cpu())
    return torch.cat(out)


def score_cell(model, digit: int, attrs, n: int = 32, *, seed: int = 0, tau: float | None = None
               ) -> dict[str, Any]:
    """Generate n images for one combination and measure them: ``images`` (n, C, H, W), ``predicted`` (n, 4) and
    per-attribute ``accuracy`` (a dict with "all", the mean over the attributes; requested values are rounded at
    0.5)."""
    imgs = generate(model, cell_conditions(digit, attrs, n), seed=seed, tau=tau)
    return {"images": imgs, "predicted": morpho.predict_attributes(imgs),
            "accuracy": morpho.attribute_accuracy(imgs, _repeat(attrs, n))}


def cell_kinds() -> np.ndarray:
    """(10, 16) array of "common" / "rare" / "heldout" for every (digit, combination) cell."""
    return np.array([[morpho.cell_kind(d, c) for c in range(16)] for d in range(10)])


@torch.no_grad()
def attribute_scores(model, *, n_per_cell: int = 16, seed: int = 0, tau: float | None = None,
                     progress=None) -> dict[str, Any]:
    """`n_per_cell` samples for each of the 160 morpho-mnist (digit, combination) cells, measured in the pixels:
    ``attr_accuracy`` (all cells), ``common_`` / ``rare_`` / ``heldout_attr_accuracy`` (cells by their kind in the
    training data), ``attr_accuracy_<name>`` per attribute, ``combo_accuracy`` (share of samples with all four
    right); also ``images`` (N, C, H, W) and the ``digits`` (N,) asked, for the caller's further checks."""
    report = progress or (lambda f, t: None)
    digits = np.repeat(np.arange(10), 16 * n_per_cell)
    combos = np.tile(np.repeat(np.arange(16), n_per_cell), 10)
    attrs = morpho.combo_attrs(combos).astype(np.float32)  # (N, 4)
    report(0.0, f"sampling {len(digits)} images over 160 attribute cells")
    imgs = generate(model, morpho.condition_vector(digits, attrs), seed=seed, tau=tau)
    report(0.7, "measuring the attributes in the pixels")
    correct = morpho.predict_attributes(imgs) == attrs.astype(int)  # (N, 4)
    kind = cell_kinds()[digits, combos]
    out: dict[str, Any] = {"attr_accuracy": float(correct.mean())}
    for k in ("common", "rare", "heldout"):
        out[f"{k}_attr_accuracy"] = float(correct[kind == k].mean()) if (kind == k).any() else math.nan
    for i, name in enumerate(morpho.ATTRIBUTES):
        out[f"attr_accuracy_{name}"] = float(correct[:, i].mean())
    out["combo_accuracy"] = float(correct.all(1).mean())
    out["attr_samples"] = len(digits)
    report(1.0, "done")
    return out | {"images": imgs, "digits": digits}


@torch.no_grad()
def attribute_metrics(model, data, *, n_per_cell: int = 16, seed: int = 0, tau: float | None = None,
                      classifier=None, progress=None, train_sigma_value: float | None = None) -> dict[str, Any]:
    """Everything `evaluate --json` reports for a morpho-mnist model beyond the likelihood terms: the
    ``attribute_scores`` (without the images), and, with the in-project MNIST classifier on the samples' ink (max over
    the colour channels): ``digit_accuracy`` (of the samples, against the digit asked) beside ``digit_accuracy_real``
    (of the real test images: the classifier's ceiling on this data, whose strokes and slants MNIST never had) and
    ``classifier_fid`` (its features of the samples vs of the test images; NOT comparable with Inception FID); and
    ``likelihood_by_kind``."""
    if model.config.condition != "attributes" or model.cond_dim != len(morpho.CONDITION_NAMES):
        raise DataError(f"attribute metrics need a model conditioned on the {len(morpho.CONDITION_NAMES)} morpho-mnist "
                        f"condition values (this one has condition={model.config.condition}, "
                        f"cond_dim={model.cond_dim})")
    report = progress or (lambda f, t: None)
    out = attribute_scores(model, n_per_cell=n_per_cell, seed=seed, tau=tau,
                           progress=lambda f, t: report(0.6 * f, t))
    imgs, digits = out.pop("images"), out.pop("digits")
    report(0.7, "classifier features of samples and test images")
    clf = classifier if classifier is not None else load_classifier(device="cpu")
    ink = lambda x: x.float().amax(1, keepdim=True) / (255.0 if x.dtype == torch.uint8 else 1.0)  # noqa: E731
    f_fake, p_fake = clf.features_and_predictions(ink(imgs))
    f_real, p_real = clf.features_and_predictions(ink(data.x_test))
    out["digit_accuracy"] = float((p_fake.cpu().numpy() == digits).mean())
    out["digit_accuracy_real"] = float((p_real.cpu() == data.y_test.cpu()).float().mean())
    out["classifier_fid"] = frechet_distance_of_features(f_fake, f_real)
    out["classifier_fid_samples"] = len(digits)
    report(0.85, "held-out likelihood by cell kind")
    out.update(likelihood_by_kind(model, data, seed=seed, train_sigma_value=train_sigma_value))
    report(1.0, "done")
    return out


def image_cells(data, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """(digit, combination index) of every morpho-mnist image of a split, from its condition vector."""
    c = (data.extras_test if split == "test" else data.extras_train)["attributes"].cpu().numpy()
    return c[:, :10].argmax(1), morpho.combo_index(asked_bits(c[:, 10:]))


@torch.no_grad()
def likelihood_by_kind(model, data, *, seed: int = 0, train_sigma_value: float | None = None) -> dict[str, float]:
    """Test -ELBO (nats/image, the decoder variance frozen at its training value for calibrated-variance models, so
    that models compare fairly) of the test images in common, rare and held-out cells: ``<kind>_neg_elbo``. The
    held-out cells' images are combinations the model never saw in training. The training value is computed once
    (or taken from `train_sigma_value`), not once per kind."""
    digits, combos = image_cells(data)
    kind = cell_kinds()[digits, combos]
    cond, train_y = data.y_for(model, "test"), data.y_for(model, "train")
    if train_sigma_value is None and model.calibrated_variance:
        train_sigma_value = train_sigma(model, data.x_train, train_y, seed=seed)
    out = {}
    for k in ("common", "rare", "heldout"):
        idx = torch.from_numpy(np.flatnonzero(kind == k))
        if len(idx) < 2:
            continue
        # the training images only for a calibrated model's frozen variance: a fixed-variance model's -ELBO needs
        # none, and with them evaluate would decode them again for a distortion this table does not use
        m = evaluate(model, data.x_test[idx], cond[idx], seed=seed, train_sigma_value=train_sigma_value,
                     **({"train_x": data.x_train, "train_y": train_y} if model.calibrated_variance else {}))
        out[f"{k}_neg_elbo"] = m.get("neg_elbo_train_sigma", m.get("neg_elbo", math.nan))
        out[f"{k}_n_test"] = len(idx)
    return out


# ------------------------------------------------------------------ the learned prior at one condition, in 2-D
def latent_pca(model, data, n_fit: int = 2000):
    """PCA (``projection.pca_2d``) fitted on the encoder means of the first `n_fit` test images, each encoded with
    its own condition: the plane on which ``prior_picture`` draws."""
    means = encoder_means(model, data.x_test[:n_fit], data.y_for(model, "test")[:n_fit])
    return pca_2d(means.numpy())[1]


def cell_images(data, digit: int, attrs, split: str = "train") -> np.ndarray:
    """Indices of the images of a split in the cell (digit, attrs rounded at 0.5)."""
    digits, combos = image_cells(data, split)
    want = int(morpho.combo_index(asked_bits(attrs))[0])
    return np.flatnonzero((digits == int(digit)) & (combos == want))


@torch.no_grad()
def prior_picture(model, data, digit: int, attrs, pca, *, n: int = 300, max_images: int = 300,
                  seed: int = 0) -> dict[str, Any]:
    """Where the model's prior puts the condition (digit, attrs) against N(0, I) and against the images of that
    combination, on the `pca` plane: ``prior`` (n, 2) draws of p(z|y) through the family's overlay hook
    (``map_overlays`` at this condition), ``standard`` (n, 2) draws of N(0, I), ``images`` (k, 2) the encoder means of
    up to `max_images` training images of the cell (``images_split`` "train"), or of its test images when training
    has none (a held-out cell: "test"), and ``n_images`` how many the split has in all."""
    device = next(model.parameters()).device
    cond = cell_conditions(digit, attrs, n)
    g = torch.Generator().manual_seed(seed)
    prior = model.map_overlays(n, generator=g, y=cond)["prior samples"][0]
    standard = torch.randn(n, model.config.latent_dim, generator=g)
    split = "train"
    idx = cell_images(data, digit, attrs, "train")
    if len(idx) == 0:
        split, idx = "test", cell_images(data, digit, attrs, "test")
    x = data.x_train if split == "train" else data.x_test
    y = data.y_for(model, split)
    keep = torch.from_numpy(idx[:max_images])
    if len(keep):
        means = model.encode(model.prepare_batch(x[keep].to(device)), y[keep].to(device)).mean.float().cpu()
        images = pca.transform(means.numpy())
    else:
        images = np.zeros((0, 2), np.float32)
    return {"prior": pca.transform(prior.numpy()), "standard": pca.transform(standard.numpy()), "images": images,
            "images_split": split, "n_images": int(len(idx))}
