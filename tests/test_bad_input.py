"""Bad input, everywhere (issue: robustness, part 3): out-of-range hyper-parameters, unknown names, data folders in the
wrong layout and image tensors of the wrong shape or dtype get one clear line, never a traceback.

- The command line, in process through ``cvae_core.cli.main`` (every case fails before any training): exit status 2
  and exactly one line on stderr, compared in full.
- The public API (``evaluate``, ``fit``, ``encode``, ``reconstruct``, ``sample``, ``load_dataset``): one typed error
  (``DataError`` / ``ConfigError``) naming what was expected and what was given.
- Property tests (hypothesis): the loss terms of every registered image model are finite and keep their identities
  for random valid configs and inputs; random invalid options raise ConfigError and nothing else; random tensors either
  pass the image check or raise its DataError, and nothing else.
"""

from __future__ import annotations

import dataclasses
import doctest
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import fit_small
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cvae_core
import cvae_core.data.dataset
from cvae_core import TrainConfig, build_model, evaluate, fit, load_dataset
from cvae_core.cli import main
from cvae_core.data import Dataset, check_images, check_labels
from cvae_core.data.mnist import encode_idx
from cvae_core.errors import ConfigError, DataError, LabError
from cvae_core.registry import MODELS, image_model_names, make_config

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "checkpoints" / "mnist_vae"  # a shipped run (sample / evaluate cases)
# 30 examples a property keep the file under 15 s; BAD_INPUT_EXAMPLES=1000 searches harder
PROPS = settings(max_examples=int(os.environ.get("BAD_INPUT_EXAMPLES", "30")), deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])
TINY = dict(arch="mlp", hidden=8)


# ---------------------------------------------------------------- the command line
def _mnist_raw(root: Path, n: int = 20, labels=None, image_bytes: bytes | None = None) -> Path:
    """A folder in torchvision's MNIST layout with n blank images per split (or the given bytes / labels)."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    y = np.zeros(n, np.uint8) if labels is None else np.asarray(labels, np.uint8)
    for img, lbl in (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                     ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")):
        (raw / img).write_bytes(encode_idx(np.zeros((n, 28, 28), np.uint8)) if image_bytes is None else image_bytes)
        (raw / lbl).write_bytes(encode_idx(y))
    return root


def _folders(tmp: Path) -> dict[str, Path]:
    """The data folders and non-runs the cases point at (built on demand)."""
    (tmp / "empty").mkdir()
    (tmp / "notes").mkdir()
    (tmp / "notes" / "readme.txt").write_text("not a run")
    # files named like MNIST's raw files but of the wrong size: a header promising 60000 images, 100 bytes of body
    _mnist_raw(tmp / "short", image_bytes=np.array([0x803, 60000, 28, 28], ">i4").tobytes() + bytes(100))
    _mnist_raw(tmp / "junk", image_bytes=b"\x1f\x8b not an idx file")
    _mnist_raw(tmp / "labels", labels=[3] * 19 + [12])  # a label outside 0..9
    nested = tmp / "nested" / "some" / "where"  # the raw files two levels too deep
    nested.mkdir(parents=True)
    (nested / "train-images-idx3-ubyte").write_bytes(encode_idx(np.zeros((2, 28, 28), np.uint8)))
    return {"EMPTY": tmp / "empty", "NOTES": tmp / "notes", "SHORT": tmp / "short", "JUNK": tmp / "junk",
            "LABELS": tmp / "labels", "NESTED": tmp / "nested", "MISSING": tmp / "missing", "OUT": tmp / "out"}


TRAIN = ["train", "--steps", "1", "--out", "OUT"]
VAE = [*TRAIN, "--model", "vae", "--dataset", "mnist"]
# name -> (arguments, the one stderr line, exactly). Folder names in capitals are filled in by _folders.
CLI_CASES = {
    "nu-two": ([*TRAIN, "--model", "ct3vae", "--dataset", "mnist", "--option", "nu=2"],
               "error: bad option for model 'ct3vae': nu must be a number > 2 (the Student-t variance and t3VAE's "
               "constants need nu > 2; got 2.0)"),
    "nu-too-large": ([*TRAIN, "--model", "t3vae", "--dataset", "mnist", "--nu", "1e5"],
                     "error: bad option for model 't3vae': nu must be a number > 2 and at most 10000 (beyond, "
                     "t3VAE's regulariser cancels terms of size nu past float32's precision; got 100000)"),
    "nu-beyond-float32": ([*TRAIN, "--model", "t3vae", "--dataset", "mnist", "--nu", "1e300"],
                          "error: bad option for model 't3vae': nu must be a finite number within float32's range, "
                          "|x| <= 3.4e+38 (got 1e+300)"),
    "nu-nan": ([*TRAIN, "--model", "t3vae", "--dataset", "mnist", "--nu", "nan"],
               "error: argument --nu: must be a finite number, got nan (see `python -m cvae_core train --help`)"),
    "nu-1e400": ([*TRAIN, "--model", "t3vae", "--dataset", "mnist", "--nu", "1e400"],
                 "error: argument --nu: must be a finite number, got 1e400 (see `python -m cvae_core train --help`)"),
    "tau-negative-option": ([*TRAIN, "--model", "t3vae", "--dataset", "mnist", "--tau", "-1"],
                            "error: bad option for model 't3vae': tau must be >= 0 and at most 1000 (got -1.0); 0 "
                            "means the theoretical value"),
    "beta-negative": ([*VAE, "--beta", "-1"],
                      "error: bad option for model 'vae': beta must be a finite number >= 0 (got -1.0)"),
    "beta-beyond-float32": ([*VAE, "--beta", "1e300"],
                            "error: bad option for model 'vae': beta must be a finite number within float32's range, "
                            "|x| <= 3.4e+38 (got 1e+300)"),
    "rho-below-one": ([*TRAIN, "--model", "vae", "--dataset", "mnist-lt", "--rho", "0.5"],
                      "error: imbalance ratio rho must be a number >= 1 (got 0.5); rho = 1 is the balanced set"),
    "rho-on-a-balanced-set": ([*VAE, "--rho", "5"],
                              "error: --rho shapes the long-tailed sets (mnist-lt, svhn-lt, cifar100-lt); mnist is "
                              "not one"),
    "rho-on-seq": ([*TRAIN, "--model", "seq_cvae", "--rho", "5"],
                   "error: --rho shapes the long-tailed image sets; seq_cvae trains on the strategies task"),
    "steps-zero": (["train", "--model", "vae", "--dataset", "mnist", "--steps", "0", "--out", "OUT"],
                   "error: argument --steps: must be >= 1, got 0 (see `python -m cvae_core train --help`)"),
    "latent-below-witness": ([*TRAIN, "--model", "rst_vae", "--dataset", "mnist-binary", "--latent-dim", "2"],
                             "error: the certificate needs latent_dim >= K - 1 = 9 witness coordinates (got 2)"),
    "flow-latent-one": ([*TRAIN, "--model", "flow_cvae", "--dataset", "mnist", "--latent-dim", "1"],
                        "error: bad option for model 'flow_cvae': a coupling flow needs latent_dim >= 2 (got 1)"),
    "K-one": ([*TRAIN, "--model", "seq_cvae", "--option", "K=1"],
              "error: need K >= 2 and latent_dim >= 1 (got K=1, latent_dim=4)"),
    "K-fraction": ([*TRAIN, "--model", "seq_cvae", "--option", "K=1.5"], "error: K must be an integer (got 1.5)"),
    "seq-lora-rank-zero": ([*TRAIN, "--model", "seq_cvae", "--option", "lora_r=0"],
                           "error: LoRA needs lora_r >= 1 and lora_alpha > 0 (got lora_r=0, lora_alpha=16.0)"),
    "base-lr-zero": (["train-base", "--lr", "0", "--steps", "1", "--out", "OUT"],
                     "error: the base model's learning rate must be a finite number > 0 (got 0.0)"),
    "unknown-model": ([*TRAIN, "--model", "nosuch", "--dataset", "mnist"],
                      f"error: unknown model 'nosuch'; choose one of: {', '.join(MODELS)}"),
    "unknown-dataset": ([*TRAIN, "--model", "vae", "--dataset", "nosuch"],
                        "error: unknown data set 'nosuch'; choose one of: mnist, mnist-binary, mnist-lt, svhn, "
                        "svhn-lt, cifar100, cifar100-lt, morpho-mnist, morpho-mnist-hard, celeba"),
    "sample-tau-negative": (["sample", str(RUN), "--tau", "-1", "--out", "OUT/s.png"],
                            "error: --tau must be >= 0 and at most 1000 (got -1.0); it scales the prior's spread"),
    "sample-tau-huge": (["sample", str(RUN), "--tau", "1e300", "--out", "OUT/s.png"],
                        "error: --tau must be >= 0 and at most 1000 (got 1e+300); it scales the prior's spread"),
    "sample-n-huge": (["sample", str(RUN), "--n", "1000000000", "--out", "OUT/s.png"],
                      "error: argument --n: must be >= 1 and at most 10000 (one PNG grid), got 1000000000 (see "
                      "`python -m cvae_core sample --help`)"),
    "evaluate-not-a-run": (["evaluate", "NOTES"], "error: NOTES has no config.json: not a run folder"),
    "evaluate-a-file": (["evaluate", "NOTES/readme.txt"],
                        "error: NOTES/readme.txt is not a run folder (it does not exist or is not a folder)"),
    "data-root-empty": ([*VAE, "--data-root", "EMPTY"],
                        "error: EMPTY/MNIST/raw: missing train-images-idx3-ubyte (expected torchvision's layout "
                        "ROOT/MNIST/raw/train-images-idx3-ubyte[.gz])"),
    "data-root-nested": ([*VAE, "--data-root", "NESTED"],
                         "error: NESTED/MNIST/raw: missing train-images-idx3-ubyte (expected torchvision's layout "
                         "ROOT/MNIST/raw/train-images-idx3-ubyte[.gz])"),
    "data-root-missing": ([*VAE, "--data-root", "MISSING"], "error: data folder MISSING does not exist"),
    "data-root-a-file": ([*VAE, "--data-root", "NOTES/readme.txt"],
                         "error: data path NOTES/readme.txt is not a folder"),
    "data-root-short-files": ([*VAE, "--data-root", "SHORT"],
                              "error: SHORT/MNIST/raw/train-images-idx3-ubyte: header says shape (60000, 28, 28) but "
                              "holds 100 bytes"),
    "data-root-junk-files": ([*VAE, "--data-root", "JUNK"],
                             "error: JUNK/MNIST/raw/train-images-idx3-ubyte: not an MNIST idx file (magic number "
                             "0x1f8b206e)"),
    "data-root-bad-labels": ([*TRAIN, "--model", "cvae", "--dataset", "mnist", "--data-root", "LABELS"],
                             "error: LABELS/MNIST/raw: train labels must be digits 0..9, got values up to 12"),
}


def _fill(args: list[str], folders: dict[str, Path]) -> list[str]:
    out = []
    for a in args:
        for key, path in folders.items():
            if a == key or a.startswith(key + "/"):
                a = str(path) + a[len(key):]
        out.append(a)
    return out


def _main(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's errors exit from inside parse_args
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_the_command_line_says_one_line(case, tmp_path, capsys):
    folders = _folders(tmp_path)
    args, line = CLI_CASES[case]
    rc, out, err = _main(_fill(args, folders), capsys)
    assert (rc, out, err) == (2, "", _fill_line(line, folders) + "\n")
    assert not folders["OUT"].exists()  # nothing written


def _fill_line(line: str, folders: dict[str, Path]) -> str:
    for key, path in folders.items():
        line = line.replace(key, str(path))
    return line


@pytest.mark.parametrize("message,line", [
    ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
     "allocate 64000000000 bytes. Error code 12 (Cannot allocate memory)", "tried to allocate 59.6 GiB"),
    ("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.15 GiB total capacity)",
     "tried to allocate 20.00 GiB"),
])
def test_out_of_memory_is_one_line(message, line, tmp_path, capsys, monkeypatch):
    """Sizes past the machine's memory (``--option hidden=1000000000``) fail in torch's allocator; the command line
    says so in one line. (Simulated: a real allocation of that size could be granted by an overcommitting kernel.)"""
    import cvae_core.cli as cli

    def build_run(*a, **k):
        raise RuntimeError(message)

    monkeypatch.setattr(cli, "build_run", build_run)
    rc, out, err = _main([*_fill(VAE, {"OUT": tmp_path / "out"}), "--option", "hidden=1000000000"], capsys)
    assert rc == 2 and out == ""
    assert err == (f"error: out of memory ({line}): ask for less (--batch-size, --n, --latent-dim, --option "
                   "hidden=..., --option num_classes=...)\n")


def test_other_runtime_errors_still_raise(tmp_path, monkeypatch):
    """Only allocation failures are turned into a line: any other RuntimeError is a bug and keeps its traceback."""
    import cvae_core.cli as cli

    def build_run(*a, **k):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(cli, "build_run", build_run)
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        main(_fill(VAE, {"OUT": tmp_path / "out"}))


# ---------------------------------------------------------------- the public API
@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {"vae": build_model("vae", seed=0, latent_dim=4, **TINY),
            "conv": build_model("vae", seed=0, latent_dim=4, hidden=16),
            "cvae": build_model("cvae", seed=0, latent_dim=4, **TINY)}


U8 = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
WANT = "expected images of shape (N, 1, 28, 28), got"
IMAGE_CASES = {  # name -> (images, the message after "<where>: ")
    "no-channel-axis": (U8[:, 0], f"{WANT} torch.uint8 of shape (4, 28, 28) (add the channel axis: x.unsqueeze(1))"),
    "one-image": (U8[0], f"{WANT} torch.uint8 of shape (1, 28, 28) (one image: x.unsqueeze(0))"),
    "32x32-to-a-28x28-model": (torch.zeros(4, 1, 32, 32, dtype=torch.uint8),
                               f"{WANT} torch.uint8 of shape (4, 1, 32, 32)"),
    "3-channels-to-1": (torch.zeros(4, 3, 28, 28, dtype=torch.uint8), f"{WANT} torch.uint8 of shape (4, 3, 28, 28)"),
    "float64-in-0-255": (torch.full((4, 1, 28, 28), 255.0, dtype=torch.float64),
                         "expected float pixels in [0, 1], got values from 255 to 255 (uint8-range floats: divide "
                         "by 255)"),
    "int32": (U8.int(), "expected uint8 pixels in 0..255 or float pixels in [0, 1], got torch.int32"),
    "bool": (U8.bool(), "expected uint8 pixels in 0..255 or float pixels in [0, 1], got torch.bool (a mask: "
                        "x.to(torch.uint8) * 255)"),
    "nan-pixels": (torch.full((4, 1, 28, 28), math.nan),
                   "expected finite pixels in [0, 1], got 3136 NaN values among 3136"),
    "inf-pixels": (torch.zeros(4, 1, 28, 28).index_fill_(0, torch.tensor([1]), math.inf),
                   "expected finite pixels in [0, 1], got 784 infinite values among 3136"),
    "numpy": (U8.numpy(), "expected a torch tensor of images (N, 1, 28, 28), got ndarray of shape (4, 1, 28, 28) "
                          "(convert it with torch.from_numpy(x))"),
    "no-images": (U8[:0], "expected at least 1 image, got none"),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_evaluate_refuses_what_is_not_the_models_images(models, case):
    x, msg = IMAGE_CASES[case]
    with pytest.raises(DataError) as e:
        evaluate(models["vae"], x)
    assert str(e.value) == f"evaluate: {msg}"


@pytest.mark.parametrize("case", [c for c in IMAGE_CASES if c not in ("no-images",)])
def test_reconstruct_refuses_what_is_not_the_models_images(models, case):
    x, msg = IMAGE_CASES[case]
    with pytest.raises(DataError) as e:
        models["conv"].reconstruct(x)
    assert str(e.value) == f"VAE.reconstruct: {msg}"


@pytest.mark.parametrize("x,msg", [
    (torch.zeros(4, 28, 28), f"{WANT} torch.float32 of shape (4, 28, 28) (add the channel axis: x.unsqueeze(1))"),
    (torch.zeros(4, 1, 32, 32), f"{WANT} torch.float32 of shape (4, 1, 32, 32)"),
    (torch.zeros(4, 3, 28, 28), f"{WANT} torch.float32 of shape (4, 3, 28, 28)"),
    (U8, "expected float pixels in [0, 1], got torch.uint8 (uint8 images: model.prepare_batch(x) makes them floats "
         "in [0, 1])"),
    (U8.int(), "expected float pixels in [0, 1], got torch.int32"),
])
@pytest.mark.parametrize("which", ["conv", "vae"])
def test_encode_and_loss_refuse_wrong_shapes_and_dtypes(models, which, x, msg):
    """encode is the training step's hot path: shape and dtype only (no host sync), checked before any layer."""
    for call in (lambda: models[which].encode(x), lambda: models[which].loss(x)):
        with pytest.raises(DataError) as e:
            call()
        assert str(e.value) == f"VAE.encode: {msg}"


def test_uint8_and_float64_images_are_accepted_where_documented(models, mnist_small):
    """reconstruct and evaluate take uint8 images; float64 pixels in [0, 1] are cast to the model's float32."""
    m, x = models["conv"], mnist_small.x_test[:8]
    r = m.reconstruct(x)
    assert r.dtype == torch.float32 and torch.allclose(r, m.reconstruct(x.double() / 255), atol=1e-6)
    assert evaluate(m, x.double() / 255)["n_test"] == 8


@pytest.mark.parametrize("y,msg", [
    (None, "evaluate: CVAE is conditional: it needs the class condition y of the images"),
    (torch.full((4,), 12), "evaluate: y: class indices must be in 0..9, got 12..12"),
    (torch.zeros(3, dtype=torch.long), "evaluate: y: expected one class index per image (4), got 3"),
    (torch.zeros(4), "evaluate: y: expected class indices, an integer tensor (N,), got torch.float32 of shape (4,)"),
])
def test_evaluate_refuses_a_bad_condition(models, y, msg):
    with pytest.raises(LabError) as e:
        evaluate(models["cvae"], U8, y)
    assert str(e.value) == msg


def _toy(x, y=None, name="toy"):
    y = torch.zeros(len(x), dtype=torch.long) if y is None else y
    return Dataset(name, x, y, x, y, 10, [str(i) for i in range(10)])


@pytest.mark.parametrize("make,msg", [
    (lambda: _toy(torch.zeros(8, 1, 32, 32, dtype=torch.uint8)),
     "toy has images of shape (1, 32, 32) (C, H, W) but the model was built for (1, 28, 28); build it with "
     "image_shape=[1, 32, 32] (build_run does)"),
    (lambda: _toy(torch.zeros(8, 28, 28, dtype=torch.uint8)),
     "toy: train images must be a uint8 tensor (N, C, H, W), got torch.uint8 of shape (8, 28, 28)"),
    (lambda: _toy(torch.zeros(8, 1, 28, 28, dtype=torch.float64)),
     "toy: train images must be a uint8 tensor (N, C, H, W), got torch.float64 of shape (8, 1, 28, 28)"),
    (lambda: _toy(U8, torch.zeros(4)),
     "toy: train labels must be an integer tensor (N,) with N = 4 (one class index per image), got torch.float32 of "
     "shape (4,)"),
    (lambda: _toy(U8[:0]), "toy has no training images"),
    (lambda: _toy(U8, torch.full((4,), 12)),
     "toy: training labels for a model of 10 classes: class indices must be in 0..9, got 12..12"),
])
def test_fit_refuses_data_the_model_cannot_train_on(models, make, msg):
    with pytest.raises(DataError) as e:
        model = models["cvae"] if "labels for" in msg else models["conv"]
        fit(model, make(), TrainConfig(steps=1, device="cpu"))
    assert str(e.value) == msg


def test_fit_refuses_what_is_not_a_dataset_or_a_train_config(models, mnist_small):
    with pytest.raises(ConfigError) as e:
        fit(models["vae"], U8, TrainConfig(steps=1, device="cpu"))
    assert str(e.value) == "the data must be a cvae_core.data.Dataset (from load_dataset), got Tensor"
    with pytest.raises(ConfigError) as e:
        fit(models["vae"], mnist_small, {"steps": 1})
    assert str(e.value) == "fit needs a TrainConfig, got dict"


@pytest.mark.parametrize("kw,msg", [
    (dict(tau=-1.0), "tau must be >= 0 and at most 1000 (got -1.0); it scales the prior's spread"),
    (dict(tau=math.nan), "tau must be >= 0 and at most 1000 (got nan); it scales the prior's spread"),
    (dict(tau=1e300), "tau must be >= 0 and at most 1000 (got 1e+300); it scales the prior's spread"),
])
def test_sample_refuses_a_bad_tau(models, kw, msg):
    with pytest.raises(ConfigError) as e:
        models["vae"].sample(2, **kw)
    assert str(e.value) == msg


def test_sample_refuses_a_class_outside_the_model(models):
    with pytest.raises(DataError) as e:
        models["cvae"].sample(2, y=torch.tensor([1, 12]))
    assert str(e.value) == "CVAE.sample: y: class indices must be in 0..9, got 1..12"


@pytest.mark.parametrize("kw,msg", [
    (dict(name="nosuch"), "unknown data set 'nosuch'; choose one of: mnist, mnist-binary, mnist-lt, svhn, svhn-lt, "
                          "cifar100, cifar100-lt, morpho-mnist, morpho-mnist-hard, celeba"),
    (dict(name="mnist", rho=0.5), "imbalance ratio rho must be a number >= 1 (got 0.5); rho = 1 is the balanced set"),
    (dict(name="mnist-lt", rho=math.nan),
     "imbalance ratio rho must be a number >= 1 (got nan); rho = 1 is the balanced set"),
    (dict(name="mnist-lt", seed=-1), "seed must be an integer in 0 .. 2^32-1 (got -1)"),
    (dict(name="mnist", root=3), "root must be a folder path (a str or Path), got int 3"),
    (dict(name="celeba", limit=0), "limit must be a positive integer (images per split) or None (got 0)"),
])
def test_load_dataset_refuses_bad_arguments_before_reading(kw, msg):
    with pytest.raises(DataError) as e:
        load_dataset(kw.pop("name"), **kw)
    assert str(e.value) == msg


@pytest.mark.parametrize("kw,msg", [
    (dict(steps=1.5), "steps must be an integer >= 1, or None to count epochs (got 1.5)"),
    (dict(steps=True), "steps must be an integer >= 1, or None to count epochs (got True)"),
    (dict(batch_size="a"), "batch size must be an integer >= 1 (got 'a')"),
    (dict(lr="1e-3"), "learning rate must be a finite number > 0 (got '1e-3')"),
    (dict(seed=-1), "seed must be an integer in 0 .. 2^32-1 (got -1)"),
    (dict(seed=2**32), "seed must be an integer in 0 .. 2^32-1 (got 4294967296)"),
    (dict(log_every=2.5), "log_every must be an integer >= 1 (got 2.5)"),
])
def test_train_config_refuses_values_of_the_wrong_kind(kw, msg):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**kw)
    assert str(e.value) == msg


def test_the_check_images_example_runs():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = finder.find(cvae_core.data.dataset.check_images, "check_images", globs={})
    for t in tests:
        runner.run(t)
    assert sum(len(t.examples) for t in tests) >= 3 and runner.failures == 0


# ---------------------------------------------------------------- properties: the losses
NAMES = image_model_names()


@st.composite
def valid_setups(draw):
    """A registered image model with a random valid config (small mlp, random image shape, beta >= 0, nu in (2, 1e4],
    latent sizes the family accepts) and a batch of random images in [0, 1] with their condition."""
    name = draw(st.sampled_from(NAMES))
    fields = {f.name for f in dataclasses.fields(MODELS[name].config_cls)}
    shape = (draw(st.integers(1, 3)), draw(st.integers(2, 8)), draw(st.integers(2, 8)))
    k = draw(st.integers(2, 5))
    cfg = dict(TINY, image_shape=shape, num_classes=k, beta=draw(st.floats(0, 100)))
    small = fit_small(name)
    if "teacher_k" in fields:
        small["pca_dim"] = draw(st.integers(1, 8))
    low = 2 if name == "flow_cvae" else small.get("teacher_k", 2) - 1
    cfg["latent_dim"] = draw(st.integers(low, low + 4))
    if "nu" in fields:
        cfg["nu"] = draw(st.floats(2, 1e4, exclude_min=True))
    if "sigma" in fields:
        cfg["sigma"] = draw(st.floats(0.05, 5))
    if "likelihood" in fields:
        cfg["likelihood"] = draw(st.sampled_from(["gaussian", "bernoulli"]))
    if "class_balanced" in fields:
        cfg["class_balanced"] = draw(st.booleans())
    config = make_config(name, **cfg, **small)
    b = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, *shape, generator=g)
    if draw(st.booleans()):  # binary images too: the edges of [0, 1]
        x = (x > 0.5).float()
    y = torch.randint(0, k, (b,), generator=g)
    return name, config, x, y, seed


@PROPS
@given(setup=valid_setups())
def test_loss_terms_are_finite_and_keep_their_identities(setup):
    name, config, x, y, seed = setup
    model = MODELS[name].model_cls(config)
    torch.manual_seed(seed)
    t = model.item_terms(x, y if model.conditional else None)
    assert {"loss", "rec", "mse", model.rate_key, model.distortion_key} <= set(t)
    for k, v in t.items():
        assert v.shape == (len(x),) and torch.isfinite(v).all(), (name, k, v)
    scale = 1e-5 * (1 + t["rec"].abs() + config.beta * t[model.rate_key].abs() + t.get("penalty", 0 * t["rec"]).abs())
    penalty = t.get("penalty", torch.zeros_like(t["rec"]))
    assert ((t["loss"] - (t["rec"] + config.beta * t[model.rate_key] + penalty)).abs() <= scale).all()
    if "neg_elbo" in t:  # the families with an ELBO: D + R at beta = 1
        assert ((t["neg_elbo"] - (t["rec"] + t["kl"])).abs() <= scale).all()
    if "lts" in t:
        assert torch.allclose(t["penalty"], config.lambda_ts * t["lts"]) and (t["lts"] >= -1e-6).all()
    assert ((t["mse"] >= 0) & (t["mse"] <= 1)).all()
    if model.closed_form_kl and model.rate_key == "kl":  # a closed-form KL is >= 0; a Monte-Carlo one need not be
        assert (t["kl"] >= -1e-5 * (1 + t["kl"].abs())).all()
    batch = model.loss(x, y if model.conditional else None)
    assert all(torch.isfinite(v) for v in batch.values())


# every field of every registered config, with values of every kind: the options a user could type
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                      st.text(max_size=4), st.lists(st.integers(-3, 70), max_size=4),
                      st.sampled_from([1e300, -1e300, 1e-300, 2.0, 0.0, -0.0, "class", "attributes", "mlp"]))


@st.composite
def any_option(draw):
    name = draw(st.sampled_from(list(MODELS)))
    field = draw(st.sampled_from([f.name for f in dataclasses.fields(MODELS[name].config_cls)]))
    return name, {field: draw(ANY_VALUE)}


@PROPS
@given(option=any_option())
def test_make_config_raises_config_error_and_nothing_else(option):
    name, kw = option
    try:
        config = make_config(name, **kw)
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    for f in dataclasses.fields(config):  # accepted: every typed field holds a value of its kind
        v = getattr(config, f.name)
        if isinstance(f.default, float):
            assert isinstance(v, float) and math.isfinite(v)
        elif isinstance(f.default, bool):
            assert isinstance(v, bool)
        elif isinstance(f.default, int):
            assert type(v) is int


INVALID = {  # field -> values every model that has the field refuses
    "beta": st.one_of(st.floats(max_value=-1e-300), st.just(math.nan), st.just(math.inf)),
    "nu": st.one_of(st.floats(max_value=2), st.floats(min_value=1e4, exclude_min=True)),
    "tau": st.one_of(st.floats(max_value=-1e-300), st.floats(min_value=1e3, exclude_min=True)),
    "latent_dim": st.integers(max_value=0),
    "hidden": st.integers(max_value=0),
    "K": st.integers(max_value=1),
    "sigma": st.floats(max_value=0),
    "image_shape": st.lists(st.integers(-3, 0), min_size=3, max_size=3),
}


@st.composite
def invalid_option(draw):
    field = draw(st.sampled_from(list(INVALID)))
    names = [n for n, s in MODELS.items() if field in {f.name for f in dataclasses.fields(s.config_cls)}]
    return draw(st.sampled_from(names)), field, draw(INVALID[field])


@PROPS
@given(option=invalid_option())
def test_invalid_values_raise_config_error(option):
    name, field, value = option
    with pytest.raises(ConfigError) as e:
        make_config(name, **{field: value})
    assert field in str(e.value) and "\n" not in str(e.value), str(e.value)


@PROPS
@given(kw=st.dictionaries(st.sampled_from(["epochs", "steps", "batch_size", "lr", "seed", "device", "log_every",
                                           "grad_clip"]), ANY_VALUE, max_size=3))
def test_train_config_raises_config_error_and_nothing_else(kw):
    try:
        TrainConfig(**kw)
    except ConfigError as e:
        assert "\n" not in str(e)


# ---------------------------------------------------------------- properties: data validation
DTYPES = [torch.uint8, torch.int8, torch.int32, torch.int64, torch.bool, torch.float16, torch.bfloat16, torch.float32,
          torch.float64, torch.complex64]


ANY_SHAPE = st.lists(st.integers(0, 5), max_size=5)
IMAGE_LIKE = st.one_of(ANY_SHAPE, st.tuples(st.integers(0, 3), st.integers(1, 2), st.integers(3, 4), st.just(4)))


@st.composite
def any_tensor(draw, shapes=ANY_SHAPE):
    """A tensor of any shape (from `shapes`) and dtype, with values in [0, 1], in [-300, 300], or in [0, 1] but for one
    NaN, infinite or just-outside value."""
    shape = tuple(draw(shapes))
    dtype = draw(st.sampled_from(DTYPES))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(["unit", "wide", "special"]))
    v = torch.rand(shape, generator=g, dtype=torch.float64)
    if kind == "wide":
        v = v * 600 - 300
    elif kind == "special" and v.numel():
        v.view(-1)[0] = draw(st.sampled_from([math.nan, math.inf, -math.inf, -1e-9, 1 + 1e-6]))
    if dtype == torch.uint8:
        return v.clamp(0, 255).to(dtype) if kind != "special" else (v.nan_to_num() * 255).clamp(0, 255).to(dtype)
    if not (dtype.is_floating_point or dtype.is_complex):
        return v.nan_to_num().clamp(-100, 100).to(dtype)
    return v.to(dtype)


@PROPS
@given(x=any_tensor(), shape=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4))),
       floats_only=st.booleans(), values=st.booleans())
def test_check_images_passes_or_says_one_line(x, shape, floats_only, values):
    try:
        check_images(x, shape, what="x", floats_only=floats_only, values=values)
    except DataError as e:
        assert str(e).startswith("x: ") and "\n" not in str(e)
        return
    assert x.dim() == 4 and (shape is None or tuple(x.shape[1:]) == shape)
    assert x.is_floating_point() or (x.dtype == torch.uint8 and not floats_only)
    if values and x.is_floating_point():
        assert bool(((x >= 0) & (x <= 1)).all())


@PROPS
@given(y=any_tensor(), k=st.integers(1, 12), n=st.one_of(st.none(), st.integers(0, 5)))
def test_check_labels_passes_or_says_one_line(y, k, n):
    try:
        check_labels(y, k, n, what="y")
    except DataError as e:
        assert str(e).startswith("y: ") and "\n" not in str(e)
        return
    assert y.dim() == 1 and not y.is_floating_point() and (n is None or len(y) == n)
    assert bool(((y >= 0) & (y < k)).all())


@pytest.fixture(scope="module")
def tiny_model():
    return build_model("vae", seed=0, latent_dim=2, image_shape=(1, 3, 4), **TINY).eval()


@PROPS
@given(x=any_tensor(IMAGE_LIKE))
def test_the_public_api_takes_any_tensor_with_one_line_or_a_result(tiny_model, x):
    """evaluate and reconstruct on any tensor: the numbers (finite), or the image check's DataError; never a torch
    error from inside a layer."""
    for least, call in ((1, lambda: evaluate(tiny_model, x)["loss"]), (0, lambda: tiny_model.reconstruct(x))):
        try:
            out = call()
        except DataError as e:
            assert "\n" not in str(e)
            continue
        assert x.shape[1:] == (1, 3, 4) and len(x) >= least
        assert bool(torch.isfinite(torch.as_tensor(out)).all())


@PROPS
@given(x=any_tensor(), y=any_tensor())
def test_dataset_takes_any_tensors_with_one_line_or_a_dataset(x, y):
    try:
        d = Dataset("toy", x, y, x, y, 10, [])
    except DataError as e:
        assert str(e).startswith("toy: ") and "\n" not in str(e)
        return
    assert d.x_train.dtype == torch.uint8 and d.x_train.dim() == 4 and len(d.y_train) == len(d.x_train)
