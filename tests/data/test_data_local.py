"""SVHN and CIFAR-100 from local files in torchvision's layout (cvae_core/data/local.py), on small FAKE folders
written here in the official formats: SVHN's MATLAB v5 files (X uint8 (32, 32, 3, N), y (N, 1) with 10 meaning the
digit 0) and CIFAR-100's Python-2 pickles (data uint8 (N, 3072) as R, G, B planes; fine_labels; meta with
fine_label_names). Pixels and labels are checked against the values written, against index arithmetic on the raw
arrays, and against torchvision's own readers (with their MD5 check switched off, since the files are fakes);
long-tail counts against long_tail_counts; missing files against the one-line error; the CLI end to end."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from cvae_core.data import DATASETS, load_dataset, long_tail_counts
from cvae_core.data.local import read_cifar100_split
from cvae_core.errors import DataError

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")

SVHN_TRAIN = [30 + 3 * d for d in range(10)]  # digit d has 30 + 3d images: not balanced, like the real set
SVHN_TEST = [5 + d for d in range(10)]
CIFAR_TRAIN, CIFAR_TEST = 8, 2  # per class


# ---------------------------------------------------------------- fake folders in the official formats
def write_svhn(folder: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """train_32x32.mat / test_32x32.mat as the official files hold them; returns the raw (X, y) written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    raw = {}
    for split, counts in (("train", SVHN_TRAIN), ("test", SVHN_TEST)):
        digits = np.concatenate([np.full(n, d) for d, n in enumerate(counts)])
        rng.shuffle(digits)
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]  # (N, 1); the digit 0 is stored as 10
        X = rng.integers(0, 256, (32, 32, 3, len(y)), dtype=np.uint8)  # (row, col, RGB, item)
        scipy.io.savemat(str(folder / f"{split}_32x32.mat"), {"X": X, "y": y})  # MATLAB v5, as the real files
        raw[split] = (X, y)
    return raw


class _Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2's str (SHORT_BINSTRING / BINSTRING), as in the CIFAR files, which Python 2
    pickled: read with encoding="latin1" (as torchvision does) their keys come back as str, with "bytes" as bytes."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        b = obj.encode("latin1") if isinstance(obj, str) else obj
        self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b if len(b) < 256
                   else pickle.BINSTRING + struct.pack("<i", len(b)) + b)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str

    def save_global(self, obj, name=None):  # numpy 1's module name, as in the released files
        if getattr(obj, "__name__", None) == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _dump(obj, path: Path, style: str) -> None:
    with open(path, "wb") as f:
        if style == "py2":
            _Py2Pickler(f, protocol=2).dump(obj)
        else:  # "py3": what someone re-saving the dicts (bytes keys, as read with encoding="bytes") would write
            pickle.dump(obj, f, protocol=2)


def write_cifar100(root: Path, seed: int = 0, style: str = "py2") -> dict[str, tuple[np.ndarray, list[int]]]:
    """root/cifar-100-python/{train,test,meta}; returns the raw (data, fine_labels) written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    key = (lambda k: k.encode()) if style == "py3" else (lambda k: k)
    raw = {}
    for split, n in (("train", CIFAR_TRAIN), ("test", CIFAR_TEST)):
        labels = np.repeat(np.arange(100), n)
        rng.shuffle(labels)
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        d = {key("filenames"): [key(f"img_{i}.png") for i in range(len(labels))], key("batch_label"): key(split),
             key("fine_labels"): labels.tolist(), key("coarse_labels"): (labels // 5).tolist(), key("data"): data}
        _dump(d, folder / split, style)
        raw[split] = (data, labels.tolist())
    names = [f"class_{i:02d}" for i in range(100)]
    _dump({key("fine_label_names"): [key(n) for n in names], key("coarse_label_names"): [key("x")] * 20},
          folder / "meta", style)
    raw["names"] = names
    return raw


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """One folder holding both data sets, as torchvision leaves them: ROOT/*_32x32.mat and ROOT/cifar-100-python/."""
    root = tmp_path_factory.mktemp("local-data")
    return root, write_svhn(root), write_cifar100(root)


# ---------------------------------------------------------------- SVHN
def test_svhn_pixels_labels_and_info(fake):
    root, svhn_raw, _ = fake
    d = load_dataset("svhn", root=root)
    for split, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
        X, Y = svhn_raw[split]
        assert x.shape == (X.shape[3], 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
        for i in (0, 1, len(y) // 2, len(y) - 1):
            for c in range(3):  # image i, channel c is the (row, col) plane X[:, :, c, i]
                assert np.array_equal(x[i, c].numpy(), X[:, :, c, i])
        assert x[3, 2, 5, 17].item() == X[5, 17, 2, 3] and x[3, 0, 17, 5].item() == X[17, 5, 0, 3]
        assert np.array_equal(x.numpy(), X.transpose(3, 2, 0, 1))
        stored = Y[:, 0].astype(int)
        assert set(stored) == set(range(1, 11))  # the file says 1..10
        assert y.tolist() == [0 if s == 10 else s for s in stored]  # 10 -> digit 0, the rest as they are
    assert d.class_counts("train") == SVHN_TRAIN and d.class_counts("test") == SVHN_TEST
    assert d.num_classes == 10 and d.class_names == [str(i) for i in range(10)] and d.image_shape == (3, 32, 32)
    assert d.info == {"source": "local", "root": str(root), "rho": 1.0,
                      "test_set": "as released, NOT balanced: 5 to 14 images per class"}


def test_svhn_matches_torchvision_reader(fake, monkeypatch):
    from torchvision.datasets import SVHN

    root, _, _ = fake
    with pytest.raises(RuntimeError, match="not found or corrupted"):  # torchvision checks the official MD5s
        SVHN(str(root), split="train")
    monkeypatch.setattr(SVHN, "_check_integrity", lambda self: True)
    d = load_dataset("svhn", root=root)
    for split, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
        tv = SVHN(str(root), split=split)
        assert np.array_equal(tv.data, x.numpy()) and np.array_equal(tv.labels, y.numpy())
        img, label = tv[7]  # a PIL image (H, W, RGB)
        assert np.array_equal(np.asarray(img), x[7].permute(1, 2, 0).numpy()) and label == y[7].item()


def test_svhn_lt_counts_items_and_seed(fake):
    root, _, _ = fake
    full = load_dataset("svhn", root=root)
    lt = load_dataset("svhn-lt", root=root, rho=4.0, seed=3)
    expected = long_tail_counts(min(SVHN_TRAIN), 4.0, 10)  # n_max = the smallest class (30)
    assert expected == [30, 25, 22, 18, 16, 13, 11, 10, 8, 7]  # floor(30 * 4^(-k/9))
    assert lt.class_counts("train") == expected
    # every long-tail item is a distinct training item of the full set, with its own label
    label_of = {full.x_train[i].numpy().tobytes(): full.y_train[i].item() for i in range(len(full.y_train))}
    keys = [lt.x_train[i].numpy().tobytes() for i in range(len(lt.y_train))]
    assert len(set(keys)) == len(keys) and [label_of[k] for k in keys] == lt.y_train.tolist()
    assert torch.equal(lt.x_test, full.x_test) and torch.equal(lt.y_test, full.y_test)  # test set as released
    assert lt.info == {**full.info, "rho": 4.0, "seed": 3} and lt.name == "svhn-lt"
    again, other = load_dataset("svhn-lt", root=root, rho=4.0, seed=3), load_dataset("svhn-lt", root=root, rho=4.0)
    assert torch.equal(again.x_train, lt.x_train) and not torch.equal(other.x_train, lt.x_train)
    assert load_dataset("svhn-lt", root=root, rho=1.0).class_counts("train") == [30] * 10  # balanced subset


# ---------------------------------------------------------------- CIFAR-100
@pytest.mark.parametrize("style", ["py2", "py3"])
def test_cifar100_pixels_labels_names(tmp_path, style):
    raw = write_cifar100(tmp_path, seed=1, style=style)
    d = load_dataset("cifar100", root=tmp_path)
    for split, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
        data, labels = raw[split]
        assert x.shape == (len(labels), 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
        assert y.tolist() == labels
        for i in (0, len(labels) - 1):
            for c, r, col in ((0, 0, 0), (1, 5, 17), (2, 17, 5), (2, 31, 31)):
                assert x[i, c, r, col].item() == data[i, 1024 * c + 32 * r + col]  # R plane, G, B; rows of 32
        assert np.array_equal(x.reshape(len(x), -1).numpy(), data)
    assert d.num_classes == 100 and d.class_names == raw["names"]
    assert d.class_counts("train") == [CIFAR_TRAIN] * 100 and d.class_counts("test") == [CIFAR_TEST] * 100
    assert d.info == {"source": "local", "root": str(tmp_path), "rho": 1.0,
                      "test_set": "as released, balanced: 2 images per class"}


def test_cifar100_matches_torchvision_reader(fake, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar
    from torchvision.datasets import CIFAR100

    root, _, _ = fake
    with pytest.raises(RuntimeError, match="not found or corrupted"):  # torchvision checks the official MD5s
        CIFAR100(str(root), train=True)
    monkeypatch.setattr(CIFAR100, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)  # the meta file's check
    d = load_dataset("cifar100", root=root)
    for train, x, y in ((True, d.x_train, d.y_train), (False, d.x_test, d.y_test)):
        tv = CIFAR100(str(root), train=train)
        assert np.array_equal(tv.data, x.permute(0, 2, 3, 1).numpy())  # torchvision keeps (N, H, W, RGB)
        assert tv.targets == y.tolist() and tv.classes == d.class_names


def test_cifar100_lt_counts_and_test_set(fake):
    root, _, raw = fake
    full = load_dataset("cifar100", root=root)
    lt = load_dataset("cifar100-lt", root=root, rho=4.0, seed=1)
    expected = long_tail_counts(CIFAR_TRAIN, 4.0, 100)  # floor(8 * 4^(-k/99))
    assert expected[0] == 8 and expected[-1] == 2 and lt.class_counts("train") == expected
    assert len(lt.y_train) == sum(expected)
    label_of = {full.x_train[i].numpy().tobytes(): full.y_train[i].item() for i in range(len(full.y_train))}
    assert [label_of[lt.x_train[i].numpy().tobytes()] for i in range(len(lt.y_train))] == lt.y_train.tolist()
    assert torch.equal(lt.x_test, full.x_test) and lt.class_counts("test") == [CIFAR_TEST] * 100
    assert lt.info == {"source": "local", "root": str(root), "rho": 4.0, "seed": 1,
                       "test_set": "as released, balanced: 2 images per class"}
    assert torch.equal(load_dataset("cifar100-lt", root=root, rho=1.0).x_train, full.x_train)  # rho 1 = all


def test_cifar100_pickle_may_not_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    write_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "train"
    with open(path, "wb") as f:
        pickle.dump({"data": Evil(), "fine_labels": [0]}, f, protocol=2)
    with pytest.raises(DataError, match=r"train: not a CIFAR pickle \(UnpicklingError: refusing to load "
                                        r"(posix|os|nt)\.system"):
        load_dataset("cifar100", root=tmp_path)
    assert not marker.exists()


def test_cifar100_malformed_files(tmp_path):
    write_cifar100(tmp_path)
    path = tmp_path / "cifar-100-python" / "test"
    _dump({"data": np.zeros((3, 3072), np.uint8), "fine_labels": [0, 1]}, path, "py2")
    with pytest.raises(DataError, match="3 images but 2 fine_labels"):
        read_cifar100_split(path)
    _dump({"data": np.zeros((2, 1024), np.uint8), "fine_labels": [0, 1]}, path, "py2")
    with pytest.raises(DataError, match=r"expected data as uint8 \(N, 3072\)"):
        read_cifar100_split(path)
    _dump({"data": np.zeros((2, 3072), np.uint8), "fine_labels": [0, 100]}, path, "py2")
    with pytest.raises(DataError, match=r"fine_labels must be 0..99, got 0..100"):
        read_cifar100_split(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="not a CIFAR pickle"):
        load_dataset("cifar100", root=tmp_path)


# ---------------------------------------------------------------- where the files are looked for
def test_subfolders_and_env(tmp_path, monkeypatch):
    write_svhn(tmp_path / "svhn")
    write_cifar100(tmp_path / "cifar100")
    assert load_dataset("svhn", root=tmp_path).info["root"] == str(tmp_path / "svhn")
    assert load_dataset("cifar100", root=tmp_path).info["root"] == str(tmp_path / "cifar100")
    # the inner folder itself, and a run's stored root, are accepted too
    inner = tmp_path / "cifar100" / "cifar-100-python"
    assert load_dataset("cifar100", root=inner).info["root"] == str(tmp_path / "cifar100")
    assert len(load_dataset("svhn", root=tmp_path / "svhn").y_train) == sum(SVHN_TRAIN)
    monkeypatch.setenv("CVAE_DATA_DIR", str(tmp_path))  # no root: $CVAE_DATA_DIR
    assert load_dataset("svhn-lt").info["root"] == str(tmp_path / "svhn")


def test_missing_files_one_line(tmp_path, monkeypatch):
    missing = tmp_path / "nothing-here"
    cases = {
        "svhn-lt": f"svhn-lt needs SVHN in torchvision's layout: train_32x32.mat and test_32x32.mat in {missing} or "
                   f"{missing / 'svhn'} (not found); pass --data-root DIR, or --download when online",
        "cifar100-lt": f"cifar100-lt needs CIFAR-100 in torchvision's layout: cifar-100-python/train, "
                       f"cifar-100-python/test and cifar-100-python/meta in {missing} or {missing / 'cifar100'} "
                       f"(not found); pass --data-root DIR, or --download when online",
    }
    for name, msg in cases.items():
        with pytest.raises(DataError) as e:
            load_dataset(name, root=missing)
        assert str(e.value) == msg and "\n" not in str(e.value)
    monkeypatch.setenv("CVAE_DATA_DIR", str(missing))  # the default root is named when no root is given
    with pytest.raises(DataError, match=f"in {missing} or {missing / 'svhn'} \\(not found\\)"):
        load_dataset("svhn")
    # one file of two: say which
    write_svhn(tmp_path / "half")
    (tmp_path / "half" / "test_32x32.mat").unlink()
    with pytest.raises(DataError, match=r"\(\S+half has train_32x32.mat but not test_32x32.mat\)"):
        load_dataset("svhn", root=tmp_path / "half")


def test_bad_rho_is_refused_before_loading(tmp_path):
    for name in ("svhn-lt", "cifar100-lt"):
        with pytest.raises(DataError, match="rho must be a number >= 1"):
            load_dataset(name, root=tmp_path / "absent", rho=0.5)


def test_corrupt_or_wrong_svhn_files(tmp_path):
    write_svhn(tmp_path)
    (tmp_path / "test_32x32.mat").write_bytes(b"garbage, not MATLAB")
    with pytest.raises(DataError, match="test_32x32.mat: not a readable SVHN .mat file"):
        load_dataset("svhn", root=tmp_path)
    scipy.io.savemat(str(tmp_path / "test_32x32.mat"), {"X": np.zeros((28, 28, 1, 4), np.uint8),
                                                        "y": np.ones((4, 1), np.uint8)})
    with pytest.raises(DataError, match=r"expected X as uint8 \(32, 32, 3, N\), got uint8 \(28, 28, 1, 4\)"):
        load_dataset("svhn", root=tmp_path)
    scipy.io.savemat(str(tmp_path / "test_32x32.mat"), {"X": np.zeros((32, 32, 3, 4), np.uint8),
                                                        "y": np.full((4, 1), 11, np.uint8)})
    with pytest.raises(DataError, match=r"labels must be in 0..10 \(10 = digit 0\), got 11..11"):
        load_dataset("svhn", root=tmp_path)


# ---------------------------------------------------------------- --download goes through torchvision's downloader
def test_download_uses_torchvision_downloader(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    source = tmp_path / "server"
    write_svhn(source)
    calls = []

    def fake_download_url(url, root, filename, md5):
        calls.append((url, filename, md5))
        Path(root).mkdir(parents=True, exist_ok=True)  # as torchvision's download_url does
        (Path(root) / filename).write_bytes((source / filename).read_bytes())

    monkeypatch.setattr(tv_utils, "download_url", fake_download_url)
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="not found"):  # never without download=True
        load_dataset("svhn", root=dest)
    assert calls == []
    d = load_dataset("svhn-lt", root=dest, download=True)
    assert [c[1] for c in calls] == ["train_32x32.mat", "test_32x32.mat"]
    assert calls[0][0] == "http://ufldl.stanford.edu/housenumbers/train_32x32.mat"
    assert calls[0][2] == "e26dedcc434d2e4c54c9b2d4a06d8373"  # torchvision's official MD5 is checked
    assert d.info["root"] == str(dest)
    load_dataset("svhn", root=dest, download=True)  # already there: nothing downloaded again
    assert len(calls) == 2

    def offline(*a, **k):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(DataError) as e:
        load_dataset("cifar100", root=dest, download=True)
    assert str(e.value) == (f"torchvision could not download CIFAR-100 into {dest}: OSError: [Errno -3] Temporary "
                            f"failure in name resolution")


def test_registered():
    assert {"svhn", "svhn-lt", "cifar100", "cifar100-lt"} <= set(DATASETS)


# ---------------------------------------------------------------- the command line, end to end
def _cli(args: list) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "cvae_core", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_train_evaluate_and_missing_folder(fake, tmp_path):
    root, _, _ = fake
    run, missing = tmp_path / "run", tmp_path / "absent"
    procs = {
        "train": _cli(["train", "--model", "vae", "--dataset", "svhn-lt", "--data-root", root, "--rho", "4",
                       "--seed", "3", "--steps", "2", "--batch-size", "32", "--n-per-class", "0", "--out", run,
                       "--json"]),
        "svhn-missing": _cli(["train", "--model", "vae", "--dataset", "svhn-lt", "--data-root", missing,
                              "--steps", "2", "--n-per-class", "0", "--out", tmp_path / "r2"]),
        "cifar-missing": _cli(["train", "--model", "vae", "--dataset", "cifar100-lt", "--data-root", missing,
                               "--steps", "2", "--out", tmp_path / "r3"]),
    }
    res = {k: (p, *p.communicate(timeout=240)) for k, p in procs.items()}

    p, out, err = res["train"]
    assert p.returncode == 0, err
    m = json.loads(out.strip().splitlines()[-1])
    assert m["dataset"] == "svhn-lt" and m["steps"] == 2 and m["n_test"] == sum(SVHN_TEST)
    assert f"({sum(long_tail_counts(30, 4.0, 10))} images)" in err  # training on the long-tailed subset
    ds = json.loads((run / "config.json").read_text())["dataset"]
    assert {k: ds[k] for k in ("name", "source", "root", "rho", "seed")} == {
        "name": "svhn-lt", "source": "local", "root": str(root), "rho": 4.0, "seed": 3}
    assert "per_class_recall" not in m and "classifier_fid" not in m

    for key, name, files in (("svhn-missing", "svhn-lt", "train_32x32.mat and test_32x32.mat"),
                             ("cifar-missing", "cifar100-lt", "cifar-100-python/train, cifar-100-python/test and "
                                                              "cifar-100-python/meta")):
        p, out, err = res[key]
        assert p.returncode == 2 and out == ""
        assert err == (f"error: {name} needs {'SVHN' if 'svhn' in name else 'CIFAR-100'} in torchvision's layout: "
                       f"{files} in {missing} or {missing / name.split('-')[0]} (not found); pass --data-root DIR, "
                       f"or --download when online\n")

    # evaluate finds the data again from the run's stored root, rho and seed
    p = _cli(["evaluate", run, "--is-samples", "0", "--n-per-class", "0", "--json"])
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err
    ev = json.loads(out.strip().splitlines()[-1])
    assert ev["dataset"] == "svhn-lt" and ev["n_test"] == sum(SVHN_TEST)
    assert ev["loss"] == pytest.approx(m["loss"], rel=1e-6)
