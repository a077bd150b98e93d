"""Run folders of the sequence CVAE and of its base model: train, save (atomically), load, evaluate.

- A base model folder is a ``transformers`` folder (``save_pretrained``: config.json + model.safetensors) plus
  ``base_info.json`` (the task it was trained on, its loss curve, its test loss and the command, and the ``sha256``
  of every other file of the folder). It is read from safetensors only (``use_safetensors=True``): a
  ``pytorch_model.bin`` beside it is never unpickled.
- A sequence run folder holds ``config.json`` (``{"model": "seq_cvae", "config", "task", "data", "train",
  "base_config", "base_source"}``), ``weights.safetensors`` (the base weights once, under ``base.``, then every
  tensor of the CVAE that is not a frozen copy of them: LoRA adapters, heads, latent embeddings, fully trained
  backbones), ``history.json`` and ``metrics.json``; config.json records the ``sha256`` of the other files. It
  needs nothing else to load: the base travels with it.
- The shipped ones live in ``checkpoints/strategies/`` (``base``, ``discrete``, ``continuous``), out of the image
  pages' way.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import numbers
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from cvae_core.data.strategies import StrategySplit, StrategyTask, Vocab, make_split
from cvae_core.errors import CheckpointError, ConfigError, LabError
from cvae_core.integrity import pickle_note, read_weights
from cvae_core.io import write_json
from cvae_core.runs.folder import check_run_destination, is_sequence_run, read_run_info, write_run_folder
from cvae_core.runs.setup import build_run
from cvae_core.sequence.lm import BaseLMConfig, build_base_lm, load_base_lm, nats_per_answer, train_base_lm
from cvae_core.sequence.metrics import sequence_metrics
from cvae_core.sequence.model import SeqCVAE, SeqCVAEConfig
from cvae_core.sequence.train import fit_seq
from cvae_core.train import History, TrainConfig, TrainControl

MODEL = "seq_cvae"
WEIGHTS = "weights.safetensors"
BASE_INFO = "base_info.json"  # a base folder's own file (transformers' config.json is not ours): holds its record
SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "strategies"
DEFAULT_BASE = SHIPPED / "base"
DATA = {"n_train": 20_000, "n_test": 2_000, "seed": 0}  # the split every shipped model uses
HELDOUT = 500  # held-out pairs (neither training nor test) that training restarts are chosen on
RESTARTS = 1  # warm starts per run by default; the best on the held-out -ELBO goes on (fit_seq's restarts)


def task_from(d: dict | None) -> StrategyTask:
    d = dict(d or {})
    if "strategies" in d:
        d["strategies"] = tuple(d["strategies"])
    try:
        return StrategyTask(**d)
    except TypeError as e:
        raise ConfigError(f"bad task options: {e}") from None


def splits(task: StrategyTask, data: dict | None = None):
    d = {**DATA, **(data or {})}
    return make_split(task, n_train=int(d["n_train"]), n_test=int(d["n_test"]), seed=int(d["seed"]))


def heldout_pairs(task: StrategyTask, n: int = HELDOUT, data: dict | None = None) -> StrategySplit:
    """`n` pairs of the task outside both the training and the test split (their own seeded stream, inputs of
    neither): what training restarts are chosen on (``fit_seq``'s ``heldout``; its x and y only). The training split
    is left as it is, so a run with one restart trains on the same batches as before."""
    d = {**DATA, **(data or {})}
    train, test = splits(task, d)
    used = set(train.x) | set(test.x)
    rng = np.random.default_rng([int(d["seed"]), 7])  # a stream of its own: not the splits' seed
    xs, ks, ys = [], [], []
    for _ in range(100):
        if len(xs) >= n:
            break
        a, b, c = task.sample(n - len(xs), rng)
        for x, k, y in zip(a, b, c, strict=True):
            if x not in used:
                used.add(x)
                xs.append(x)
                ks.append(int(k))
                ys.append(y)
    if len(xs) < n:
        raise ConfigError(f"could not draw {n} held-out inputs outside the training and test sets")
    return StrategySplit(xs, np.array(ks, dtype=np.int64), ys, np.stack([task.weights(x) for x in xs]))


# ---------------------------------------------------------------------------------------------------- base model
def check_base_training(steps: int, batch_size: int, lr: float) -> None:
    """One-line ConfigError for a training budget ``train_base`` cannot use."""
    if not (isinstance(lr, numbers.Real) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"the base model's learning rate must be a finite number > 0 (got {lr!r})")
    for name, v in (("steps", steps), ("batch size", batch_size)):
        if not (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1):
            raise ConfigError(f"the base model's {name} must be an integer >= 1 (got {v!r})")


def train_base(task: StrategyTask, config: BaseLMConfig | None = None, *, steps: int = 3000, batch_size: int = 64,
               lr: float = 3e-3, seed: int = 0, device: str = "cpu", progress=None):
    """(model, info): a base LM trained on the task's training split, with its test loss and the entropy floor."""
    check_base_training(steps, batch_size, lr)
    vocab, config = Vocab(), config or BaseLMConfig()
    train, test = splits(task)
    lm = build_base_lm(vocab, config, seed=seed)
    curve = train_base_lm(lm, train, vocab, steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                          log_every=max(1, steps // 20), progress=progress)
    lm.cpu()
    mix = test.mixture
    floor = float(-(mix * torch.log(torch.from_numpy(mix).clamp_min(1e-12)).numpy()).sum(1).mean())
    info = {"task": dataclasses.asdict(task), "data": DATA, "config": dataclasses.asdict(config),
            "train": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed}, "curve": curve,
            "test_nats": nats_per_answer(lm, test, vocab), "floor_nats": floor}
    return lm, info


def save_base(lm, info: dict, dest: str | Path, weights_dtype: str = "float32") -> Path:
    def write(tmp: Path) -> None:
        model = copy.deepcopy(lm).half() if weights_dtype == "float16" else lm
        model.save_pretrained(tmp)
        write_json(tmp / BASE_INFO, {**info, "weights_dtype": weights_dtype})

    return write_run_folder(dest, write, record=BASE_INFO)


def load_base(path: str | Path | None = None):
    """(model in float32 eval mode, base_info dict or {}) from a transformers folder; the shipped base by default.
    Its safetensors weights are checked against the hashes base_info.json records (when it records them)."""
    path = Path(path) if path is not None else DEFAULT_BASE
    lm = load_base_lm(path, Vocab(), record=BASE_INFO).float().eval()
    p = path / BASE_INFO
    info = json.loads(p.read_text()) if p.is_file() else {}  # valid JSON: load_base_lm read its record
    return lm, info


# ---------------------------------------------------------------------------------------------------- CVAE runs
def _frozen_keys(model: SeqCVAE) -> set[str]:
    """State-dict names of the backbone copies' weights that never train (equal to the base's)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k for k in model.state_dict() if k.split(".")[0].endswith("_lm") and k not in trainable}


def save_seq_run(run_dir: str | Path, model: SeqCVAE, base, *, task: StrategyTask, train: dict, history: list,
                 metrics: dict, base_source: str, weights_dtype: str = "float32") -> Path:
    frozen = _frozen_keys(model)
    tensors = {f"base.{k}": v for k, v in base.state_dict().items()}
    tensors |= {k: v for k, v in model.state_dict().items() if k not in frozen}
    if weights_dtype == "float16":
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}  # tied tensors saved apart
    cfg = {"model": MODEL, "config": dataclasses.asdict(model.config), "task": dataclasses.asdict(task),
           "data": DATA, "train": train, "base_config": base.config.to_dict(), "base_source": base_source,
           "weights_dtype": weights_dtype}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS))
        write_json(tmp / "config.json", cfg)
        write_json(tmp / "history.json", history)
        write_json(tmp / "metrics.json", metrics)

    return write_run_folder(run_dir, write)


def load_seq_run(run_dir: str | Path, device: str | torch.device = "cpu"):
    """(SeqCVAE in eval mode, base LM, info) from a run folder; one-line CheckpointError for a broken folder."""
    from transformers import AutoConfig, AutoModelForCausalLM

    run_dir = Path(run_dir)
    if not is_sequence_run(run_dir):
        raise CheckpointError(f"{run_dir} is not a sequence CVAE run folder (no config.json naming {MODEL})")
    info = read_run_info(run_dir)  # config.json with metrics.json and history.json
    try:
        config = SeqCVAEConfig(**info["config"])
        task = task_from(info.get("task"))
        bcfg = dict(info["base_config"])
        base_cfg = AutoConfig.for_model(bcfg.pop("model_type"), **bcfg)
    except (LabError, TypeError, KeyError, ValueError) as e:
        raise CheckpointError(f"{run_dir}/config.json: {e}") from None
    wpath = run_dir / WEIGHTS
    if not wpath.is_file():
        raise CheckpointError(f"{run_dir} has no {WEIGHTS}{pickle_note(run_dir)}")
    state = read_weights(wpath, info.get("sha256"), run_dir / "config.json", damaged="is missing or corrupt")
    with torch.random.fork_rng(devices=[]):
        base = AutoModelForCausalLM.from_config(base_cfg).float()  # computes in float32 whatever dtype it was saved in
    prefix = "base."
    base_state = {k[len(prefix):]: v.float() for k, v in state.items() if k.startswith(prefix)}
    try:
        base.load_state_dict(base_state)
    except RuntimeError as e:
        raise CheckpointError(f"{run_dir}: the base weights do not match base_config "
                              f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e})") from None
    base.eval()
    with torch.random.fork_rng(devices=[]):
        model = SeqCVAE(base, Vocab(), config)
    own = {k: v.float() if v.is_floating_point() else v for k, v in state.items() if not k.startswith(prefix)}
    mine = model.state_dict()
    bad = sorted(k for k in own if k not in mine or own[k].shape != mine[k].shape)
    bad += sorted(set(mine) - set(own) - _frozen_keys(model))
    if bad:
        raise CheckpointError(f"{run_dir}: config.json does not match the weights (e.g. {bad[0]})")
    model.load_state_dict(own, strict=False)  # the rest are the frozen copies of the base, already in place
    info["task_obj"] = task
    return model.to(device).eval(), base.to(device), info


def train_and_save(out: str | Path, task: StrategyTask, config: SeqCVAEConfig, base, *, steps: int,
                   batch_size: int = 32, lr: float = 3e-3, seed: int = 0, warm_start: float = 0.3,
                   kl_warmup: float = 0.5, restarts: int = RESTARTS, device: str = "cpu", log_every: int = 50,
                   n_test: int = 500,
                   n_control: int = 100, base_source: str = "shipped", weights_dtype: str = "float32", progress=None,
                   control: TrainControl | None = None, history: History | None = None, callbacks=(),
                   extra: dict | None = None) -> tuple[Path | None, dict | None]:
    """Set up a SeqCVAE over a copy of `base` with the one pipeline (``runs.setup.build_run``), train it with
    ``fit_seq`` on the task's training split, measure it on the first `n_test` test pairs and save the run folder
    `out` (checked before any training). A run that did not finish (stopped through `control`, or diverged: see
    `history`) is neither measured nor saved: (None, None). Otherwise (folder, metrics). `restarts` > 1 runs that
    many warm starts and goes on with the one of lowest -ELBO on ``heldout_pairs`` (``fit_seq``); the train record
    then lists each restart's score (``restarts``, ``restart_scores``)."""
    check_run_destination(out)
    train, test = splits(task)
    tcfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, log_every=log_every, grad_clip=1.0)
    model = build_run(MODEL, task, dataclasses.asdict(config), tcfg, base=base.to(device)).model.to(device)
    log: list[dict] = []
    chosen = restarts > 1 and round(warm_start * steps) > 0
    history = fit_seq(model, train, steps=steps, batch_size=batch_size, lr=lr, seed=seed, log_every=log_every,
                      kl_warmup=kl_warmup, warm_start=warm_start, grad_clip=tcfg.grad_clip, restarts=restarts,
                      heldout=heldout_pairs(task) if chosen else None, restart_log=log, progress=progress,
                      control=control, history=history, callbacks=callbacks)
    if history.status != "finished":
        return None, None
    metrics = sequence_metrics(model, base, task, test, n=n_test, n_control=n_control)
    metrics.update(model=MODEL, latent=config.latent, steps=steps)
    record = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "warm_start": warm_start,
              "kl_warmup": kl_warmup, **(extra or {})}
    if chosen:
        record.update(restarts=restarts, restart_scores=[round(e["heldout_neg_elbo"], 6) for e in log],
                      restart_picked=next(e["restart"] for e in log if e["picked"]))
    path = save_seq_run(out, model, base, task=task, train=record, history=history.records, metrics=metrics,
                        base_source=base_source, weights_dtype=weights_dtype)
    return path, metrics
