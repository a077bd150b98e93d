"""Checkpoints that lose nothing (``cvae_core.runs.checkpoint``, ``fit(checkpoint=, resume=)``): a run continued from
any of its checkpoints ends with exactly the weights of the uninterrupted run (CPU, the same seed), for one phase
and across the phase boundary of a two-phase model; a damaged checkpoint is one clear line."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cvae_core.errors import CheckpointError, ConfigError
from cvae_core.registry import build_model
from cvae_core.runs.checkpoint import CHECKPOINT, TMP_PREFIX, checkpointing, read_checkpoint
from cvae_core.runs.folder import check_run_destination
from cvae_core.train import Checkpointing, TrainConfig, fit

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS = {"vae": dict(arch="mlp", hidden=32, latent_dim=4),
          "flow_cvae": dict(arch="mlp", hidden=32, latent_dim=4, two_stage=True, prior_fraction=0.5)}


def _train(name, data, folder, steps=24, every=6, resume_from=None, keep=None):
    """Train `name` for `steps` steps, checkpointing every `every` into `folder`; `keep(step)` copies the checkpoint
    of that step aside. With `resume_from` (a folder), continue from its checkpoint instead of starting afresh."""
    cfg = TrainConfig(steps=steps, batch_size=32, log_every=4, seed=3, device="cpu")
    model = build_model(name, seed=3, **MODELS[name])

    def after(path, state):
        if keep is not None and state["step"] in keep:
            shutil.copy(path, keep[state["step"]])

    kw = {}
    if resume_from is not None:
        ck = read_checkpoint(resume_from)
        model.load_state_dict(ck.weights)
        kw = {"resume": ck.state, "history": ck.history}
    hist = fit(model, data, cfg, checkpoint=checkpointing(folder, model, every, {"name": name}, after=after), **kw)
    return model, hist


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", list(MODELS))
def test_a_run_resumed_from_any_checkpoint_ends_with_the_uninterrupted_weights(name, mnist, tmp_path):
    data = mnist.subset(200, 64)  # 200 / 32: a new batch order (the generator's next permutation) after 6 steps
    keep = {s: tmp_path / f"kept{s}" for s in (6, 12, 18)}  # 12: the two-phase model's boundary (50% of 24)
    for d in keep.values():
        d.mkdir()
    keep = {s: d / CHECKPOINT for s, d in keep.items()}
    full, hist = _train(name, data, tmp_path / "full", keep=keep)
    assert hist.status == "finished" and hist.step == 24
    end = read_checkpoint(tmp_path / "full")  # the last checkpoint is the finished run's
    assert end.step == 24 and all(torch.equal(end.weights[k], v) for k, v in full.state_dict().items())
    for step, path in keep.items():
        resumed, h2 = _train(name, data, tmp_path / f"resumed{step}", resume_from=path.parent)
        assert h2.status == "finished" and h2.step == 24
        assert _same_weights(full, resumed), f"{name} resumed at step {step} ended with other weights"
        # the history continues: the records up to the checkpoint, then the same ticks as the uninterrupted run
        assert [r["step"] for r in h2.records] == [r["step"] for r in hist.records]
        assert [r["loss"] for r in h2.records] == pytest.approx([r["loss"] for r in hist.records], rel=0, abs=0)
    if name == "flow_cvae":
        assert {r["phase"] for r in hist.records} == {"autoencoder", "prior"}


def test_without_the_optimiser_or_random_state_the_weights_differ(mnist, tmp_path):
    """The equality above is not vacuous: dropping the optimiser state (a fresh Adam) or the random streams changes
    the final weights."""
    data = mnist.subset(200, 64)
    (tmp_path / "k").mkdir()
    full, _ = _train("vae", data, tmp_path / "full", keep={12: tmp_path / "k" / CHECKPOINT})
    for spoil in ("optimizer", "rng"):
        ck = read_checkpoint(tmp_path / "k")
        model = build_model("vae", seed=3, **MODELS["vae"])
        model.load_state_dict(ck.weights)
        state = dict(ck.state)
        if spoil == "optimizer":
            state["optimizer"] = {"state": {}, "param_groups": state["optimizer"]["param_groups"]}
        else:
            state["rng"] = torch.manual_seed(99).get_state()
        fit(model, data, TrainConfig(steps=24, batch_size=32, log_every=4, seed=3, device="cpu"), resume=state,
            history=ck.history)
        assert not _same_weights(full, model), spoil


def test_bad_checkpoints_are_one_line(mnist, tmp_path):
    with pytest.raises(CheckpointError, match="no such folder"):
        read_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=f"no {CHECKPOINT} in it"):
        read_checkpoint(tmp_path / "empty")
    _train("vae", mnist.subset(200, 64), tmp_path / "run", steps=6, every=6)
    raw = (tmp_path / "run" / CHECKPOINT).read_bytes()
    (tmp_path / "run" / CHECKPOINT).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(tmp_path / "run")
    (tmp_path / "run" / CHECKPOINT).write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(CheckpointError, match="pickle"):
        read_checkpoint(tmp_path / "run")
    _train("vae", mnist.subset(200, 64), tmp_path / "ok", steps=6, every=6)
    other = build_model("vae", seed=3, arch="mlp", hidden=16, latent_dim=4)  # another width than the checkpoint's
    with pytest.raises(CheckpointError, match="its weights do not fit this model"):
        read_checkpoint(tmp_path / "ok").load_weights(other)
    with pytest.raises(ConfigError, match="checkpoint every must be an integer"):
        Checkpointing(0, print)


def test_a_folder_holding_only_a_checkpoint_may_become_the_run(mnist, tmp_path):
    _train("vae", mnist.subset(200, 64), tmp_path / "run", steps=6, every=3)
    (tmp_path / "run" / f"{TMP_PREFIX}abcd1234").write_bytes(b"cut short by a kill")
    assert check_run_destination(tmp_path / "run") == tmp_path / "run"
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not a run folder"):
        check_run_destination(tmp_path / "run")


def test_train_killed_with_sigkill_resumes_to_the_same_final_weights(tmp_path):
    """The command line as a user runs it: `train --checkpoint-every`, SIGKILL at a random moment after the first
    checkpoint (perhaps in the middle of writing one), `train --resume`: the saved run equals an uninterrupted one."""
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(repo), OMP_NUM_THREADS="1")
    args = [sys.executable, "-m", "cvae_core", "train", "--model", "vae", "--dataset", "mnist", "--steps", "600",
            "--batch-size", "32", "--latent-dim", "2", "--option", "arch=mlp", "--option", "hidden=32",
            "--n-per-class", "0", "--checkpoint-every", "50"]

    def run(*more):
        cmd = args[:4] + list(more) if more[0] == "--resume" else args + list(more)
        return subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)

    done = run("--out", "full")
    assert done.returncode == 0, done.stderr[-2000:]
    proc = subprocess.Popen(args + ["--out", "killed"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        while not (tmp_path / "killed" / CHECKPOINT).exists():
            assert proc.poll() is None and time.monotonic() - t0 < 120, "no checkpoint was written"
            time.sleep(0.05)
        time.sleep(random.uniform(0.0, 0.3))
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert (tmp_path / "killed" / CHECKPOINT).is_file(), sorted(p.name for p in (tmp_path / "killed").iterdir())
    step = read_checkpoint(tmp_path / "killed").step
    assert 50 <= step < 600 and not (tmp_path / "killed" / "model.safetensors").exists()
    bad = run("--resume", "killed", "--steps", "10")
    assert bad.returncode == 2 and "drop --steps" in bad.stderr
    resumed = run("--resume", "killed", "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming killed at step {step:,} of 600" in resumed.stderr
    full, again = (load_file(tmp_path / d / "model.safetensors") for d in ("full", "killed"))
    assert full.keys() == again.keys() and all(torch.equal(full[k], again[k]) for k in full)
    files = [sorted(p.name for p in (tmp_path / d).iterdir()) for d in ("full", "killed")]
    assert files[0] == files[1]  # the finished run replaced the folder: no checkpoint is left
    h_full = json.loads((tmp_path / "full" / "history.json").read_text())["records"]
    h_again = json.loads((tmp_path / "killed" / "history.json").read_text())["records"]
    assert [r["step"] for r in h_again] == [r["step"] for r in h_full]
    assert [r["loss"] for r in h_again] == [r["loss"] for r in h_full]
    recorded = [json.loads((tmp_path / d / "config.json").read_text())["command"] for d in ("full", "killed")]
    assert recorded[0].replace("--out full", "--out killed") == recorded[1]  # the command that started it
    assert recorded[1].startswith("python -m cvae_core train --model vae ") and "--resume" not in recorded[1]
    gone = run("--resume", "killed")  # a finished run has no checkpoint left
    assert gone.returncode == 2 and "no checkpoint.safetensors in it" in gone.stderr


def test_a_write_cut_short_leaves_only_files_a_resume_accepts(mnist, tmp_path, monkeypatch):
    """A kill between writing and renaming leaves the previous checkpoint and one temporary file of ours, both names
    that is_checkpoint_file accepts; the folder can still become the run, and the next write cleans the temporary
    file up. (The bytes are written by this module: safetensors' save_file writes through a temporary file of its own,
    which a SIGKILL in the real-process test once left behind.)"""
    from cvae_core.runs import checkpoint as ck_mod
    from cvae_core.runs.checkpoint import is_checkpoint_file

    _train("vae", mnist.subset(200, 64), tmp_path / "run", steps=6, every=3)
    model = build_model("vae", seed=3, **MODELS["vae"])
    state = dict(read_checkpoint(tmp_path / "run").state)

    def killed(*_):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(ck_mod.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        ck_mod.write_checkpoint(tmp_path / "run", model, state, {})
    monkeypatch.undo()
    names = [p.name for p in (tmp_path / "run").iterdir()]
    assert len(names) == 2 and all(is_checkpoint_file(n) for n in names), names
    assert read_checkpoint(tmp_path / "run").step == 6 and check_run_destination(tmp_path / "run")
    ck_mod.write_checkpoint(tmp_path / "run", model, state, {})
    assert [p.name for p in (tmp_path / "run").iterdir()] == [CHECKPOINT]
