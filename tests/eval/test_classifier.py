"""The in-project MNIST classifier: the shipped weights reach >= 99% test accuracy, load from safetensors only,
are cached, and fail with one clear line when missing or corrupt; training is seeded; the shift augmentation is
a pure translation."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from cvae_core.errors import CheckpointError
from cvae_core.eval import classifier as C

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shipped():
    return C.load_classifier()


def test_shipped_classifier_accuracy_and_record(shipped, mnist, repo_root):
    folder = repo_root / "checkpoints" / C.FOLDER
    assert not (folder / "config.json").exists()  # the app's run lists must ignore this folder
    assert (folder / C.WEIGHTS).stat().st_size < 1_000_000
    info = json.loads((folder / C.INFO).read_text())
    assert info["command"].startswith("python scripts/train_classifier.py")
    assert {"epochs", "train_seconds", "test_accuracy", "test_per_class_accuracy", "seed"} <= set(info)
    acc, per_class = C.accuracy(shipped, mnist.x_test, mnist.y_test)
    assert acc >= 0.99
    assert acc == pytest.approx(info["test_accuracy"], abs=1e-6)  # the recorded number is the stored weights'
    assert per_class == pytest.approx(info["test_per_class_accuracy"], abs=1e-6)
    assert min(per_class) >= 0.97


def test_loaded_classifier_is_cached_frozen_and_in_eval_mode(shipped):
    assert C.load_classifier() is shipped
    assert not shipped.training
    assert all(not p.requires_grad for p in shipped.parameters())
    assert all(p.dtype == torch.float32 for p in shipped.parameters())


def test_logits_and_features_shapes_and_uint8_input(shipped, mnist_small):
    x8 = mnist_small.x_test[:16]
    with torch.no_grad():
        f, lg = shipped.features(x8), shipped.logits(x8)
        assert f.shape == (16, shipped.config.feature_dim) == (16, 128)
        assert lg.shape == (16, 10)
        torch.testing.assert_close(shipped.logits(x8.float() / 255), lg)  # uint8 and [0, 1] floats agree
        torch.testing.assert_close(shipped.out(f), lg)  # logits = last layer of the features
    feats, pred = shipped.features_and_predictions(x8, batch_size=5)  # batching changes nothing
    torch.testing.assert_close(feats, f)
    assert torch.equal(pred, lg.argmax(1))


def test_env_var_moves_the_checkpoints_root(monkeypatch, tmp_path):
    """A checkpoints root with its own classifier-mnist folder is used; one without it falls back to the shipped
    classifier (the app's tests and users who keep runs elsewhere still get sample metrics); a missing file in the
    chosen folder is one line saying how to rebuild it."""
    monkeypatch.setenv("CVAE_CHECKPOINTS_DIR", str(tmp_path))
    assert C.default_classifier_dir() == C.REPO / "checkpoints" / "classifier-mnist"
    (tmp_path / "classifier-mnist").mkdir()
    assert C.default_classifier_dir() == tmp_path / "classifier-mnist"
    with pytest.raises(CheckpointError, match="python scripts/train_classifier.py") as e:
        C.load_classifier()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("half", [False, True])
def test_save_load_round_trip(tmp_path, mnist_small, half):
    torch.manual_seed(0)
    model = C.MnistClassifier().eval()
    C.save_classifier(tmp_path / "clf", model, {"note": "untrained"}, half=half)
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == [C.INFO, C.WEIGHTS]
    loaded = C.load_classifier(tmp_path / "clf")
    with torch.no_grad():
        a, b = model.logits(mnist_small.x_test[:32]), loaded.logits(mnist_small.x_test[:32])
    if half:  # float16 storage: relative error ~1e-3
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)
    else:
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    info = json.loads((tmp_path / "clf" / C.INFO).read_text())
    assert info["note"] == "untrained" and info["storage_dtype"] == ("float16" if half else "float32")


def test_save_refuses_a_folder_that_is_not_a_classifier(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not a classifier folder"):
        C.save_classifier(tmp_path, C.MnistClassifier(), {})
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("damage", ["weights", "json", "mismatch", "missing_json"])
def test_corrupt_or_missing_files_give_one_line_errors(tmp_path, damage):
    folder = C.save_classifier(tmp_path / "clf", C.MnistClassifier(), {})
    if damage == "weights":
        (folder / C.WEIGHTS).write_bytes(b"not safetensors at all")
    elif damage == "json":
        (folder / C.INFO).write_text("{ broken")
    elif damage == "mismatch":
        info = json.loads((folder / C.INFO).read_text())
        info["config"]["feature_dim"] = 64
        (folder / C.INFO).write_text(json.dumps(info))
    else:
        (folder / C.INFO).unlink()
    with pytest.raises(CheckpointError, match="python scripts/train_classifier.py") as e:
        C.load_classifier(folder)
    assert "\n" not in str(e.value)


def test_training_is_seeded_and_learns(mnist):
    x, y = mnist.x_train[:512], mnist.y_train[:512]
    kw = dict(epochs=2, batch_size=32, lr=1e-2, seed=3)
    a = C.train_classifier(x, y, **kw)
    b = C.train_classifier(x, y, **kw)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    acc, _ = C.accuracy(a, mnist.x_test[:500], mnist.y_test[:500])
    assert acc > 0.5  # 32 steps on 512 images: far above chance (0.1); 0.80 measured


def test_random_shift_is_a_translation_with_zero_fill():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 8, 8)
    assert torch.equal(C.random_shift(x, 0, g), x)
    out = C.random_shift(x, 2, g)
    for xi, oi in zip(x, out, strict=True):  # brute force: some offset in [-2, 2]^2 reproduces the output
        padded = torch.nn.functional.pad(xi, (2, 2, 2, 2))
        hits = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(padded[:, dy:dy + 8, dx:dx + 8], oi)]
        assert len(hits) == 1


def test_training_script_records_its_run(tmp_path, monkeypatch, mnist_small, repo_root):
    spec = importlib.util.spec_from_file_location("train_classifier_script", repo_root / "scripts/train_classifier.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "load_dataset", lambda name: mnist_small)  # 512 train / 256 test images
    args = ["--epochs", "1", "--batch-size", "64", "--n-train", "300", "--threads", "1", "--out", str(tmp_path / "clf")]
    assert script.main(args) == 0
    info = json.loads((tmp_path / "clf" / C.INFO).read_text())
    assert info["command"] == "python scripts/train_classifier.py " + " ".join(args)
    assert info["n_train"] == 300 and info["epochs"] == 1 and info["storage_dtype"] == "float16"
    assert info["train_seconds"] > 0 and len(info["test_per_class_accuracy"]) == 10
    acc, _ = C.accuracy(C.load_classifier(tmp_path / "clf"), mnist_small.x_test, mnist_small.y_test)
    assert acc == info["test_accuracy"]
