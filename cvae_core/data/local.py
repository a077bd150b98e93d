"""SVHN and CIFAR-100 from local files in torchvision's on-disk layout; their long-tailed training sets (SPEC 4).

Files (the official releases, as torchvision's downloaders leave them):

- SVHN: ``ROOT/train_32x32.mat`` and ``ROOT/test_32x32.mat`` (or in ``ROOT/svhn/``): MATLAB v5 files holding
  ``X`` uint8 (32, 32, 3, N) indexed (row, column, RGB, item) and ``y`` (N, 1) with labels 1..10, where 10 is
  the digit 0. Read with ``scipy.io.loadmat`` and transposed exactly as ``torchvision.datasets.SVHN`` does.
- CIFAR-100: ``ROOT/cifar-100-python/{train,test,meta}`` (or under ``ROOT/cifar100/``): Python-2 pickles of
  dicts; ``data`` uint8 (N, 3072) holds the R, G and B planes of each 32x32 image, rows in order, then
  ``fine_labels`` (N ints in 0..99); ``meta`` holds ``fine_label_names``.

The files are read here rather than through torchvision's dataset classes because those refuse any file whose
MD5 differs from the official release (so no converted or test copy loads) and unpickle CIFAR with plain
``pickle.load``, which runs whatever code a file names; here the pickles go through an unpickler that admits
numpy's array classes only. Nothing is downloaded unless ``download=True``: then torchvision's own downloader
fetches the official files (MD5-checked) into ROOT, and they are read as above.

SVHN's classes are not balanced, in the training set (4,659 to 13,861 images per digit) or the test set; its
long-tailed set starts from n_max = the smallest training class, and its test set stays as released.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np
import torch

from cvae_core.data.dataset import Dataset
from cvae_core.data.longtail import long_tail_counts, long_tail_indices
from cvae_core.data.mnist import _NumpyOnlyUnpickler, default_data_root
from cvae_core.errors import DataError

SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
CIFAR100_FOLDER = "cifar-100-python"
CIFAR100_FILES = ("train", "test", "meta")
_GET = "pass --data-root DIR, or --download when online"


def _root(root: str | Path | None) -> Path:
    return Path(root) if root is not None else default_data_root()


def _what_is_there(dirs: list[Path], files: list[str]) -> str:
    """'not found', or which of the expected files the first folder holding some of them lacks."""
    for d in dirs:
        have = [f for f in files if (d / f).is_file()]
        if have:
            return f"{d} has {', '.join(have)} but not {', '.join(f for f in files if f not in have)}"
    return "not found"


def _test_note(y_test: torch.Tensor, K: int) -> str:
    counts = torch.bincount(y_test, minlength=K)
    lo, hi = int(counts.min()), int(counts.max())
    if lo == hi:
        return f"as released, balanced: {lo} images per class"
    return f"as released, NOT balanced: {lo} to {hi} images per class"


# ---------------------------------------------------------------- SVHN
def _svhn_dir(name: str, root: Path, download: bool) -> Path:
    """The folder holding both .mat files: ROOT, ROOT/svhn or ROOT/SVHN; with `download`, fetch them into ROOT."""
    dirs = [root, root / "svhn", root / "SVHN"]
    for d in dirs:
        if all((d / f).is_file() for f in SVHN_FILES.values()):
            return d
    if download:
        from torchvision.datasets import SVHN
        from torchvision.datasets.utils import download_url

        try:
            for split in SVHN_FILES:
                url, fname, md5 = SVHN.split_list[split]
                download_url(url, str(root), fname, md5)
        except Exception as e:  # network errors come in many types; say which and where
            raise DataError(f"torchvision could not download SVHN into {root}: {type(e).__name__}: {e}") from None
        if all((root / f).is_file() for f in SVHN_FILES.values()):
            return root
    raise DataError(f"{name} needs SVHN in torchvision's layout: {SVHN_FILES['train']} and {SVHN_FILES['test']} in "
                    f"{root} or {root / 'svhn'} ({_what_is_there(dirs, list(SVHN_FILES.values()))}); {_GET}")


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN .mat file -> (x uint8 (N, 3, 32, 32), y int64 (N,) with the digit 0 as label 0)."""
    import scipy.io

    path = Path(path)
    try:
        m = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except Exception as e:  # scipy raises ValueError, TypeError, OSError, NotImplementedError (v7.3 HDF5), etc.
        raise DataError(f"{path}: not a readable SVHN .mat file ({type(e).__name__}: {e})") from None
    x, y = m.get("X"), m.get("y")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        got = "nothing" if x is None else f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}"
        raise DataError(f"{path}: expected X as uint8 (32, 32, 3, N), got {got}")
    if not isinstance(y, np.ndarray) or y.size != x.shape[3]:
        raise DataError(f"{path}: expected y with one label per image ({x.shape[3]}), got "
                        f"{getattr(y, 'shape', 'nothing')}")
    y = y.astype(np.int64).reshape(-1)
    if y.size and (y.min() < 0 or y.max() > 10):
        raise DataError(f"{path}: labels must be in 0..10 (10 = digit 0), got {y.min()}..{y.max()}")
    y[y == 10] = 0  # as torchvision: SVHN's label 10 is the digit 0
    # (row, col, channel, item) -> (item, channel, row, col), torchvision's transpose (3, 2, 0, 1)
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y


def _svhn(name: str, root, download: bool):
    d = _svhn_dir(name, _root(root), download)
    (xtr, ytr), (xte, yte) = (read_svhn_mat(d / SVHN_FILES[s]) for s in ("train", "test"))
    t = torch.from_numpy
    info = {"source": "local", "root": str(d), "rho": 1.0, "test_set": _test_note(t(yte), 10)}
    return Dataset(name, t(xtr), t(ytr), t(xte), t(yte), 10, [str(i) for i in range(10)], info)


# ---------------------------------------------------------------- CIFAR-100
class _CifarUnpickler(_NumpyOnlyUnpickler):
    """numpy's array classes, and ``_codecs.encode``, which Python 3 writes for bytes in protocol-2 pickles."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return codecs.encode
        return super().find_class(module, name)


def _unpickle_dict(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _CifarUnpickler(f, encoding="latin1").load()  # latin1: the Python-2 str keys become str
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise DataError(f"{path}: not a CIFAR pickle ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_cifar100_split(path: str | Path, num_classes: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-100 pickle (``train`` or ``test``) -> (x uint8 (N, 3, 32, 32), y int64 (N,) fine labels)."""
    path = Path(path)
    d = _unpickle_dict(path)
    if "data" not in d or "fine_labels" not in d:
        raise DataError(f"{path}: expected the keys data and fine_labels, found {', '.join(map(str, d)) or 'none'}")
    x = d["data"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise DataError(f"{path}: expected data as uint8 (N, 3072), got {getattr(x, 'dtype', type(x).__name__)} "
                        f"{getattr(x, 'shape', '')}")
    try:
        y = np.asarray(d["fine_labels"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(f"{path}: fine_labels are not integers ({e})") from None
    if len(y) != len(x):
        raise DataError(f"{path}: {len(x)} images but {len(y)} fine_labels")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{path}: fine_labels must be 0..{num_classes - 1}, got {y.min()}..{y.max()}")
    return x.reshape(-1, 3, 32, 32).copy(), y  # each row: 1024 R, 1024 G, 1024 B values, rows of 32 in order


def read_cifar100_names(path: str | Path) -> list[str]:
    path = Path(path)
    names = _unpickle_dict(path).get("fine_label_names")
    if not isinstance(names, list) or not names:
        raise DataError(f"{path}: expected fine_label_names, a list of class names")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def _cifar100_dir(name: str, root: Path, download: bool) -> tuple[Path, Path]:
    """(torchvision's root, the cifar-100-python folder inside it)."""
    cands = [root, root / "cifar100", root / "CIFAR100"]
    if root.name == CIFAR100_FOLDER:  # the user pointed at the inner folder itself
        cands.insert(0, root.parent)
    for r in cands:
        if all((r / CIFAR100_FOLDER / f).is_file() for f in CIFAR100_FILES):
            return r, r / CIFAR100_FOLDER
    if download:
        from torchvision.datasets import CIFAR100
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(CIFAR100.url, str(root), filename=CIFAR100.filename, md5=CIFAR100.tgz_md5)
        except Exception as e:  # network errors come in many types; say which and where
            raise DataError(f"torchvision could not download CIFAR-100 into {root}: {type(e).__name__}: {e}") from None
        if all((root / CIFAR100_FOLDER / f).is_file() for f in CIFAR100_FILES):
            return root, root / CIFAR100_FOLDER
    files = [f"{CIFAR100_FOLDER}/{f}" for f in CIFAR100_FILES]
    there = _what_is_there(cands, files)
    raise DataError(f"{name} needs CIFAR-100 in torchvision's layout: {', '.join(files[:-1])} and {files[-1]} in "
                    f"{root} or {root / 'cifar100'} ({there}); {_GET}")


def _cifar100(name: str, root, download: bool):
    r, d = _cifar100_dir(name, _root(root), download)
    names = read_cifar100_names(d / "meta")
    K = len(names)
    (xtr, ytr), (xte, yte) = (read_cifar100_split(d / s, K) for s in ("train", "test"))
    t = torch.from_numpy
    info = {"source": "local", "root": str(r), "rho": 1.0, "test_set": _test_note(t(yte), K)}
    return Dataset(name, t(xtr), t(ytr), t(xte), t(yte), K, names, info)


# ---------------------------------------------------------------- builders for DATASETS
def _long_tailed(base, name: str, rho: float, seed: int):
    """SPEC section 4: n_k = floor(n_max rho^(-k/(K-1))) training images of class k (seeded), n_max = the
    smallest class; the test set as it is."""
    idx = torch.from_numpy(long_tail_indices(base.y_train.numpy(), rho, seed=seed))
    lt = base.select(idx)
    lt.name, lt.info = name, {**base.info, "rho": float(rho), "seed": seed}
    return lt


def svhn(root=None, download: bool = False, **_):
    return _svhn("svhn", root, download)


def svhn_lt(root=None, download: bool = False, rho: float = 10.0, seed: int = 0, **_):
    long_tail_counts(1, rho, 10)  # validates rho before the (slower) load
    return _long_tailed(_svhn("svhn-lt", root, download), "svhn-lt", rho, seed)


def cifar100(root=None, download: bool = False, **_):
    return _cifar100("cifar100", root, download)


def cifar100_lt(root=None, download: bool = False, rho: float = 10.0, seed: int = 0, **_):
    long_tail_counts(1, rho, 100)
    return _long_tailed(_cifar100("cifar100-lt", root, download), "cifar100-lt", rho, seed)
