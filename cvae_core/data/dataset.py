"""The ``Dataset`` container (uint8 images that can live whole on the training device) and ``to_float``; the
loaders of ``cvae_core.data`` build it, so it sits below them."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cvae_core.errors import DataError


@dataclass
class Dataset:
    """Images are uint8 (N, C, H, W); labels int64 (N,). Convert a batch with ``to_float``.

    ``extras_train`` / ``extras_test``: per-item values beside the images (attribute vectors, teacher
    probabilities, token masks), name -> tensor whose first dimension is N; training slices them with the batch
    index of x and hands them to the model's loss."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    class_names: list[str]
    info: dict = field(default_factory=dict)
    extras_train: dict[str, torch.Tensor] = field(default_factory=dict)
    extras_test: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Shapes and dtypes only (no pass over the values: ``select`` and ``to`` build Datasets too); the loaders'
        ``load_dataset`` also checks the label values (``check_labels``)."""
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4):
                raise DataError(f"{self.name}: {split} images must be a uint8 tensor (N, C, H, W), got "
                                f"{_describe(x)}")
            if not (torch.is_tensor(y) and y.dim() == 1 and _integer(y) and len(y) == len(x)):
                raise DataError(f"{self.name}: {split} labels must be an integer tensor (N,) with N = {len(x)} "
                                f"(one class index per image), got {_describe(y)}")
        if self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise DataError(f"{self.name}: test images {tuple(self.x_test.shape[1:])} and training images "
                            f"{tuple(self.x_train.shape[1:])} differ in shape (C, H, W)")
        if not (isinstance(self.num_classes, int) and self.num_classes >= 1):
            raise DataError(f"{self.name}: num_classes must be an integer >= 1 (got {self.num_classes!r})")
        for split, x, extras in (("train", self.x_train, self.extras_train), ("test", self.x_test, self.extras_test)):
            for k, v in extras.items():
                if len(v) != len(x):
                    raise DataError(f"{self.name}: extra {k!r} has {len(v)} {split} items for {len(x)} images")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def y_for(self, model, split: str = "train") -> torch.Tensor:
        """The y a model (or its config) is given: the class labels (N,) int64, or, for a model conditioned on
        attributes (``condition == "attributes"``), the attribute vectors (N, d) float32 of ``extras["attributes"]``."""
        cfg = getattr(model, "config", model)
        labels, extras = (self.y_train, self.extras_train) if split == "train" else (self.y_test, self.extras_test)
        if getattr(cfg, "condition", None) != "attributes":
            return labels
        if "attributes" not in extras:
            raise DataError(f"condition=attributes needs a data set with attribute vectors; {self.name} has none")
        return extras["attributes"]

    def class_counts(self, split: str = "train") -> list[int]:
        y = self.y_train if split == "train" else self.y_test
        return torch.bincount(y, minlength=self.num_classes).tolist()

    def to(self, device: str | torch.device) -> Dataset:
        return Dataset(self.name, self.x_train.to(device), self.y_train.to(device), self.x_test.to(device),
                       self.y_test.to(device), self.num_classes, self.class_names, dict(self.info),
                       {k: v.to(device) for k, v in self.extras_train.items()},
                       {k: v.to(device) for k, v in self.extras_test.items()})

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> Dataset:
        """First n items of each split (for quick tests and demos)."""
        return self.select(slice(None, n_train), slice(None, n_test))

    def select(self, train_index, test_index=slice(None)) -> Dataset:
        """The items at the given indices (slices, index tensors or arrays) of each split, extras included."""
        return Dataset(self.name, self.x_train[train_index], self.y_train[train_index], self.x_test[test_index],
                       self.y_test[test_index], self.num_classes, self.class_names, dict(self.info),
                       {k: v[train_index] for k, v in self.extras_train.items()},
                       {k: v[test_index] for k, v in self.extras_test.items()})


def to_float(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return x_u8.float().div_(255.0)


# ---------------------------------------------------------------- checks of what a caller hands the models
def _describe(x) -> str:
    """`torch.float64 of shape (8, 28, 28)`, or the type of a non-tensor."""
    if torch.is_tensor(x):
        return f"{x.dtype} of shape {tuple(x.shape)}"
    shape = getattr(x, "shape", None)
    return type(x).__name__ + (f" of shape {tuple(shape)}" if shape is not None else "")


def _integer(t: torch.Tensor) -> bool:
    return not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)


def check_images(x, image_shape: tuple[int, ...] | None = None, *, what: str = "images", floats_only: bool = False,
                 values: bool = True, min_items: int = 0) -> None:
    """Refuse in one ``DataError`` line, naming what was expected and what was given, anything that is not a batch of
    images as the models take them: a tensor (N, C, H, W) of uint8 pixels in 0..255 or of floats in [0, 1].

    `image_shape`: the (C, H, W) the model was built for (None: any). `floats_only`: model inputs, which ``encode``
    takes (uint8 images go through ``model.prepare_batch`` first). `values`: also check that float pixels are finite
    and in [0, 1]: one pass and one host sync, so once per call, never in a training step. `min_items`: the least N.

    Example:
        >>> import torch
        >>> from cvae_core.data.dataset import check_images
        >>> check_images(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), (1, 28, 28))
        >>> check_images(torch.zeros(2, 28, 28), (1, 28, 28), what="evaluate")
        Traceback (most recent call last):
        ...
        cvae_core.errors.DataError: evaluate: expected images of shape (N, 1, 28, 28), got torch.float32 of shape ...
    """
    want = f"(N, {', '.join(map(str, image_shape))})" if image_shape is not None else "(N, C, H, W)"
    if not torch.is_tensor(x):
        hint = " (convert it with torch.from_numpy(x))" if type(x).__module__ == "numpy" else ""
        raise DataError(f"{what}: expected a torch tensor of images {want}, got {_describe(x)}{hint}")
    if floats_only and not x.is_floating_point():
        hint = " (uint8 images: model.prepare_batch(x) makes them floats in [0, 1])" if x.dtype == torch.uint8 else ""
        raise DataError(f"{what}: expected float pixels in [0, 1], got {x.dtype}{hint}")
    if not (x.dtype == torch.uint8 or x.is_floating_point()):
        hint = " (a mask: x.to(torch.uint8) * 255)" if x.dtype == torch.bool else ""
        raise DataError(f"{what}: expected uint8 pixels in 0..255 or float pixels in [0, 1], got {x.dtype}{hint}")
    if x.dim() != 4 or (image_shape is not None and tuple(x.shape[1:]) != tuple(image_shape)):
        hint = ""
        if image_shape is not None and tuple(x.shape) == tuple(image_shape):
            hint = " (one image: x.unsqueeze(0))"
        elif image_shape is not None and x.dim() == 3 and image_shape[0] == 1 and tuple(x.shape[1:]) == tuple(
                image_shape[1:]):
            hint = " (add the channel axis: x.unsqueeze(1))"
        raise DataError(f"{what}: expected images of shape {want}, got {_describe(x)}{hint}")
    if len(x) < min_items:
        raise DataError(f"{what}: expected at least {min_items} image{'s' * (min_items != 1)}, got none")
    if values and x.is_floating_point() and x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        nan, inf = int(x.isnan().sum()), int(x.isinf().sum())
        if nan or inf:
            bad = " and ".join(f"{k} {w}" for k, w in ((nan, "NaN"), (inf, "infinite")) if k)
            raise DataError(f"{what}: expected finite pixels in [0, 1], got {bad} values among {x.numel()}")
        lo, hi = float(x.min()), float(x.max())
        hint = " (uint8-range floats: divide by 255)" if hi > 1 and hi <= 255 and lo >= 0 else ""
        raise DataError(f"{what}: expected float pixels in [0, 1], got values from {lo:.4g} to {hi:.4g}{hint}")


def check_labels(y, num_classes: int, n: int | None = None, *, what: str = "labels") -> None:
    """Refuse in one ``DataError`` line class labels that are not an integer tensor (N,) of indices in
    0..num_classes-1 (N = `n` when given). One pass and one host sync: once per call."""
    if not (torch.is_tensor(y) and y.dim() == 1 and _integer(y)):
        raise DataError(f"{what}: expected class indices, an integer tensor (N,), got {_describe(y)}")
    if n is not None and len(y) != n:
        raise DataError(f"{what}: expected one class index per image ({n}), got {len(y)}")
    if len(y) and not bool(((y >= 0) & (y < num_classes)).all()):
        raise DataError(f"{what}: class indices must be in 0..{num_classes - 1}, got {int(y.min())}..{int(y.max())}")
