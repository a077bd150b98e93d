"""A shipped run shows its recorded numbers on every machine (issue 16). What its numbers depend on is either shipped
with it or computed in a way that is the same on every CPU, and these tests would fail on one machine if that broke:

- the certificate's witness directions are a closed form (an SVD of the centred simplex is not unique: two LAPACK
  builds gave two rotations, and the shipped RST-VAE runs failed their certificate on an Intel Xeon);
- RST-VAE carries its teacher and witness as float64 buffers; the teachers of the data sets behind the other shipped
  runs are shipped in checkpoints/teachers, identified by a hash each run records;
- evaluating a shipped run fits nothing and reads no machine-local cache: with an empty cache, and with a cache that
  holds a different teacher under the data set's key, it gives the recorded numbers;
- the derived data sets (binarised MNIST, MNIST-LT subsets, morpho-mnist renders) hash to the recorded values.

Tolerances (stated where used) come from float behaviour across CPUs: the teacher is float64 (BLAS summation order
moves T(x) by ~1e-12 relative); encoder means are float32 (a relative ~1e-6 per mean between kernels), and LTS reads
them through a softmax with gain 5, so GT and LTS may move by ~1e-5 nats; 1e-4 nats leaves a factor of 10.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cvae_core.eval import certificate as C
from cvae_core import witness as W
from cvae_core.runs.folder import load_run, save_run
from cvae_core.data import load_dataset
from cvae_core.errors import CheckpointError
from cvae_core.integrity import record_hashes
from cvae_core.eval.likelihood import encoder_means

REPO = Path(__file__).resolve().parents[2]
CERT_RUNS = ("mnistbin_vae_beta1", "mnistbin_vae_beta8", "mnistbin_rst_vae_beta1", "mnistbin_rst_vae_beta8")
GT_ABS = 1e-4  # nats: float32 encoder means through the gain-5 softmax (module docstring)
IT_REL = 1e-9  # IT reads only the float64 teacher and the data
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def binary():
    return load_dataset("mnist-binary")


def _independent_simplex(k: int) -> np.ndarray:
    """The Helmert-basis simplex written out with numpy, element by element."""
    v = np.zeros((k, k - 1))
    for j in range(1, k):
        for i in range(k):
            h = 1.0 if i < j else (-j if i == j else 0.0)
            v[i, j - 1] = math.sqrt(k / (k - 1)) * h / math.sqrt(j * (j + 1))
    return v


@pytest.mark.parametrize("k", [2, 3, 10, 17])
def test_the_witness_is_a_closed_form_bit_for_bit(k):
    V = W.simplex_vectors(k)
    assert np.array_equal(V.numpy(), _independent_simplex(k))  # exact: only correctly rounded scalar operations
    gram = V @ V.T
    ref = torch.full((k, k), -1.0 / (k - 1), dtype=torch.float64).fill_diagonal_(1.0)
    torch.testing.assert_close(gram, ref, rtol=0, atol=1e-15)


def test_the_shipped_witness_is_pinned():
    """The certificates recorded by the shipped runs were computed with these exact bytes of V (K = 10); a change of
    the construction would move them silently, so it must show here (and the runs be re-made)."""
    digest = hashlib.sha256(W.simplex_vectors(10).numpy().astype("<f8").tobytes()).hexdigest()[:16]
    assert digest == "0ab36cfed9a9471a", digest


def test_teacher_files_round_trip_and_refuse_tampering(mnist, tmp_path):
    data = mnist.subset(800, 50)
    cfg = W.CertificateConfig(pca_dim=8, K=4)
    teacher = W.fit_teacher(data.x_train, cfg)
    path = W.save_teacher(tmp_path / "t.safetensors", teacher, data.name, len(data.x_train))
    again = W.read_teacher(path)
    assert again.identity == teacher.identity and again.config == cfg
    assert torch.equal(again.probs(data.x_test), teacher.probs(data.x_test))
    meta = W.teacher_metadata(path)
    assert meta["dataset"] == "mnist" and meta["n_train"] == "800" and meta["identity"] == teacher.identity
    other = W.fit_teacher(data.x_train, W.CertificateConfig(pca_dim=8, K=4, seed=1))
    assert other.identity != teacher.identity
    state = load_file(str(path))
    state["means"][0, 0] += 1e-9  # a change far below what a plot shows is still another teacher
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="hash to"):
        W.read_teacher(tmp_path / "bad.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a teacher")
    with pytest.raises(CheckpointError, match="not a teacher file"):
        W.read_teacher(tmp_path / "junk.safetensors")


def test_the_shipped_teachers_are_what_the_data_sets_use(mnist, binary):
    for data in (mnist, binary):
        assert W.teacher_source(data) == "shipped"
        path = W.shipped_teacher_path(data)
        assert path == REPO / "checkpoints" / "teachers" / data.name / W.TEACHER_FILE
        assert W.load_or_fit_teacher(data).identity == W.teacher_metadata(path)["identity"]
    assert W.teacher_source(mnist.subset(500, 10)) != "shipped"  # another training set: not this teacher


def _wrong_cache(data, root: Path) -> str:
    """Put a different teacher (another mixture seed, fitted on few images) where the cache of `data`'s teacher
    would be, labelled as that data set's: a machine-local cache that disagrees with the shipped teacher."""
    cfg = W.CertificateConfig()
    wrong = W.fit_teacher(data.x_train[:3000], W.CertificateConfig(seed=7))
    wrong.config = cfg  # under the default settings' key and metadata, as a stale or foreign fit would be
    W.save_teacher(W._cache_path(data, cfg, root), wrong, data.name, len(data.x_train))
    return wrong.identity


def _forbid_fitting(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("evaluating a shipped run fitted a teacher")

    monkeypatch.setattr(W, "fit_teacher", refuse)


@pytest.mark.parametrize("cache", ["empty", "different"])
def test_shipped_certificates_ignore_the_local_cache(cache, binary, tmp_path, monkeypatch):
    """The recorded IT / LTS / GT of every shipped run with a certificate, on all 10k test images, with no cache at
    all or a wrong one, and nothing fitted."""
    wrong = _wrong_cache(binary, tmp_path) if cache == "different" else None
    _forbid_fitting(monkeypatch)
    monkeypatch.setenv("CVAE_DATA_DIR", str(tmp_path))  # the data is loaded; only the teacher cache is looked up here
    for name in CERT_RUNS:
        model, info = load_run(REPO / "checkpoints" / name)
        m = info["metrics"]
        got = C.certificate_metrics(model, binary, binary.x_test, encoder_means(model, binary.x_test),
                                    recorded=m["teacher"])
        assert got["teacher"] == m["teacher"] != wrong and "teacher_warning" not in got
        assert got["IT"] == pytest.approx(m["IT"], rel=IT_REL)
        assert got["LTS"] == pytest.approx(m["LTS"], abs=GT_ABS) and got["GT"] == pytest.approx(m["GT"], abs=GT_ABS)
        p = C.inspect(model, binary, n=1000, recorded=m["teacher"])  # what the page shows
        assert p["teacher"] == m["teacher"] and p["teacher_warning"] == ""
    gts = {n: json.loads((REPO / "checkpoints" / n / "metrics.json").read_text())["GT"] for n in CERT_RUNS}
    assert gts["mnistbin_vae_beta8"] < 0 < gts["mnistbin_rst_vae_beta8"]  # the page's headline pair


def test_evaluate_cli_gives_the_recorded_certificate_with_a_foreign_cache(binary, tmp_path, monkeypatch, capsys):
    """`python -m cvae_core evaluate checkpoints/mnistbin_rst_vae_beta8 --json` (likelihood and certificate; the
    sample metrics are skipped to keep the test short) with a data root whose teacher cache is another teacher."""
    from cvae_core.cli import main
    from cvae_core.data import default_data_root

    (tmp_path / "MNIST").symlink_to(default_data_root() / "MNIST")
    _wrong_cache(binary, tmp_path)
    _forbid_fitting(monkeypatch)
    for name in ("mnistbin_rst_vae_beta8", "mnistbin_vae_beta8"):
        run = REPO / "checkpoints" / name
        assert main(["evaluate", str(run), "--json", "--is-samples", "0", "--n-per-class", "0",
                     "--data-root", str(tmp_path), "--device", "cpu"]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        want = json.loads((run / "metrics.json").read_text())
        assert out["teacher"] == want["teacher"]
        assert out["GT"] == pytest.approx(want["GT"], abs=GT_ABS) and out["IT"] == pytest.approx(want["IT"], rel=IT_REL)


def test_an_unknown_recorded_teacher_is_said_not_hidden(binary, tmp_path, monkeypatch):
    model, info = load_run(REPO / "checkpoints" / "mnistbin_vae_beta8")
    x = binary.x_test[:200]
    got = C.certificate_metrics(model, binary, x, encoder_means(model, x), root=tmp_path, recorded="0123456789abcdef")
    assert got["teacher"] == info["metrics"]["teacher"]  # the data set's shipped one
    assert "0123456789abcdef, which is neither shipped nor cached here" in got["teacher_warning"]


def test_rst_vae_saves_teacher_and_witness_in_float64_even_in_float16_runs(binary, tmp_path):
    from cvae_core.registry import build_model

    model = build_model("rst_vae", seed=0, arch="mlp", hidden=32, latent_dim=10)
    model.setup(binary)
    shipped = W.load_or_fit_teacher(binary)
    assert model.own_teacher().identity == shipped.identity  # the buffers hold the shipped teacher exactly
    save_run(tmp_path / "r", model, weights_dtype="float16")
    state = load_file(str(tmp_path / "r" / "model.safetensors"))
    assert state["prec_chol"].dtype == torch.float64 and state["witness"].dtype == torch.float64
    assert state["encoder.body.1.weight"].dtype == torch.float16
    again, _ = load_run(tmp_path / "r")
    assert again.own_teacher().identity == shipped.identity and torch.equal(again.witness, W.simplex_vectors(10))


def test_a_run_saved_before_the_witness_buffer_loads_with_its_legacy_witness(binary, tmp_path):
    """Format-1 RST-VAE runs have no ``witness`` tensor: they were trained against the SVD basis of this machine's
    LAPACK, which loading fills in (the only basis that can reproduce them, on a machine like theirs)."""
    from cvae_core.registry import build_model

    model = build_model("rst_vae", seed=0, arch="mlp", hidden=32, latent_dim=10)
    save_run(tmp_path / "old", model)
    path = tmp_path / "old" / "model.safetensors"
    state = load_file(str(path))
    del state["witness"]
    save_file(state, str(path))
    record_hashes(path.parent, "config.json")  # as an old run's folder: its record (if any) matches its weights
    old, _ = load_run(tmp_path / "old")
    assert torch.equal(old.witness, W.legacy_simplex_vectors(10))
    assert torch.equal(W.witness_of(old), W.legacy_simplex_vectors(10))


# sha256 (first 16 hex) of the derived data sets. MNIST-LT and morpho-mnist hashed the same on an AMD EPYC (torch
# 2.14.1) and an Intel Xeon (torch 2.11.0); the binarisation is an integer comparison and numpy's PCG64 streams are
# specified bit for bit. A CPU on which the morpho render (float interpolation, skeletons) came out otherwise fails
# here instead of shifting the morpho runs' recorded numbers.
DATA_HASHES = {
    "mnist-binary": "e3c5ed07901def5d",
    "mnist-lt rho=100": "b40577d6a79fd73a",
    "morpho grey_train": "7fa470074203ee20",
    "morpho grey_test": "9a950408550bf22a",
    "morpho attrs_train": "f1beae958bbf3504",
}


def _h(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def test_the_derived_data_sets_are_the_recorded_bytes(mnist, binary):
    from cvae_core.data.longtail import long_tail_indices
    from cvae_core.data.morpho import cache_path, load_morpho

    load_morpho()  # rendered by `make data`; rendered now if missing
    with np.load(cache_path()) as z:
        got = {f"morpho {k}": _h(z[k]) for k in ("grey_train", "grey_test", "attrs_train")}
    got["mnist-binary"] = _h(binary.x_train.numpy())
    got["mnist-lt rho=100"] = _h(long_tail_indices(mnist.y_train.numpy(), 100.0, 0))
    assert got == DATA_HASHES
