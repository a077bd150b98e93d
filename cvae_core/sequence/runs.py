"""Run folders of the sequence CVAE and of its base model: train, save (atomically), load, evaluate.

- A base model folder is a ``transformers`` folder (``save_pretrained``: config.json + model.safetensors) plus
  ``base_info.json`` (the task it was trained on, its loss curve, its test loss and the command).
- A sequence run folder holds ``config.json`` (``{"model": "seq_cvae", "config", "task", "data", "train",
  "base_config", "base_source"}``), ``weights.safetensors`` (the base weights once, under ``base.``, then every
  tensor of the CVAE that is not a frozen copy of them: LoRA adapters, heads, latent embeddings, fully trained
  backbones), ``history.json`` and ``metrics.json``. It needs nothing else to load: the base travels with it.
- The shipped ones live in ``checkpoints/strategies/`` (``base``, ``discrete``, ``continuous``), out of the image
  pages' way.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import torch

from cvae_core.data.strategies import StrategyTask, Vocab, make_split
from cvae_core.errors import CheckpointError, ConfigError, LabError
from cvae_core.io import write_json
from cvae_core.runs.folder import is_sequence_run, read_run_info, write_run_folder
from cvae_core.sequence.lm import BaseLMConfig, build_base_lm, load_base_lm, nats_per_answer, train_base_lm
from cvae_core.sequence.model import SeqCVAE, SeqCVAEConfig
from cvae_core.sequence.train import fit_seq

MODEL = "seq_cvae"
WEIGHTS = "weights.safetensors"
SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints" / "strategies"
DEFAULT_BASE = SHIPPED / "base"
DATA = {"n_train": 20_000, "n_test": 2_000, "seed": 0}  # the split every shipped model uses


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


# ---------------------------------------------------------------------------------------------------- base model
def train_base(task: StrategyTask, config: BaseLMConfig | None = None, *, steps: int = 3000, batch_size: int = 64,
               lr: float = 3e-3, seed: int = 0, device: str = "cpu", progress=None):
    """(model, info): a base LM trained on the task's training split, with its test loss and the entropy floor."""
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
        model = lm
        if weights_dtype == "float16":
            import copy

            model = copy.deepcopy(lm).half()
        model.save_pretrained(tmp)
        write_json(tmp / "base_info.json", {**info, "weights_dtype": weights_dtype})

    return write_run_folder(dest, write)


def load_base(path: str | Path | None = None):
    """(model in float32 eval mode, base_info dict or {}) from a transformers folder; the shipped base by default."""
    path = Path(path) if path is not None else DEFAULT_BASE
    lm = load_base_lm(path, Vocab()).float().eval()
    p = path / "base_info.json"
    info = json.loads(p.read_text()) if p.is_file() else {}
    return lm, info


# ---------------------------------------------------------------------------------------------------- CVAE runs
def _frozen_keys(model: SeqCVAE) -> set[str]:
    """State-dict names of the backbone copies' weights that never train (equal to the base's)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k for k in model.state_dict() if k.split(".")[0].endswith("_lm") and k not in trainable}


def save_seq_run(run_dir: str | Path, model: SeqCVAE, base, *, task: StrategyTask, train: dict, history: list,
                 metrics: dict, base_source: str, weights_dtype: str = "float32") -> Path:
    from safetensors.torch import save_file

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
    from safetensors import SafetensorError
    from safetensors.torch import load_file
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
    try:
        state = load_file(str(run_dir / WEIGHTS), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{run_dir}/{WEIGHTS} is missing or corrupt ({e})") from None
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
                   kl_warmup: float = 0.5, device: str = "cpu", log_every: int = 50, n_test: int = 500,
                   n_control: int = 100, base_source: str = "shipped", weights_dtype: str = "float32", progress=None,
                   stopped=lambda: False, extra: dict | None = None) -> tuple[Path | None, dict | None]:
    """Train a SeqCVAE over a copy of `base` with ``fit_seq`` on the task's training split, measure it on the first
    `n_test` test pairs and save the run folder `out` (checked before any training). When `stopped()` is true after
    the training, nothing is measured or saved: (None, None). Otherwise (folder, metrics)."""
    from cvae_core.runs.folder import check_run_destination
    from cvae_core.sequence.metrics import sequence_metrics

    check_run_destination(out)
    train, test = splits(task)
    torch.manual_seed(seed)
    model = SeqCVAE(base.to(device), Vocab(), config).to(device)
    history = fit_seq(model, train, steps=steps, batch_size=batch_size, lr=lr, seed=seed, log_every=log_every,
                      kl_warmup=kl_warmup, warm_start=warm_start, progress=progress)
    if stopped():
        return None, None
    metrics = sequence_metrics(model, base, task, test, n=n_test, n_control=n_control)
    metrics.update(model=MODEL, latent=config.latent, steps=steps)
    record = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "warm_start": warm_start,
              "kl_warmup": kl_warmup, **(extra or {})}
    path = save_seq_run(out, model, base, task=task, train=record, history=history, metrics=metrics,
                        base_source=base_source, weights_dtype=weights_dtype)
    return path, metrics


class SeqTrainingJob:
    """``train_and_save`` in a background thread, over the base model in the folder `base_dir` and on its task (for
    the app). Read `progress`, `text`, `status` (running, done, stopped, error), `error` and `metrics`; `stop()` ends
    it after the current step, without saving (a Stop during the final measurement no longer cancels the save)."""

    def __init__(self, out: str | Path, config: SeqCVAEConfig, steps: int, base_dir: str | Path, *, seed: int = 0,
                 n_test: int = 200, n_control: int = 60):
        self.out, self.config, self.steps, self.base_dir = Path(out), config, steps, base_dir
        self.seed, self.n_test, self.n_control = seed, n_test, n_control
        self.progress, self.text = 0.0, "starting"
        self.status, self.error, self.metrics = "running", None, None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"seq-train-{self.out.name}")
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _progress(self, frac: float, text: str) -> None:
        self.progress, self.text = frac, text
        if self._stop.is_set():
            raise _Stopped
        if frac >= 1:
            self.text = f"{text}; measuring on {self.n_test} test pairs ..."

    def _run(self) -> None:
        try:
            base, base_info = load_base(self.base_dir)
            path, self.metrics = train_and_save(
                self.out, task_from(base_info.get("task")), self.config, base, steps=self.steps, seed=self.seed,
                log_every=10, n_test=self.n_test, n_control=self.n_control, progress=self._progress,
                stopped=self._stop.is_set, extra={"from": "Strategies page"})
            self.status, self.text = ("stopped", self.text) if path is None else ("done", f"saved to {path}")
        except _Stopped:
            self.status = "stopped"
        except LabError as e:
            self.status, self.error = "error", str(e)
        except Exception as e:  # noqa: BLE001 - a thread must report, not die silently
            self.status, self.error = "error", f"{type(e).__name__}: {e}"


class _Stopped(Exception):
    pass
