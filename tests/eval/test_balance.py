"""cvae_core.balance: run discovery and the nu sweep, samples and class counts per (tau, weighting, seed), the grid
order, and training a ct3vae at an exact nu in the background. Small MLP models; statistical checks use fixed
seeds and state their tolerance."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import torch

from cvae_core import jobs
from cvae_core.errors import ConfigError
from cvae_core.eval import balance
from cvae_core.registry import build_model
from cvae_core.runs import catalog
from cvae_core.runs.folder import load_run, read_run_info, save_run

pytestmark = pytest.mark.usefixtures("one_thread")
LT = {"name": "mnist-lt", "rho": 100.0, "seed": 0}


def tiny(name: str, seed: int = 0, **kw):
    return build_model(name, seed=seed, arch="mlp", hidden=32, latent_dim=4, **kw).eval()


class BrightnessClassifier:
    """A stand-in classifier: the class is the decile of an image's mean brightness (deterministic, cheap)."""

    def predict(self, x: torch.Tensor) -> torch.Tensor:  # uint8 images, as the real one takes them
        return (x.float().flatten(1).mean(1) / 255 * 10).clamp(0, 9).long()


# ------------------------------------------------------------------ counts
def test_counts_shares_and_groups():
    c = balance.class_counts([0, 0, 1, 9, 9, 9], 10)
    assert c.tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 0, 3]
    np.testing.assert_allclose(balance.shares(c), c / 6)
    assert balance.shares(np.zeros(10)).sum() == 0  # no samples: zeros, not NaN
    assert balance.group_share(balance.shares(c), balance.TAIL) == pytest.approx(0.5)
    assert balance.group_share(balance.shares(c), balance.HEAD) == pytest.approx(0.5)
    assert balance.scarce(balance.shares(c)) == [2, 3, 4, 5, 6, 7, 8]  # below 2% (a fifth of 1/K)
    assert balance.scarce([0.5, 0.3, 0.19, 0.01], fraction=0.2) == [3]  # 1/K = 0.25: below 0.05


def test_grid_order_takes_the_first_samples_of_each_row():
    rows = np.array([3, 1, 3, 0, 3, 3, 1])
    order = balance.grid_order(rows, 4, per_row=3)
    assert order == [[3], [1, 6], [], [0, 2, 4]]


# ------------------------------------------------------------------ draws
def test_draw_counts_are_the_classifiers_and_equal_weighting_is_uniform():
    model, clf = tiny("ct3vae"), BrightnessClassifier()
    d = balance.draw(model, clf, 5000, None, "equal", seed=3, batch_size=700)
    assert d.images.shape == (5000, 1, 28, 28) and d.images.dtype == torch.uint8
    # the counts are those of the classifier on the very images (recomputed here, not through draw)
    g_y, g_n = torch.Generator().manual_seed(4), torch.Generator().manual_seed(3)
    y = model.sample_classes(5000, "equal", generator=g_y)
    x = model.sample(5000, y, eps=model.prior_noise(5000, generator=g_n))
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    np.testing.assert_array_equal(d.images, x)
    np.testing.assert_array_equal(d.asked, y.numpy())
    np.testing.assert_array_equal(d.counts, np.bincount(clf.predict(x).numpy(), minlength=10))
    assert d.counts.sum() == 5000
    # equal weights: each class share within 2 points of 1/K (sd = sqrt(0.09 / 5000) = 0.42 points; ~5 sd)
    np.testing.assert_allclose(balance.shares(balance.class_counts(d.asked, 10)), 0.1, atol=0.02)


def test_frequency_weighting_follows_the_training_frequencies():
    model = tiny("ct3vae")
    freq = torch.tensor([0.4, 0.2, 0.1, 0.1, 0.08, 0.05, 0.04, 0.015, 0.01, 0.005], dtype=torch.float64)
    model.class_freq.copy_(freq)
    d = balance.draw(model, BrightnessClassifier(), 8000, None, "frequency", seed=0)
    asked = balance.shares(balance.class_counts(d.asked, 10))
    np.testing.assert_allclose(asked, freq.numpy(), atol=0.02)  # sd <= sqrt(0.24 / 8000) = 0.55 points
    assert asked[9] < 0.012 and asked[0] > 0.37


def test_tau_changes_the_images_and_nothing_else():
    model = tiny("ct3vae", nu=5.0)
    a = balance.draw(model, BrightnessClassifier(), 200, 0.1, "equal", seed=1)
    b = balance.draw(model, BrightnessClassifier(), 200, 0.6, "equal", seed=1)
    np.testing.assert_array_equal(a.asked, b.asked)
    assert (a.images != b.images).any()
    # tau = 0: every sample of a class is the decoder's image of the class centre
    z = balance.draw(model, BrightnessClassifier(), 200, 0.0, "equal", seed=1)
    for k in range(10):
        imgs = z.images[torch.from_numpy(z.asked == k)]
        assert len(imgs) and (imgs == imgs[0]).all()
    # the same arguments give the same draw, and torch's global random stream is not touched
    state = torch.random.get_rng_state()
    again = balance.draw(model, BrightnessClassifier(), 200, 0.1, "equal", seed=1)
    assert torch.equal(state, torch.random.get_rng_state())
    assert torch.equal(a.images, again.images)


def test_unconditional_runs_ignore_the_weighting():
    model = tiny("vae")
    e = balance.draw(model, BrightnessClassifier(), 300, None, "equal", seed=0)
    f = balance.draw(model, BrightnessClassifier(), 300, None, "frequency", seed=0)
    assert e.asked is None and torch.equal(e.images, f.images)
    np.testing.assert_array_equal(e.counts, f.counts)


@pytest.mark.parametrize("kw, msg", [({"n": 0}, "number of samples"), ({"tau": -0.1}, "tau"),
                                     ({"tau": float("nan")}, "tau"), ({"weighting": "rare"}, "weighting")])
def test_bad_arguments_are_one_line_errors(kw, msg):
    args = {"n": 10, "tau": None, "weighting": "equal"} | kw
    for name in ("ct3vae", "vae"):
        with pytest.raises(ConfigError, match=msg):
            balance.draw(tiny(name), BrightnessClassifier(), args["n"], args["tau"], args["weighting"])


def test_real_classifier_counts(mnist):
    """With the in-project classifier, test images (not samples) are counted as their labels (99% accuracy)."""
    from cvae_core.eval.classifier import load_classifier

    x, y = mnist.x_test[:2000], mnist.y_test[:2000]
    pred = load_classifier().predict(x)
    counts = balance.class_counts(pred, 10)
    np.testing.assert_allclose(counts, balance.class_counts(y, 10), atol=12)


# ------------------------------------------------------------------ runs and the nu sweep
def make_runs(ship, saved):
    save_run(ship / "lt_vae", tiny("vae"), dataset=LT)
    for nu in (2.5, 10.0, 20.0):
        save_run(ship / f"lt_ct3vae_nu{nu:g}", tiny("ct3vae", nu=nu), dataset=LT)
    save_run(ship / "lt_t3vae", tiny("t3vae", nu=10.0), dataset=LT)
    save_run(ship / "plain_mnist", tiny("ct3vae"), dataset={"name": "mnist"})  # another data set: skipped
    save_run(saved / "mine_nu10", tiny("ct3vae", seed=1), dataset=LT)  # same nu as a shipped run
    save_run(saved / "mine_nu7", tiny("ct3vae", nu=7.0), dataset=LT)
    save_run(saved / "rho10", tiny("ct3vae", nu=3.0), dataset=dict(LT, rho=10.0))
    (ship / "classifier-mnist").mkdir()  # no config.json: not a run
    (saved / "broken").mkdir()
    (saved / "broken" / "config.json").write_text("{oops")


def test_find_runs_and_the_nu_sweep(tmp_path):
    ship, saved = tmp_path / "ship", tmp_path / "saved"
    make_runs(ship, saved)
    runs, problems = catalog.list_runs([ship, saved], dataset="mnist-lt")
    assert len(problems) == 1 and "not valid JSON" in problems[0] and "\n" not in problems[0]
    labels = [r.label for r in runs]
    assert labels[:5] == ["lt_ct3vae_nu10", "lt_ct3vae_nu2.5", "lt_ct3vae_nu20", "lt_t3vae", "lt_vae"]
    assert labels[5:] == ["saved: mine_nu10", "saved: mine_nu7", "saved: rho10"]
    by = {r.label: r for r in runs}
    assert by["lt_vae"].nu is None and by["lt_t3vae"].nu == 10.0 and by["saved: rho10"].rho == 10.0
    sweep = catalog.nu_sweep(runs, 100.0)
    assert list(sweep) == [2.5, 7.0, 10.0, 20.0]  # t3vae is not in the ct3vae sweep; rho 10 is another sweep
    assert sweep[10.0].label == "lt_ct3vae_nu10" and sweep[7.0].label == "saved: mine_nu7"  # shipped wins
    assert list(catalog.nu_sweep(runs, 10.0)) == [3.0]
    here = [r for r in runs if r.rho == 100.0]
    main, other = catalog.default_pair(here)
    assert (main.label, other.label) == ("lt_ct3vae_nu10", "lt_vae")
    main, other = catalog.default_pair([by["saved: mine_nu7"], by["lt_t3vae"]])  # no nu = 10, no vae
    assert (main.label, other.label) == ("saved: mine_nu7", "lt_t3vae")
    assert catalog.default_pair([]) == (None, None)
    assert catalog.list_runs([tmp_path / "none", tmp_path / "neither"], dataset="mnist-lt") == ([], [])


def test_prefetcher_computes_ahead_and_drops_what_is_no_longer_wanted():
    import threading

    pf, hold, calls = jobs.Prefetcher(keep=2), threading.Event(), []

    def job(key, wait=False):
        def fn():
            if wait:
                hold.wait(10)
            calls.append(key)
            return f"value {key}"
        return key, fn

    pf.want([job("a", wait=True)])
    time.sleep(0.05)  # the worker is now inside a's job
    pf.want([job("b"), job("c")])
    pf.want([job("d"), job("e"), job("f")])  # the view moved on: b and c are dropped
    pf.seen("e")  # the page drew e itself
    hold.set()
    assert pf.idle(10)
    assert calls == ["a", "d", "f"]
    assert pf.take("a") is None  # keep = 2: the oldest finished value was dropped
    assert pf.take("d") == "value d" and pf.take("d") is None  # handed over once
    assert pf.take("zzz") is None
    pf.want([job("d"), job("f")])  # already taken (seen) or already done: nothing to compute
    assert pf.idle(10) and calls == ["a", "d", "f"] and pf.take("f") == "value f"
    hold.clear()
    pf.want([job("g", wait=True)])
    time.sleep(0.05)  # the worker is inside g's job
    threading.Timer(0.2, hold.set).start()
    assert pf.take("g") == "value g"  # waits for the value being computed instead of computing it twice
    pf.want([job("h")])
    assert pf.take("h") in (None, "value h")  # asked for before or after the worker got to it: never twice
    assert pf.idle(10) and calls.count("h") <= 1


def test_nu_run_names():
    assert catalog.nu_run_name(100.0, 7.5, 2000) == "mnistlt100_ct3vae_nu7.5_2000steps"
    taken = {"mnistlt100_ct3vae_nu7.5_2000steps", "mnistlt100_ct3vae_nu7.5_2000steps-2"}
    assert catalog.nu_run_name(100.0, 7.5, 2000, taken) == "mnistlt100_ct3vae_nu7.5_2000steps-3"


def test_nu_training_saves_a_run_that_joins_the_sweep(tmp_path, mnist_small):
    ship, saved = tmp_path / "ship", tmp_path / "saved"
    save_run(ship / "lt_ct3vae", tiny("ct3vae"), dataset=LT,
             train_config={"batch_size": 32, "lr": 0.002, "seed": 4, "steps": 9999, "epochs": 2.0})
    info = read_run_info(ship / "lt_ct3vae")
    data = dataclasses.replace(mnist_small, name="mnist-lt", info={"rho": 100.0, "seed": 0})  # as the page has it
    with pytest.raises(ConfigError, match="nu"):
        jobs.nu_training(info, 2.0, 10, data, saved / "x")
    with pytest.raises(ConfigError, match="ct3vae"):
        jobs.nu_training(dict(info, model="vae"), 7.0, 10, data, saved / "x")
    job = jobs.nu_training(info, 7.25, 12, data, saved / "mnistlt100_ct3vae_nu7.25_12steps")
    assert job.snapshot()["status"] == "running" and job.config.batch_size == 32 and job.config.seed == 4
    assert set(job.snapshot()) == set(jobs.SNAPSHOT_KEYS) and job.snapshot()["kind"] == "nu"
    job.start()
    job.join(120)
    snap = job.snapshot()
    assert snap["status"] == "saved", snap["text"]
    assert snap["fraction"] == 1.0 and snap["saved"] == saved / "mnistlt100_ct3vae_nu7.25_12steps"
    model, run_info = load_run(snap["saved"])
    assert model.config.nu == 7.25 and model.config.latent_dim == 4 and run_info["history"]["step"] == 12
    assert json.loads((snap["saved"] / "config.json").read_text())["dataset"]["rho"] == 100.0
    runs, _ = catalog.list_runs([ship, saved], dataset="mnist-lt")
    assert catalog.nu_sweep(runs, 100.0)[7.25].label == "saved: mnistlt100_ct3vae_nu7.25_12steps"
