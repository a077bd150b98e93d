"""CelebA from local files in torchvision's on-disk layout (SPEC section 8), decoded once into a cache.

Files (the official release, as ``torchvision.datasets.CelebA`` leaves them):

- ``ROOT/celeba/img_align_celeba/*.jpg``: the 202,599 aligned and cropped faces, 178x218 JPEGs;
- ``ROOT/celeba/list_attr_celeba.txt``: the number of images, then the 40 attribute names, then one line per image,
  ``000001.jpg -1  1  1 -1 ...`` (40 values in {-1, 1});
- ``ROOT/celeba/list_eval_partition.txt``: ``000001.jpg 0`` per image (0 train, 1 validation, 2 test).

Images are centre-cropped to 148x148 and resized to 64x64 (bilinear, antialiased), the usual preprocessing for VAEs
on CelebA since DFC-VAE (Hou et al., arXiv 1610.00291); the result equals torchvision's
``Compose([CenterCrop(148), Resize(64)])`` on the PIL image. Train = partition 0, test = partition 2 (validation is
not used). Each face is one class (y = 0); the 40 attributes become the extra "attributes", float32 in {0, 1}.

Decoding the 182,732 JPEGs of the two splits takes a few minutes (about 1,300 images/s on one core, measured on
178x218 test JPEGs), so the decoded arrays (2.5 GB) are written once to
``ROOT/celeba/cache-64px[-limitN]/`` (a folder of .npy files, written under a temporary name and renamed, so an
interrupted run leaves no half cache) and read from there afterwards; it is rebuilt when the two text files change.
``limit`` keeps the first N images of each split (in file order) for quick tries. Nothing is downloaded: the
Google Drive files behind torchvision's downloader refuse most automated downloads, so the files are fetched by hand.
"""

from __future__ import annotations

import json
import numbers
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cvae_core.data.dataset import Dataset
from cvae_core.data.mnist import default_data_root
from cvae_core.errors import DataError

FOLDER = "celeba"
IMAGES = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
CROP, SIZE = 148, 64
TRAIN_PART, TEST_PART = 0, 2
_CACHE_VERSION = 1


def _layout(root: Path) -> str:
    return (f"{root / FOLDER / IMAGES}/*.jpg, {root / FOLDER / ATTR_FILE} and {root / FOLDER / PARTITION_FILE} "
            "(torchvision's layout; fetch the files by hand, nothing is downloaded)")


def celeba_dir(root: str | Path | None = None) -> Path:
    """The folder holding the CelebA files: ROOT/celeba, or ROOT itself when it is that folder."""
    root = Path(root) if root is not None else default_data_root()
    for d in (root / FOLDER, root):
        if (d / ATTR_FILE).is_file() and (d / PARTITION_FILE).is_file() and (d / IMAGES).is_dir():
            return d
    there = [str(p.relative_to(root)) for p in (root / FOLDER / IMAGES, root / FOLDER / ATTR_FILE,
                                                root / FOLDER / PARTITION_FILE) if p.exists()]
    have = f"found only {', '.join(there)}" if there else "none found"
    raise DataError(f"celeba needs {_layout(root)}; {have}")


def read_attributes(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """list_attr_celeba.txt -> (attribute names, file names, values int8 (N, 40) in {0, 1})."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if len(lines) < 2:
        raise DataError(f"{path}: expected a count line, a line of attribute names, then one line per image")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DataError(f"{path}: the first line should be the number of images, got {lines[0][:40]!r}") from None
    names = lines[1].split()
    rows = [ln.split() for ln in lines[2:] if ln.strip()]
    if len(rows) != count:
        raise DataError(f"{path}: says {count} images but lists {len(rows)}")
    bad = next((i for i, r in enumerate(rows) if len(r) != len(names) + 1), None)
    if bad is not None:
        raise DataError(f"{path}: line {bad + 3} has {len(rows[bad]) - 1} values for {len(names)} attributes")
    try:
        v = np.array([r[1:] for r in rows], dtype=np.int64).reshape(len(rows), len(names))
    except ValueError:
        raise DataError(f"{path}: attribute values must be the integers -1 and 1") from None
    if not np.isin(v, (-1, 1)).all():
        raise DataError(f"{path}: attribute values must be -1 or 1, found {sorted(set(np.unique(v)) - {-1, 1})}")
    return names, [r[0] for r in rows], (v > 0).astype(np.int8)


def read_partition(path: str | Path) -> dict[str, int]:
    """list_eval_partition.txt -> {file name: 0 train, 1 validation, 2 test}."""
    path = Path(path)
    out = {}
    for i, ln in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        parts = ln.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataError(f"{path}: line {i + 1} should be '<file>.jpg 0|1|2', got {ln[:60]!r}")
        out[parts[0]] = int(parts[1])
    return out


def decode(path: str | Path) -> np.ndarray:
    """One JPEG -> (3, 64, 64) uint8: centre crop 148x148 (as torchvision's CenterCrop: black padding where the image
    is smaller), then resize to 64x64, bilinear with antialiasing (PIL's resize, as torchvision's Resize on PIL)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            left, top = int(round((w - CROP) / 2.0)), int(round((h - CROP) / 2.0))
            im = im.crop((left, top, left + CROP, top + CROP)).resize((SIZE, SIZE), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
    except FileNotFoundError:
        raise DataError(f"{path}: listed in {ATTR_FILE} but missing") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: not a readable JPEG ({type(e).__name__}: {e})") from None


def _stamp(d: Path) -> dict:
    """What the cache was decoded from: the text files' sizes and modification times."""
    return {f: [(d / f).stat().st_size, (d / f).stat().st_mtime_ns] for f in (ATTR_FILE, PARTITION_FILE)}


def cache_dir(d: Path, limit: int | None) -> Path:
    return d / (f"cache-{SIZE}px" + (f"-limit{limit}" if limit is not None else ""))


_ARRAYS = ("x_train", "a_train", "x_test", "a_test")


def build_celeba(root: str | Path | None = None, limit: int | None = None, verbose: bool = True) -> Path:
    """Decode the train (partition 0) and test (partition 2) images into the cache folder; returns it."""
    if limit is not None and (not isinstance(limit, numbers.Integral) or isinstance(limit, bool) or limit < 1):
        raise DataError(f"celeba: limit must be a positive number of images per split, got {limit!r}")
    limit = None if limit is None else int(limit)
    d = celeba_dir(root)
    names, files, attrs = read_attributes(d / ATTR_FILE)
    part = read_partition(d / PARTITION_FILE)
    missing = [f for f in files if f not in part]
    if missing:
        raise DataError(f"{d / PARTITION_FILE}: no partition for {len(missing)} images, e.g. {missing[0]}")
    p = np.array([part[f] for f in files])
    split_idx = {s: np.flatnonzero(p == k)[:limit] for s, k in (("train", TRAIN_PART), ("test", TEST_PART))}
    out = cache_dir(d, limit)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    bar = None
    if verbose:
        bar = tqdm(total=sum(len(i) for i in split_idx.values()), unit="img", desc="decoding CelebA",
                   file=sys.stderr, dynamic_ncols=True)
    try:
        for s, idx in split_idx.items():
            x = np.lib.format.open_memmap(tmp / f"x_{s}.npy", mode="w+", dtype=np.uint8, shape=(len(idx), 3, SIZE,
                                                                                                  SIZE))
            for j, i in enumerate(idx):
                x[j] = decode(d / IMAGES / files[i])
                if bar is not None:
                    bar.update(1)
            x.flush()
            del x
            np.save(tmp / f"a_{s}.npy", attrs[idx])
        (tmp / "meta.json").write_text(json.dumps({"version": _CACHE_VERSION, "names": names, "limit": limit,
                                                   "stamp": _stamp(d)}))
        shutil.rmtree(out, ignore_errors=True)  # a stale cache: the text files changed
        os.replace(tmp, out)
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f"CelebA decoded into {out}", file=sys.stderr)
    return out


def _read_cache(d: Path, limit: int | None) -> tuple[dict, dict[str, np.ndarray]] | None:
    c = cache_dir(d, limit)
    try:
        meta = json.loads((c / "meta.json").read_text())
        if meta.get("version") != _CACHE_VERSION or meta.get("stamp") != _stamp(d):
            return None
        arr = {k: np.load(c / f"{k}.npy") for k in _ARRAYS}
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    ok = all(arr[f"x_{s}"].shape[1:] == (3, SIZE, SIZE) and arr[f"a_{s}"].shape == (len(arr[f"x_{s}"]),
                                                                                      len(meta["names"]))
             for s in ("train", "test"))
    return (meta, arr) if ok else None


def load_celeba(root=None, download: bool = False, limit: int | None = None, verbose: bool = True, **_):
    """Builder for DATASETS: CelebA 64x64, decoded on the first call and read from the cache afterwards."""
    d = celeba_dir(root)  # `download` is ignored: nothing is downloaded (the error message says so)
    got = _read_cache(d, limit)
    if got is None:
        build_celeba(root, limit, verbose)
        got = _read_cache(d, limit)
        if got is None:
            raise DataError(f"celeba: could not read back the cache just written to {cache_dir(d, limit)}")
    meta, arr = got
    t = torch.from_numpy
    n_tr, n_te = len(arr["x_train"]), len(arr["x_test"])
    info = {"source": "local", "root": str(d), "limit": limit,
            "attributes": list(meta["names"]), "partition": {"train": TRAIN_PART, "test": TEST_PART}}
    return Dataset("celeba", t(arr["x_train"]), torch.zeros(n_tr, dtype=torch.int64), t(arr["x_test"]),
                   torch.zeros(n_te, dtype=torch.int64), 1, ["face"], info,
                   {"attributes": t(arr["a_train"].astype(np.float32))},
                   {"attributes": t(arr["a_test"].astype(np.float32))})
