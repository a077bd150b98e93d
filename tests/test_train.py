"""The training engine: learning, reproducibility, the batch sampler, pause/step/stop from another thread,
divergence handling, config validation, and the threaded TrainingJob. Small MLP models, a few dozen steps."""

from __future__ import annotations

import copy
import math
import re
import threading
import time

import numpy as np
import pytest
import torch
from _helpers import fit_small

from cvae_core.data import Dataset, to_float
from cvae_core.errors import ConfigError
from cvae_core.eval.likelihood import evaluate
from cvae_core.jobs import TrainingJob
from cvae_core.registry import MODELS, build_model
from cvae_core.runs.folder import load_run
from cvae_core.train import History, TrainConfig, TrainControl, fit

SMALL = dict(arch="mlp", hidden=32, latent_dim=4)


def _model(name="bs_vae", seed=0):
    return build_model(name, seed=seed, **SMALL, **fit_small(name))


def _wait_for(cond, timeout=30.0, what="condition"):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def _instrumented(name="bs_vae", seed=0, nan_loss_after=None, nan_grad_at=None):
    """A registry model whose loss() logs each step's batch and loss; optionally the loss turns NaN after k calls,
    or at call k the loss stays finite but its gradient is NaN (0 * d sqrt(u)/du at u = 0)."""
    base = MODELS[name].model_cls

    class Probe(base):
        def loss(self, x, y=None, extras=None, objective="loss"):
            t = super().loss(x, y, extras, objective)
            self.calls += 1
            self.batches.append(x.detach().clone())
            if nan_loss_after is not None and self.calls > nan_loss_after:
                t["loss"] = t["loss"] * float("nan")
            if nan_grad_at is not None and self.calls == nan_grad_at:
                p = next(self.parameters())
                t["loss"] = t["loss"] + 0.0 * torch.sqrt((p - p.detach()).sum())  # value 0, gradient NaN
            self.losses.append(t["loss"].item())
            return t

    model = build_model(name, seed=seed, **SMALL, **fit_small(name))
    probe = Probe(model.config)
    probe.load_state_dict(model.state_dict())
    probe.calls, probe.batches, probe.losses = 0, [], []
    return probe


class _Ticks:
    """Callback keeping a copy of the weights and the record at every log tick."""

    def __init__(self):
        self.states, self.records, self.ended = [], [], 0

    def on_log(self, model, rec, hist):
        self.states.append(copy.deepcopy(model.state_dict()))
        self.records.append(dict(rec))

    def on_end(self, model, hist):
        self.ended += 1


def _unique_images(n=100):
    """n images that each carry their index in the first two pixels (so batches can be identified)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.arange(n) // 256
    x[:, 0, 0, 1] = torch.arange(n) % 256
    y = torch.arange(n) % 10
    return Dataset("toy", x, y, x[:20], y[:20], 10, [str(i) for i in range(10)])


def _ids(batch: torch.Tensor) -> list[int]:
    b = (batch[:, 0, 0, :2] * 255).round().long()
    return (b[:, 0] * 256 + b[:, 1]).tolist()


# ---------------------------------------------------------------- learning and bookkeeping
def test_fit_reduces_the_loss(mnist_small):
    model = _model("bs_vae")
    x_eval = mnist_small.x_test[:128]
    before = evaluate(model, x_eval)["neg_elbo"]
    ticks = _Ticks()
    hist = fit(model, mnist_small, TrainConfig(steps=60, batch_size=64, lr=3e-3, log_every=20), callbacks=[ticks])
    after = evaluate(model, x_eval)["neg_elbo"]
    assert hist.status == "finished" and hist.message == "finished 60 steps"
    assert hist.step == hist.total_steps == 60 and ticks.ended == 1
    assert [r["step"] for r in hist.records] == [20, 40, 60]
    assert [r["epoch"] for r in hist.records] == pytest.approx([20 * 64 / 512, 40 * 64 / 512, 60 * 64 / 512])
    # held-out -ELBO (nats/image) falls by a wide margin: ~540 untrained, ~20 after 60 steps (seed 0)
    assert after < before - 150, (before, after)
    assert hist.records[-1]["loss"] < hist.records[0]["loss"]
    assert not model.training  # fit leaves the model in eval mode


def test_records_are_window_means_and_epochs_are_permutations():
    """Each record averages the per-step terms since the previous tick; each epoch visits floor(n/bs) disjoint
    batches (the last partial batch is dropped and the order is reshuffled)."""
    data = _unique_images(100)
    model = _instrumented("vae")
    hist = fit(model, data, TrainConfig(steps=9, batch_size=32, log_every=4))
    assert [r["step"] for r in hist.records] == [4, 8, 9]
    for rec, (a, b) in zip(hist.records, [(0, 4), (4, 8), (8, 9)], strict=True):
        assert rec["loss"] == pytest.approx(float(np.mean(model.losses[a:b])), rel=1e-6)
    ids = [_ids(b) for b in model.batches]
    assert all(len(i) == 32 for i in ids)
    for e in range(3):  # three epochs of three batches
        seen = sum(ids[3 * e : 3 * e + 3], [])
        assert len(set(seen)) == 96 and set(seen) <= set(range(100))
    assert ids[0] != ids[3]  # reshuffled between epochs


def test_total_steps_from_epochs():
    assert TrainConfig(epochs=2.0, batch_size=128).total_steps(60000) == 2 * 469
    assert TrainConfig(epochs=0.5, batch_size=100).total_steps(1000) == 5
    assert TrainConfig(epochs=0.001, batch_size=100).total_steps(1000) == 1
    assert TrainConfig(steps=7, epochs=100).total_steps(10) == 7


def test_fit_is_reproducible(mnist_small):
    cfg = TrainConfig(steps=15, batch_size=32, log_every=5, seed=3)
    runs = []
    for seed in (3, 3, 4):
        model = _model("sigma_vae", seed=0)
        hist = fit(model, mnist_small, TrainConfig(**{**cfg.__dict__, "seed": seed}))
        runs.append(([{k: v for k, v in r.items() if k != "time"} for r in hist.records], model.state_dict()))
    (ra, sa), (rb, sb), (rc, sc) = runs
    assert ra == rb
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ra != rc  # another seed: another batch order and noise
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


# ---------------------------------------------------------------- pause / step / stop from another thread
@pytest.fixture
def teardown_stop():
    """Objects with stop() (TrainControl, TrainingJob): stopped after the test even when an assertion fails, so no
    training thread outlives its test."""
    items = []
    yield items
    for obj in items:
        obj.stop()
    for obj in items:
        if hasattr(obj, "join"):
            obj.join(30)


def _start(model, data, control, **cfg):
    hist = History()
    kw = dict(steps=10**6, batch_size=16, log_every=1000)
    kw.update(cfg)
    t = threading.Thread(target=fit, args=(model, data, TrainConfig(**kw)),
                         kwargs=dict(control=control, history=hist), daemon=True)
    t.start()
    return t, hist


def _start_paused(data, teardown_stop):
    """An instrumented vae whose fit() runs in a thread, paused before its first step."""
    model = _instrumented("vae")
    control = TrainControl()
    teardown_stop.append(control)
    control.pause()
    thread, hist = _start(model, data, control)
    return model, control, thread, hist


def test_pause_step_stop_from_another_thread(mnist_small, teardown_stop):
    model, control, thread, hist = _start_paused(mnist_small, teardown_stop)
    time.sleep(0.3)
    assert model.calls == 0 and control.paused  # paused before the first step
    control.step(3)
    _wait_for(lambda: hist.step == 3, what="3 single steps")
    time.sleep(0.3)  # would be ample time for further steps if any were allowed
    assert model.calls == 3 and hist.step == 3 and len(hist.records) == 3  # each single step is a log tick
    control.step(2)
    _wait_for(lambda: hist.step == 5, what="2 more steps")
    time.sleep(0.2)
    assert model.calls == 5 and control.paused
    control.resume()
    _wait_for(lambda: model.calls >= 20, what="running after resume")
    control.stop()
    thread.join(30)
    assert not thread.is_alive()
    assert hist.status == "stopped"
    assert hist.step == model.calls  # the partial window is flushed on stop
    assert hist.message == f"stopped by the user at step {model.calls}"
    assert hist.records[-1]["step"] == model.calls


def test_stop_while_paused_ends_promptly(mnist_small, teardown_stop):
    model, control, thread, hist = _start_paused(mnist_small, teardown_stop)
    time.sleep(0.2)
    t0 = time.monotonic()
    control.stop()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - t0 < 5
    assert hist.status == "stopped" and model.calls == 0 and hist.records == []


# ---------------------------------------------------------------- divergence
def _assert_weights_equal(model, state):
    for k, v in model.state_dict().items():
        assert torch.isfinite(v).all(), k
        assert torch.equal(v, state[k]), k


def test_nan_loss_stops_with_diverged_and_restores_last_good_tick(mnist_small):
    model = _instrumented("vae", nan_loss_after=12)
    ticks = _Ticks()
    hist = fit(model, mnist_small, TrainConfig(steps=50, batch_size=32, log_every=5), callbacks=[ticks])
    assert hist.status == "diverged"
    assert hist.step == 10 and [r["step"] for r in hist.records] == [5, 10]
    # found at the next tick (15) at the latest; NaN weights may surface earlier (a distribution rejects them)
    assert re.search(r"NaN or infinite between steps 10 and 1[3-5];", hist.message), hist.message
    assert "restored from step 10" in hist.message and "lower learning rate" in hist.message
    assert 13 <= model.calls <= 15
    _assert_weights_equal(model, ticks.states[-1])
    assert ticks.ended == 1 and len(ticks.records) == 2


def test_nan_before_first_tick_restores_initial_weights(mnist_small):
    model = _instrumented("vae", nan_loss_after=1)
    init = copy.deepcopy(model.state_dict())
    hist = fit(model, mnist_small, TrainConfig(steps=50, batch_size=32, log_every=5))
    assert hist.status == "diverged" and hist.step == 0 and hist.records == []
    assert re.search(r"between steps 0 and [1-5];", hist.message), hist.message
    _assert_weights_equal(model, init)


def test_nan_gradient_with_finite_loss_at_a_tick_is_not_kept(mnist_small):
    """At step 10 (a log tick) the loss is finite but its gradient NaN, so the weights after that step are NaN.
    The tick must not be taken as good: the weights come back finite, from step 5."""
    model = _instrumented("vae", nan_grad_at=10)
    ticks = _Ticks()
    hist = fit(model, mnist_small, TrainConfig(steps=50, batch_size=32, log_every=5), callbacks=[ticks])
    assert hist.status == "diverged"
    assert hist.step == 5 and "restored from step 5" in hist.message
    _assert_weights_equal(model, ticks.states[0])


def test_huge_learning_rate_diverges_cleanly(mnist_small):
    """One Adam step of size ~1e12 makes the encoder's scale overflow (exp of a huge log-variance); that must
    end as "diverged" with the last good weights, not as an exception from torch.distributions."""
    model = _model("vae")
    init = copy.deepcopy(model.state_dict())
    ticks = _Ticks()
    hist = fit(model, mnist_small, TrainConfig(steps=200, batch_size=32, log_every=2, lr=1e12), callbacks=[ticks])
    assert hist.status == "diverged", hist.message
    assert "NaN or infinite" in hist.message and f"restored from step {hist.step}" in hist.message
    _assert_weights_equal(model, ticks.states[-1] if ticks.states else init)
    assert all(math.isfinite(v) for r in hist.records for v in r.values())


# ---------------------------------------------------------------- config validation
@pytest.mark.parametrize("kw,msg", [
    (dict(steps=0), "steps must be >= 1"),
    (dict(steps=-5), "steps must be >= 1"),
    (dict(epochs=0), "epochs must be a finite number > 0"),
    (dict(epochs=-1.0), "epochs must be a finite number > 0"),
    (dict(epochs=float("nan")), "epochs"),
    (dict(epochs=float("inf")), "epochs"),
    (dict(batch_size=0), "batch size"),
    (dict(lr=0.0), "learning rate"),
    (dict(lr=-1e-3), "learning rate"),
    (dict(lr=float("nan")), "learning rate"),
    (dict(lr=float("inf")), "learning rate"),
    (dict(device="tpu"), "device"),
    (dict(log_every=0), "log_every"),
    (dict(grad_clip=-1.0), "grad_clip"),
    (dict(grad_clip=0.0), "grad_clip"),
    (dict(grad_clip=float("nan")), "grad_clip"),
])
def test_train_config_rejects_bad_values(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        TrainConfig(**kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_train_config_cuda_without_gpu():
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        TrainConfig(device="cuda")


def test_grad_clip_bounds_the_update(mnist_small):
    """With grad_clip the gradient norm the optimiser sees is at most the bound (recomputed in a spy on Adam.step;
    an untrained VAE's gradient norm is far above 0.5, so the clip is active)."""
    model = _model("vae")
    norms = []
    orig = torch.optim.Adam.step

    def spy(self, *a, **k):
        g = torch.cat([p.grad.flatten() for grp in self.param_groups for p in grp["params"] if p.grad is not None])
        norms.append(g.norm().item())
        return orig(self, *a, **k)

    torch.optim.Adam.step = spy
    try:
        fit(model, mnist_small, TrainConfig(steps=3, batch_size=32, grad_clip=0.5))
    finally:
        torch.optim.Adam.step = orig
    assert len(norms) == 3 and max(norms) <= 0.5 * (1 + 1e-5)


# ---------------------------------------------------------------- TrainingJob
def test_training_job_runs_in_a_thread_and_saves(mnist_small, tmp_path):
    data = mnist_small.subset(256, 64)
    model = _model("bs_vae")
    job = TrainingJob(model, data, TrainConfig(steps=12, batch_size=32, log_every=4), n_preview=8, au_images=64)
    assert job.snapshot()["status"] == "running" and job.snapshot()["records"] == []
    job.start()
    job.join(120)
    assert not job.alive and job.error is None
    snap = job.snapshot()
    assert snap["status"] == "finished" and snap["step"] == 12 and snap["total_steps"] == 12
    assert snap["paused"] is False and snap["device"] == "cpu"
    assert [r["step"] for r in snap["records"]] == [4, 8, 12]
    for r in snap["records"]:
        assert all(math.isfinite(v) for v in r.values())
        assert r["au"] == int(r["au"]) and 0 <= r["au"] <= 4
    pv = snap["previews"]
    assert pv["samples"].shape == (8, 1, 28, 28) and pv["recon"].shape == (4, 1, 28, 28)
    assert 0 <= pv["samples"].min() and pv["samples"].max() <= 1
    assert torch.equal(pv["original"], to_float(data.x_test[:4]))
    # the last tick is the last step, so previews show the final weights
    torch.testing.assert_close(pv["recon"], model.reconstruct(pv["original"]), rtol=1e-5, atol=1e-6)
    assert snap["records"][-1]["au"] == evaluate(model, data.x_test[:64])["au"]

    run = job.save(tmp_path / "run")
    loaded, info = load_run(run)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    assert info["model"] == "bs_vae" and info["train"]["steps"] == 12
    assert info["dataset"]["name"] == "mnist"
    assert len(info["history"]["records"]) == 3 and info["history"]["status"] == "finished"
    ref = evaluate(loaded, data.x_test, data.y_test)
    assert info["metrics"]["neg_elbo"] == pytest.approx(ref["neg_elbo"], rel=1e-6)
    assert math.isfinite(info["metrics"]["neg_elbo"])


def test_training_job_matches_plain_fit(mnist_small):
    """Previews and the AU evaluation at each tick must not perturb training (evaluate forks the RNG): a job
    ends with exactly the weights of a plain fit with the same seed."""
    data = mnist_small.subset(256, 64)
    cfg = TrainConfig(steps=8, batch_size=32, log_every=2, seed=5)
    plain = _model("sigma_vae", seed=1)
    fit(plain, data, cfg)
    job = TrainingJob(_model("sigma_vae", seed=1), data, cfg, n_preview=4, au_images=32).start()
    job.join(120)
    assert job.snapshot()["status"] == "finished"
    for k, v in plain.state_dict().items():
        assert torch.equal(job.model.state_dict()[k], v), k


def test_training_job_pause_step_stop(mnist_small, teardown_stop):
    data = mnist_small.subset(256, 64)
    job = TrainingJob(_model("vae"), data, TrainConfig(steps=10**6, batch_size=16, log_every=1000),
                      n_preview=4, au_images=32)
    teardown_stop.append(job)
    job.pause()
    job.start()
    time.sleep(0.2)
    assert job.snapshot()["step"] == 0 and job.snapshot()["paused"]
    job.step(2)
    _wait_for(lambda: len(job.snapshot()["records"]) == 2, what="two single steps")
    snap = job.snapshot()
    assert snap["step"] == 2 and snap["paused"] and "samples" in snap["previews"]
    # between two log ticks the snapshot's step is the true count, ahead of the last record (the tick every 1000)
    job.resume()
    _wait_for(lambda: job.history.steps_done >= 5, what="a few steps past the last tick")
    job.pause()
    _wait_for(lambda: job.control.parked, what="the worker to park")
    snap = job.snapshot()
    assert snap["step"] == job.history.steps_done >= 5 and snap["records"][-1]["step"] == 2
    assert f"step {snap['step']:,} of" in snap["text"]
    job.step(1)  # one step: the count moves by exactly one, and it is logged at once
    _wait_for(lambda: len(job.snapshot()["records"]) == 3, what="the single step's record")
    after = job.snapshot()
    assert after["step"] == snap["step"] + 1 == after["records"][-1]["step"]
    job.stop()
    job.join(30)
    assert not job.alive and job.snapshot()["status"] == "stopped"


# ---------------------------------------------------------------- CUDA (skipped without a GPU; see conftest.py)
@pytest.mark.gpu
def test_fit_and_evaluate_on_cuda(mnist_small):
    """The CUDA path (fused Adam, data on the device): finite records, weights on the GPU, and deterministic metrics
    (rate: closed-form KL; mse: decoder at the encoder mean) equal to those of the same weights on the CPU."""
    model = _model("bs_vae")
    hist = fit(model, mnist_small, TrainConfig(steps=6, batch_size=32, log_every=3, device="cuda"))
    assert hist.status == "finished" and [r["step"] for r in hist.records] == [3, 6]
    assert all(math.isfinite(v) for r in hist.records for v in r.values())
    assert next(model.parameters()).device.type == "cuda"
    on_cpu = copy.deepcopy(model).cpu()
    a = evaluate(model, mnist_small.x_test[:64])
    b = evaluate(on_cpu, mnist_small.x_test[:64])
    assert a["rate"] == pytest.approx(b["rate"], rel=1e-4) and a["mse"] == pytest.approx(b["mse"], rel=1e-4)
    assert a["au"] == b["au"]


def test_training_job_extra_callbacks_publish_their_keys(mnist_small, tmp_path):
    """An extra callback (the way a live certificate plugs in) runs at every tick with the model in eval mode;
    the key it adds is in every snapshot record and in the saved history; on_end is forwarded."""
    data = mnist_small.subset(256, 64)
    model = _model("vae")

    class MeanNorm:
        ended = False

        def on_log(self, m, record, history):
            assert not m.training
            with torch.no_grad():
                record["mu_norm"] = m.encode(to_float(data.x_test[:16])).mean.pow(2).sum(1).mean().item()

        def on_end(self, m, history):
            MeanNorm.ended = True

    job = TrainingJob(model, data, TrainConfig(steps=8, batch_size=32, log_every=4), n_preview=4, au_images=32,
                      callbacks=[MeanNorm()]).start()
    job.join(120)
    recs = job.snapshot()["records"]
    assert [r["step"] for r in recs] == [4, 8] and MeanNorm.ended
    with torch.no_grad():  # the last tick is the last step: recompute the key from the final weights
        expected = model.encode(to_float(data.x_test[:16])).mean.pow(2).sum(1).mean().item()
    assert math.isclose(recs[-1]["mu_norm"], expected, rel_tol=1e-6)
    info = load_run(job.save(tmp_path / "run"))[1]
    assert [r["mu_norm"] for r in info["history"]["records"]] == [r["mu_norm"] for r in recs]


# ---------------------------------------------------------------- hooks the next families build on
def test_batch_sampler_when_the_batch_size_divides_the_data_size():
    """n = 96, batch 32: every epoch is exactly three disjoint batches covering all 96 items once, then a reshuffle
    (no empty or short batch at the boundary, no item skipped)."""
    data = _unique_images(96)
    model = _instrumented("vae")
    fit(model, data, TrainConfig(steps=12, batch_size=32, log_every=5))
    ids = [_ids(b) for b in model.batches]
    assert len(ids) == 12 and all(len(i) == 32 for i in ids)
    epochs = [sum(ids[3 * e : 3 * e + 3], []) for e in range(4)]
    assert all(sorted(e) == list(range(96)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 4  # each epoch in a new order


class _ExtrasProbe(MODELS["vae"].model_cls):
    """Checks, at every step, that the per-item extras it is handed belong to the images of its batch: the extra
    'id' is each image's index, which the image also carries in its first two pixels."""

    def item_terms(self, x, y=None, extras=None):
        ids = (x[:, 0, 0, :2] * 255).round().long()
        self.checked.append(torch.equal(extras["id"], ids[:, 0] * 256 + ids[:, 1]))
        terms = super().item_terms(x, y, extras)
        terms["loss"] = terms["loss"] * extras["weight"]  # a per-item weight, as a class-balanced loss would use
        return terms


def test_per_item_extras_travel_with_the_batch():
    data = _unique_images(100)
    data.extras_train = {"id": torch.arange(100), "weight": torch.linspace(0.5, 1.5, 100)}
    data.extras_test = {"id": torch.arange(20), "weight": torch.ones(20)}
    model = _ExtrasProbe(build_model("vae", **SMALL).config)
    model.checked = []
    fit(model, data, TrainConfig(steps=7, batch_size=16, log_every=3))
    assert len(model.checked) == 7 and all(model.checked)
    model.checked = []
    evaluate(model, data.x_test, data.y_test, extras=data.extras_test, batch_size=8)  # test split, same slicing
    assert len(model.checked) == 3 and all(model.checked)
    with pytest.raises(Exception, match="extra 'id' has 5 train items for 100 images"):
        Dataset("toy", data.x_train, data.y_train, data.x_test, data.y_test, 10, [], extras_train={"id": torch.ones(5)})
    # subset and select keep extras aligned with the images
    sub = data.select(torch.tensor([7, 3, 50]))
    assert sub.extras_train["id"].tolist() == [7, 3, 50] and _ids(to_float(sub.x_train)) == [7, 3, 50]


class _SetupProbe(MODELS["vae"].model_cls):
    """A family that looks at the data once: it stores the training-set mean image in a buffer."""

    def __init__(self, config):
        super().__init__(config)
        self.register_buffer("data_mean", torch.zeros(config.image_shape))
        self.setups = 0

    def setup(self, data):
        self.setups += 1
        self.data_mean.copy_(to_float(data.x_train).mean(0))


def test_setup_runs_once_before_training_and_its_buffer_is_state(mnist_small):
    model = _SetupProbe(build_model("vae", **SMALL).config)
    fit(model, mnist_small, TrainConfig(steps=3, batch_size=32, log_every=3))
    assert model.setups == 1
    torch.testing.assert_close(model.data_mean, to_float(mnist_small.x_train).mean(0))
    assert "data_mean" in model.state_dict()  # so safetensors saves it and a reload needs no data
    h = History(step=3)  # a continued run (history past step 0) does not redo its setup
    fit(model, mnist_small, TrainConfig(steps=5, batch_size=32, log_every=5), history=h)
    assert model.setups == 1


class _TwoPhase(MODELS["vae"].model_cls):
    """First fit the decoder alone to the distortion, then everything to the loss (a two-stage scheme)."""

    def phases(self):
        from cvae_core.models.base import Phase

        return [Phase("decoder", 0.25, params=("decoder.",), objective="rec"), Phase("joint", 0.75)]


def test_phases_train_their_parameter_groups_in_order(mnist_small):
    model = _TwoPhase(build_model("vae", **SMALL).config)
    enc0 = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("encoder.", "enc_head."))}
    ticks = _Ticks()
    hist = fit(model, mnist_small, TrainConfig(steps=12, batch_size=32, log_every=2), callbacks=[ticks])
    # the decoder phase has 3 of the 12 steps; its last record is flushed at the switch, so no record mixes phases
    assert [r["step"] for r in hist.records] == [2, 3, 4, 6, 8, 10, 12]
    assert [r["phase"] for r in hist.records] == ["decoder"] * 2 + ["joint"] * 5
    at_switch = ticks.states[1]  # the tick that closed the decoder phase (step 3)
    assert ticks.records[1]["step"] == 3
    for k, v in enc0.items():  # the encoder was frozen in phase 1 ...
        assert torch.equal(at_switch[k], v), k
    assert any(not torch.equal(at_switch[k], v) for k, v in model.state_dict().items() if k.startswith("decoder."))
    assert any(not torch.equal(model.state_dict()[k], v) for k, v in enc0.items())  # ... and trained in phase 2
    assert all(p.requires_grad for p in model.parameters())  # freezing is undone afterwards
    assert hist.phase == "joint"


def test_phase_plan_shares_the_steps():
    from cvae_core.models.base import Phase
    from cvae_core.train import phase_plan

    assert phase_plan([Phase("a")], 10) == [(0, 10)]
    assert phase_plan([Phase("a", 0.25), Phase("b", 0.75)], 12) == [(0, 3), (3, 12)]
    assert phase_plan([Phase("a", 1), Phase("b", 1), Phase("c", 2)], 8) == [(0, 2), (2, 4), (4, 8)]
    # every phase with a share gets at least one step when there are enough steps (rounding alone would skip it)
    assert phase_plan([Phase("a", 0.1), Phase("b", 0.9)], 4) == [(0, 1), (1, 4)]
    assert phase_plan([Phase("a", 0.02), Phase("b", 0.98)], 20) == [(0, 1), (1, 20)]
    assert phase_plan([Phase("a", 0.98), Phase("b", 0.02)], 20) == [(0, 19), (19, 20)]
    assert phase_plan([Phase("a", 0.5), Phase("b", 0.5)], 1) == [(0, 0), (0, 1)]  # one step: the last phase
    assert phase_plan([Phase("a", 0.0), Phase("b", 1.0)], 8) == [(0, 0), (0, 8)]  # no share, no steps
    for bad in ([Phase("a", 0.0)], [Phase("a", -0.5), Phase("b", 1.5)], [Phase("a", float("nan"))]):
        with pytest.raises(ConfigError, match="fractions >= 0"):
            phase_plan(bad, 5)


def test_phase_parameter_groups_match_whole_names():
    """A prefix names a module, not the start of a string: "encoder" takes encoder.* but not enc_head.*; a bare
    string instead of a tuple is refused (it would be read as a tuple of letters)."""
    from cvae_core.models.base import Phase
    from cvae_core.train import _phase_params

    model = _model("vae")
    got = {id(p) for p in _phase_params(model, Phase("e", params=("encoder",)))}
    names = {n for n, p in model.named_parameters() if id(p) in got}
    assert names == {n for n, _ in model.named_parameters() if n.startswith("encoder.")} and names
    both = {n for n, p in model.named_parameters()
            if id(p) in {id(q) for q in _phase_params(model, Phase("e", params=("encoder.", "enc_head")))}}
    assert both == names | {"enc_head.weight", "enc_head.bias"}
    with pytest.raises(ConfigError, match="params must be a tuple"):
        Phase("e", params="encoder")


def test_save_while_training_holds_the_worker_and_reloads_exactly(mnist_small, tmp_path):
    """Save during training evaluates with seeded noise from torch's global stream, which the worker uses too: it
    holds the worker between two steps meanwhile, so the saved check numbers are reproduced after a reload, and
    training goes on afterwards."""
    from cvae_core.eval.likelihood import check_numbers

    job = TrainingJob(_model("sigma_vae"), mnist_small, TrainConfig(steps=100_000, batch_size=32, log_every=5),
                      n_preview=4, au_images=32).start()
    try:
        _wait_for(lambda: len(job.snapshot()["records"]) >= 2, what="two log ticks")
        run = job.save(tmp_path / "run")
        before = job.snapshot()["step"]
        _wait_for(lambda: job.snapshot()["step"] > before, what="training to go on after Save")
        assert not job.snapshot()["paused"]
    finally:
        job.stop()
        job.join(30)
    # recomputed with the worker gone (a recomputation beside a running worker would interleave as Save did)
    model, info = load_run(run)
    again = check_numbers(model, mnist_small)
    for k, v in info["check"].items():
        assert again[k] == pytest.approx(v, rel=1e-6), k


def test_training_job_hands_encoder_means_to_callbacks_and_previews_rows_per_class(mnist_small):
    """on_means gets the encoder means of the job's test images, computed once per tick (equal to a fresh
    computation with the tick's weights); a conditional model's previews are one row per class, same noise per row."""
    from cvae_core.eval.likelihood import encoder_means

    data = mnist_small.subset(256, 64)
    model = build_model("cvae", seed=0, **SMALL)
    got = []

    class Means:
        def on_means(self, m, record, means, labels):
            got.append((record["step"], means.clone(), labels.clone(), encoder_means(m, data.x_test[:48],
                                                                                     data.y_test[:48])))

    job = TrainingJob(model, data, TrainConfig(steps=6, batch_size=32, log_every=3), au_images=48,
                      preview_per_class=3, callbacks=[Means()]).start()
    job.join(120)
    assert [g[0] for g in got] == [3, 6]
    for _, means, labels, fresh in got:
        assert means.shape == (48, 4) and torch.equal(labels, data.y_test[:48])
        torch.testing.assert_close(means, fresh)
    p = job.snapshot()["previews"]
    assert p["samples"].shape == (30, 1, 28, 28) and p["sample_classes"].tolist() == [k for k in range(10)
                                                                                     for _ in range(3)]
    clone, step = job.model_at_tick()
    assert step == 6 and not clone.training
    eps = job._z
    torch.testing.assert_close(p["samples"], clone.sample(30, p["sample_classes"], eps=eps))
    torch.testing.assert_close(eps[:3], eps[3:6])  # the same noise in every class row
