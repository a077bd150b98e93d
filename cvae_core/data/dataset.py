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
