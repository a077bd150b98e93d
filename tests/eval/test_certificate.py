"""The simplex-witness certificate (SPEC section 5) against independent computations: the simplex geometry, the
analytic code (LTS = 0 and the stated energy), constant means (LTS >= IT, equality at the constant that maps to Tbar),
IT = H(Tbar) - E H(T), the escape gradient at a collapsed encoder, and the fitted PCA-GMM teacher (seeded, cached)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cvae_core import witness as W
from cvae_core.errors import ConfigError
from cvae_core.eval import certificate as C


def _teacher_probs(n=200, K=10, eps=0.05, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    r = torch.softmax(3 * torch.randn(n, K, generator=g, dtype=torch.float64), dim=1)
    return (1 - eps) * r + eps / K


@pytest.mark.parametrize("K", [2, 3, 10, 17])
def test_simplex_geometry(K):
    V = W.simplex_vectors(K)
    assert V.shape == (K, K - 1)
    gram = V @ V.T
    ref = torch.full((K, K), -1.0 / (K - 1), dtype=torch.float64)
    ref.fill_diagonal_(1.0)
    torch.testing.assert_close(gram, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(V.sum(0), torch.zeros(K - 1, dtype=torch.float64), rtol=0, atol=1e-12)


def test_analytic_code_reproduces_the_teacher_at_the_stated_energy():
    t = _teacher_probs()
    mu = W.analytic_code(t, m=16, gain=5.0)
    assert torch.equal(mu[:, 9:], torch.zeros(200, 7, dtype=torch.float64))  # only the witness coordinates
    s = W.witness_log_probs(mu, 10, 5.0).exp()
    torch.testing.assert_close(s, t, rtol=1e-10, atol=1e-12)
    assert W.certificate(t, mu, t.mean(0), 5.0)["LTS"] == pytest.approx(0.0, abs=1e-12)
    energy = 0.5 * mu.pow(2).sum(1).mean().item()  # measured on the code itself
    assert W.energy_bound(t, 5.0) == pytest.approx(energy, rel=1e-12)


def test_information_is_entropy_of_the_mean_minus_mean_entropy():
    t = _teacher_probs(seed=1)
    t_bar = t.mean(0)
    h = lambda p: -(p * p.log()).sum(-1)  # noqa: E731
    it = W.certificate(t, torch.zeros(len(t), 9, dtype=torch.float64), t_bar, 5.0)["IT"]
    assert it == pytest.approx(float(h(t_bar) - h(t).mean()), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-3, 3), min_size=9, max_size=9), st.floats(0.5, 10))
def test_a_constant_mean_never_certifies(c, gain):
    """Any constant encoder mean gives LTS >= IT, i.e. GT <= 0 (Gibbs' inequality against Tbar)."""
    t = _teacher_probs(n=50, seed=2)
    mu = torch.tensor(c, dtype=torch.float64).expand(50, 9)
    cert = W.certificate(t, mu, t.mean(0), gain)
    assert cert["GT"] <= 1e-12


def test_the_best_constant_maps_to_t_bar_and_ties():
    t = _teacher_probs(seed=3)
    t_bar = t.mean(0)
    best = W.analytic_code(t_bar[None], m=9, gain=2.0).expand(len(t), 9)  # the constant whose witness says Tbar
    cert = W.certificate(t, best, t_bar, 2.0)
    assert cert["LTS"] == pytest.approx(cert["IT"], rel=1e-10) and abs(cert["GT"]) < 1e-10


def test_escape_gradient_at_a_collapsed_encoder_is_the_closed_form_and_non_zero():
    """At mu = 0 for every image, d LTS / d mu_i = gain P^T V^T (S - T_i) / N with S uniform: non-zero whenever the
    teacher is not uniform, so a witness loss pushes a collapsed encoder out."""
    t = _teacher_probs(n=8, seed=4)
    mu = torch.zeros(8, 12, dtype=torch.float64, requires_grad=True)
    lts = W.kl_rows(t, W.witness_log_probs(mu, 10, 5.0)).mean()
    (grad,) = torch.autograd.grad(lts, mu)
    V = W.simplex_vectors(10)
    ref = torch.zeros(8, 12, dtype=torch.float64)
    ref[:, :9] = 5.0 * (torch.full((8, 10), 0.1, dtype=torch.float64) - t) @ V / 8
    torch.testing.assert_close(grad, ref, rtol=1e-10, atol=1e-14)
    assert grad.abs().sum() > 1e-3


def test_latent_dim_below_k_minus_one_is_one_line():
    with pytest.raises(ConfigError, match=r"latent_dim >= K - 1 = 9 witness coordinates \(got 4\)"):
        W.witness_log_probs(torch.zeros(3, 4), 10, 5.0)
    with pytest.raises(ConfigError, match="K >= 2"):
        W.CertificateConfig(K=1)


def test_fitted_teacher_on_mnist(mnist_small, tmp_path):
    """On 512 MNIST images: T rows are distributions with every entry >= eps/K; T equals (1 - eps) r + eps/K with r
    scikit-learn's own predict_proba of the same PCA + mixture; the fit is seeded and the cache round-trips."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    cfg = W.CertificateConfig(pca_dim=20, K=5)
    teacher = W.load_or_fit_teacher(mnist_small, cfg, root=tmp_path)
    t = teacher.probs(mnist_small.x_test)
    torch.testing.assert_close(t.sum(1), torch.ones(len(t), dtype=torch.float64))
    assert t.min() >= cfg.eps / cfg.K - 1e-15
    x = mnist_small.x_train.flatten(1).double().numpy() / 255
    pca = PCA(20, random_state=0).fit(x)
    gmm = GaussianMixture(5, covariance_type="full", random_state=0, reg_covar=1e-4, max_iter=200).fit(pca.transform(x))
    r = gmm.predict_proba(pca.transform(mnist_small.x_test.flatten(1).double().numpy() / 255))
    np.testing.assert_allclose(t.numpy(), 0.95 * r + 0.01, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(teacher.t_bar, teacher.probs(mnist_small.x_train).mean(0))
    again = W.load_or_fit_teacher(mnist_small, cfg, root=tmp_path)  # from the cache file
    torch.testing.assert_close(again.probs(mnist_small.x_test), t)
    assert len(list((tmp_path / "certificate").iterdir())) == 1
    it = W.certificate(t, torch.zeros(len(t), 4, dtype=torch.float64), teacher.t_bar, cfg.gain)["IT"]
    assert 0.1 < it < math.log(5)  # the teacher carries information about the images


def _gt(model, data) -> dict:
    """The certificate of a trained model on the test images, with the teacher its setup fitted (its buffers)."""
    from cvae_core.eval.likelihood import encoder_means

    x = data.x_test
    with torch.no_grad():
        t = model.teacher(model.prepare_batch(x)).double()
    return W.certificate(t, encoder_means(model, x).double(), t.mean(0), model.config.witness_gain)


@pytest.fixture(scope="module")
def binary_small(mnist):
    from cvae_core.data import Dataset

    b = lambda x: (x >= 128).to(torch.uint8) * 255  # noqa: E731  what load_dataset("mnist-binary") does
    return Dataset("mnist-binary", b(mnist.x_train[:3000]), mnist.y_train[:3000], b(mnist.x_test[:1000]),
                   mnist.y_test[:1000], 10, mnist.class_names)


def test_a_short_rst_vae_run_is_certified_and_a_stressed_vae_is_not(binary_small, tmp_path, monkeypatch):
    """Seeded, 300 steps on 3,000 binarised digits, alpha_KL = 4 (collapse stress) for both: RST-VAE's witness
    loss keeps the encoder means informative (GT = 0.69 nats here; asserted > 0.5) while the plain Bernoulli VAE
    (the same model with lambda_TS = 0) fails the certificate (GT = -1.07; asserted < 0); the teacher is the same
    (same data, same seed), so IT is equal (1.88)."""
    from cvae_core.registry import build_model
    from cvae_core.train import TrainConfig, fit

    monkeypatch.setenv("CVAE_DATA_DIR", str(tmp_path))  # the teacher's cache
    out = {}
    for name in ("rst_vae", "vae"):
        model = build_model("rst_vae", seed=0, arch="mlp", beta=4.0, lambda_ts=1.0 if name == "rst_vae" else 0.0)
        hist = fit(model, binary_small, TrainConfig(steps=300, batch_size=128, lr=1e-3, seed=0, log_every=100))
        assert hist.status == "finished"
        out[name] = _gt(model, binary_small)
    print(out)
    assert out["rst_vae"]["IT"] == pytest.approx(out["vae"]["IT"], rel=1e-12) and out["vae"]["IT"] > 1.0
    assert out["rst_vae"]["GT"] > 0.5 and out["vae"]["GT"] < 0


def test_prefit_phase_trains_only_the_encoder_on_the_witness(binary_small, tmp_path, monkeypatch):
    from cvae_core.registry import build_model
    from cvae_core.train import TrainConfig, fit

    monkeypatch.setenv("CVAE_DATA_DIR", str(tmp_path))
    model = build_model("rst_prefit", seed=0, arch="mlp", prefit_fraction=0.5)
    assert [(p.name, p.objective) for p in model.phases()] == [("prefit", "lts"), ("train", "loss")]
    start = {k: v.clone() for k, v in model.state_dict().items()}

    class AtBoundary:
        state = None

        def on_log(self, model, rec, hist):
            if rec["phase"] == "prefit":
                AtBoundary.state = {k: v.clone() for k, v in model.state_dict().items()}

    fit(model, binary_small, TrainConfig(steps=100, batch_size=128, seed=0, log_every=50), callbacks=[AtBoundary()])
    mid = AtBoundary.state
    assert all(torch.equal(start[k], mid[k]) for k in mid if k.startswith("decoder."))
    assert all(not torch.equal(start[k], mid[k]) for k in mid if k.startswith(("encoder.", "enc_head.")))
    assert not torch.equal(start["means"], mid["means"])  # setup fitted the teacher before the first step


# ------------------------------------------------------------------ live certificate, evaluation, pictures
@pytest.mark.parametrize("K", [3, 10])
def test_simplex_plane_sends_each_witness_direction_to_its_vertex(K):
    angles = 2 * math.pi * torch.arange(K, dtype=torch.float64) / K
    vertices = torch.stack([angles.cos(), angles.sin()], 1)
    torch.testing.assert_close(W.simplex_vectors(K) @ W.simplex_plane(K).T, vertices, rtol=0, atol=1e-12)


def _numpy_certificate(t: np.ndarray, mu: np.ndarray, t_bar: np.ndarray, gain: float, K: int) -> dict:
    """IT, LTS, GT in plain numpy (a stable log-softmax and the KL sums written out). V comes from the module: its
    geometry is tested above, and a rotation of it would give different (equally valid) numbers."""
    V = W.simplex_vectors(K).numpy()
    a = gain * mu[:, : K - 1] @ V.T
    log_s = a - a.max(1, keepdims=True) - np.log(np.exp(a - a.max(1, keepdims=True)).sum(1, keepdims=True))
    lts = (t * (np.log(t) - log_s)).sum(1).mean()
    it = (t * (np.log(t) - np.log(t_bar))).sum(1).mean()
    return {"IT": it, "LTS": lts, "GT": it - lts}


def test_live_certificate_each_tick_matches_a_numpy_computation(binary_small, tmp_path, monkeypatch):
    """fit + TickMeans + LiveCertificate: every tick has IT, LTS, GT and au; the last tick (at the final step) equals
    a numpy computation from the final model's encoder means and a teacher fitted separately."""
    from cvae_core.eval.likelihood import TickMeans, active_units, encoder_means
    from cvae_core.registry import build_model
    from cvae_core.train import TrainConfig, fit

    monkeypatch.setenv("CVAE_DATA_DIR", str(tmp_path))
    x, y = binary_small.x_test[:300], binary_small.y_test[:300]
    live = C.LiveCertificate(binary_small, x, background=False)
    assert live.status == "ready"
    model = build_model("vae", seed=0, arch="mlp", hidden=64, latent_dim=12, likelihood="bernoulli")
    hist = fit(model, binary_small, TrainConfig(steps=60, batch_size=64, seed=0, log_every=20),
               callbacks=[TickMeans(x, None, y, [live])])
    assert [r["step"] for r in hist.records] == [20, 40, 60]
    assert all({"IT", "LTS", "GT", "au"} <= set(r) for r in hist.records)
    teacher = W.fit_teacher(binary_small.x_train)  # fitted again, not read from the callback's cache
    means = encoder_means(model, x).double()
    t = teacher.probs(x).numpy()
    ref = _numpy_certificate(t, means.numpy(), t.mean(0), 5.0, 10)  # Tbar over the same images: exact
    last = hist.records[-1]
    for k in ("IT", "LTS", "GT"):
        assert last[k] == pytest.approx(ref[k], rel=1e-6), k
    assert last["au"] == active_units(means.float())
    assert hist.records[0]["IT"] == pytest.approx(last["IT"], rel=1e-12)  # the teacher is fixed


def test_live_certificate_in_the_background_and_with_a_small_latent(binary_small, tmp_path, monkeypatch):
    monkeypatch.setenv("CVAE_DATA_DIR", str(tmp_path))
    live = C.LiveCertificate(binary_small, binary_small.x_test[:50])
    assert live.status.startswith("fitting the teacher")  # nothing cached in this fresh data root yet
    assert live.wait(120) and live.status == "ready" and live.error is None
    rec = {}
    live.on_means(None, rec, torch.zeros(50, 4), None)
    assert rec == {} and live.status == "not available: the latent has 4 coordinates and the witness needs K - 1 = 9"
    small = C.LiveCertificate(binary_small.subset(500, 50), binary_small.x_test[:50], latent_dim=4)
    assert small.wait(0) and small.status == live.status  # said at once, before any tick
    assert len(list((tmp_path / "certificate").iterdir())) == 1  # no teacher fitted for the 500-image set
    again = C.LiveCertificate(binary_small, binary_small.x_test[:50])
    assert again.status == "reading the cached teacher"  # the cache the first one wrote
    assert again.wait(30) and again.status == "ready"
    rec = {}
    again.on_means(None, rec, torch.zeros(50, 16), None)
    assert rec["GT"] == pytest.approx(rec["IT"] - rec["LTS"]) and rec["LTS"] >= rec["IT"]  # constant: no certificate


def test_evaluation_and_inspection_agree(binary_small, tmp_path, monkeypatch):
    """full_evaluation's certificate equals certificate_metrics and the page's inspect on the same images; the best
    constant code's witness is Tbar; a latent below K - 1 gets one line instead of numbers."""
    from cvae_core.eval import full_evaluation
    from cvae_core.eval.likelihood import encoder_means
    from cvae_core.registry import build_model
    from cvae_core.train import TrainConfig, fit

    monkeypatch.setenv("CVAE_DATA_DIR", str(tmp_path))
    data = binary_small.subset(3000, 400)
    model = build_model("rst_vae", seed=0, arch="mlp", hidden=64, latent_dim=12)
    fit(model, data, TrainConfig(steps=40, batch_size=64, seed=0, log_every=40))
    ev = full_evaluation(model, data, sample_metrics=False)
    means = encoder_means(model, data.x_test)
    cm = C.certificate_metrics(model, data, data.x_test, means)
    p = C.inspect(model, data, n=400)
    for k in ("IT", "LTS", "GT"):
        assert ev[k] == pytest.approx(cm[k], rel=1e-12) and p[k] == pytest.approx(cm[k], rel=1e-6)
    assert ev["mu_sq"] == pytest.approx(float(means.double().pow(2).sum(1).mean()), rel=1e-9)
    assert ev["energy"] == pytest.approx(W.energy_bound(torch.from_numpy(p["t"]), 5.0), rel=1e-9)
    np.testing.assert_allclose(p["s"].sum(1), 1, rtol=1e-12)
    top_t, top_s = p["t"].argmax(1), p["s"].argmax(1)
    assert p["agreement"] == np.mean(top_t == top_s)
    assert p["top_share"] == np.bincount(top_t, minlength=10).max() / 400
    np.testing.assert_allclose(p["plane"], means[:, :9].double().numpy() @ W.simplex_plane(10).numpy().T,
                               rtol=1e-6, atol=1e-9)
    t_bar = torch.from_numpy(p["t_bar"])
    const = W.analytic_code(t_bar[None], 9, 5.0)
    torch.testing.assert_close(W.witness_log_probs(const, 10, 5.0).exp()[0], t_bar, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(p["const"], (const @ W.simplex_plane(10).T)[0].numpy(), rtol=1e-12)
    small = build_model("vae", seed=0, arch="mlp", hidden=32, latent_dim=4)
    out = full_evaluation(small, data, sample_metrics=False)
    assert "GT" not in out and out["certificate_skipped"].startswith("latent_dim 4 < K - 1 = 9")
    with pytest.raises(ConfigError, match="latent_dim >= K - 1"):
        C.inspect(small, data)


@pytest.mark.gpu
def test_rst_vae_on_cuda_keeps_the_teacher_on_the_device(binary_small, tmp_path, monkeypatch):
    """The CUDA path: the teacher's buffers move with the model, T(x) of a batch is computed on the GPU and equals the
    CPU's, and the live certificate of the last tick equals the CPU evaluation of the same weights."""
    import copy

    from cvae_core.eval.likelihood import TickMeans, encoder_means
    from cvae_core.registry import build_model
    from cvae_core.train import TrainConfig, fit

    monkeypatch.setenv("CVAE_DATA_DIR", str(tmp_path))
    x = binary_small.x_test[:200]
    live = C.LiveCertificate(binary_small, x, background=False)
    model = build_model("rst_vae", seed=0, arch="mlp", hidden=64, latent_dim=12)
    hist = fit(model, binary_small, TrainConfig(steps=20, batch_size=64, seed=0, log_every=10, device="cuda"),
               callbacks=[TickMeans(x, None, binary_small.y_test[:200], [live])])
    assert hist.status == "finished" and model.means.device.type == "cuda"
    cpu = copy.deepcopy(model).cpu()
    with torch.no_grad():
        t_gpu = model.teacher(model.prepare_batch(x.cuda())).double().cpu()
        t_cpu = cpu.teacher(cpu.prepare_batch(x)).double()
    torch.testing.assert_close(t_gpu, t_cpu, rtol=1e-4, atol=1e-6)
    ref = C.certificate_metrics(cpu, binary_small, x, encoder_means(cpu, x))
    assert hist.records[-1]["GT"] == pytest.approx(ref["GT"], rel=1e-4, abs=1e-5)
