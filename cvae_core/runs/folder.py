"""Run folders: ``config.json`` (model name, asdict(config), training config, data set, and the ``sha256`` of every
other file), ``model.safetensors`` (weights; safetensors never executes code) and ``metrics.json``, plus
``history.json`` (curves).

Saving writes a sibling temporary folder and renames it into place, so a crash never leaves a half-written run.
Loading rejects a pickle, a truncated or corrupt weights file, weights that do not match the hash recorded in
config.json, or a config that does not match its weights, with one clear line (``cvae_core.integrity``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cvae_core.errors import CheckpointError, ConfigError
from cvae_core.integrity import pickle_note, read_weights, record_hashes
from cvae_core.io import swap_into_place, write_json
from cvae_core.models.base import LatentModel
from cvae_core.registry import MODELS, build_model, make_config
from cvae_core.runs.checkpoint import is_checkpoint_file

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"


def check_run_destination(run_dir: str | Path) -> Path:
    """Raise CheckpointError unless `run_dir` can become a run folder: it must not exist, be an empty folder, be a
    run folder (which is then replaced) or hold only a training checkpoint (``runs.checkpoint``: the run being
    trained into it). Anything else a user may keep there is never deleted."""
    run_dir = Path(run_dir)
    if run_dir.resolve() in (Path.cwd().resolve(), *Path.cwd().resolve().parents):
        raise CheckpointError(f"{run_dir} is the current folder or above it; name a new folder for the run")
    if run_dir.exists():
        if not run_dir.is_dir():
            raise CheckpointError(f"{run_dir} exists and is a file; name a new folder for the run")
        others = [f for f in run_dir.iterdir() if not is_checkpoint_file(f.name)]
        if others and not (run_dir / "config.json").is_file():
            raise CheckpointError(f"{run_dir} exists and is not a run folder; refusing to replace its contents")
    parent = run_dir.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CheckpointError(f"cannot create {run_dir}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CheckpointError(f"cannot create {run_dir}: no write permission in {parent}")
    return run_dir


def model_name_of(model: LatentModel) -> str:
    for name, spec in MODELS.items():
        if type(model) is spec.model_cls and type(model.config) is spec.config_cls:
            return name
    raise CheckpointError(f"{type(model).__name__} is not in the registry")


def write_run_folder(run_dir: str | Path, write: Callable[[Path], None], record: str = "config.json") -> Path:
    """Create a run folder atomically: `write(tmp)` fills a sibling temporary folder, the SHA-256 of its files is
    recorded under the ``sha256`` key of its JSON file `record` (``integrity.record_hashes``), and the folder then
    replaces `run_dir` (only an empty folder or an earlier run folder is ever replaced: see check_run_destination).
    A failure leaves `run_dir` as it was; an OSError becomes one CheckpointError line."""
    run_dir = check_run_destination(run_dir)
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = run_dir.parent / f".{run_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as e:
        raise CheckpointError(f"cannot create {run_dir}: {e.strerror or e}") from None
    try:
        write(tmp)
        record_hashes(tmp, record)
        swap_into_place(tmp, run_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write the run to {run_dir}: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir


def save_run(run_dir: str | Path, model: LatentModel, *, train_config: Any = None, dataset: dict | None = None,
             metrics: dict | None = None, history: dict | None = None, check: dict | None = None,
             weights_dtype: str = "float32", command: str | None = None) -> Path:
    """Write the run folder atomically, replacing an existing *run* folder (never anything else: see
    check_run_destination). Returns the folder. `check` (``metrics.check_numbers``) goes to check.json;
    `weights_dtype="float16"` stores the floating-point parameters in half precision (loading casts them back);
    buffers (a teacher, class frequencies, witness directions) keep their precision.

    Example:
        >>> import tempfile, torch
        >>> from cvae_core import build_model, load_run, save_run
        >>> model = build_model("cvae", seed=0, latent_dim=4)
        >>> folder = save_run(tempfile.mkdtemp() + "/demo", model)
        >>> again, info = load_run(folder)
        >>> info["model"], info["config"]["latent_dim"]
        ('cvae', 4)
        >>> y = torch.arange(3)
        >>> torch.equal(again.decode(torch.zeros(3, 4), y), model.eval().decode(torch.zeros(3, 4), y))
        True
    """
    if weights_dtype not in ("float32", "float16"):
        raise CheckpointError(f"weights_dtype must be float32 or float16 (got {weights_dtype!r})")

    def write(tmp: Path) -> None:
        cfg = {"format_version": FORMAT_VERSION, "model": model_name_of(model),
               "config": dataclasses.asdict(model.config),
               "train": dataclasses.asdict(train_config) if dataclasses.is_dataclass(train_config) else train_config,
               "dataset": dataset or {}}
        if command is not None:  # the command line that made the run (the CLI records its own)
            cfg["command"] = command
        write_json(tmp / "config.json", cfg)
        halved = half_precision_keys(model) if weights_dtype == "float16" else set()
        state = {k: (v.half() if k in halved else v).detach().cpu().contiguous()
                 for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"weights_dtype": weights_dtype})
        write_json(tmp / "metrics.json", metrics or {})
        if check is not None:
            write_json(tmp / "check.json", check)
        if history is not None:
            write_json(tmp / "history.json", history)

    return write_run_folder(run_dir, write)


def read_run_info(run_dir: str | Path) -> dict:
    """config.json plus metrics.json (and history.json, check.json when present), without loading weights."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a run folder (it does not exist or is not a folder)")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{run_dir} has no config.json: not a run folder")
    try:
        info = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e})") from None
    if not isinstance(info, dict) or "model" not in info or "config" not in info:
        raise CheckpointError(f"{cfg_path} lacks the 'model' and 'config' keys")
    if not isinstance(info["model"], str) or not isinstance(info["config"], dict):
        raise CheckpointError(f"{cfg_path}: 'model' must be a name and 'config' an object of options "
                              f"(got {type(info['model']).__name__} and {type(info['config']).__name__})")
    for extra in ("metrics", "history", "check"):
        p = run_dir / f"{extra}.json"
        try:
            info[extra] = json.loads(p.read_text()) if p.is_file() else {}
        except json.JSONDecodeError:
            info[extra] = {}
    return info


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[LatentModel, dict]:
    """(model in eval mode, info dict: config.json with ``metrics``, ``history`` and ``check``). Never unpickles:
    weights come from safetensors, and a pickle where they should be is refused unread. A folder that is not a run,
    a truncated weights file, weights whose SHA-256 is not the one config.json records (when it records one), or
    weights that do not match the config, are one CheckpointError line.

    Example:
        >>> import pathlib, cvae_core
        >>> from cvae_core import load_run
        >>> model, info = load_run(pathlib.Path(cvae_core.__file__).parents[1] / "checkpoints" / "mnist_bs_vae")
        >>> info["model"], info["metrics"]["weights_dtype"], model.training
        ('bs_vae', 'float16', False)
        >>> load_run("no/such/run")
        Traceback (most recent call last):
        ...
        cvae_core.errors.CheckpointError: no/such/run is not a run folder (it does not exist or is not a folder)
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    name = info["model"]
    if name not in MODELS:
        raise CheckpointError(f"{run_dir}: unknown model {name!r} (this version knows {', '.join(MODELS)})")
    try:
        config = make_config(name, **info["config"])
    except ConfigError as e:
        raise CheckpointError(f"{run_dir}/config.json: {e}") from None
    wpath = run_dir / WEIGHTS
    if not wpath.is_file():
        raise CheckpointError(f"{run_dir} has no {WEIGHTS}{pickle_note(run_dir)}")
    state = read_weights(wpath, info.get("sha256"), run_dir / "config.json")
    model = build_model(name, config)
    state = model.upgrade_state(state)  # a tensor added since the run was saved
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape_bad = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shape_bad:
        parts = []
        if shape_bad:
            k = shape_bad[0]
            parts.append(f"{len(shape_bad)} tensors differ in shape (e.g. {k}: weights {tuple(state[k].shape)} "
                         f"vs config {tuple(own[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        raise CheckpointError(f"{run_dir}: config.json does not match the weights: " + "; ".join(parts))
    model.load_state_dict(state)  # copies into the model's own (float32) tensors: half-precision files load too
    return model.to(device).eval(), info


def half_precision_keys(model: torch.nn.Module) -> set[str]:
    """The state-dict keys that a float16 save rounds: the floating-point parameters. Buffers are statistics the
    numbers depend on exactly (RST-VAE's teacher and witness, a prior's class frequencies) and stay as they are."""
    return {k for k, v in model.named_parameters() if v.is_floating_point()}


def round_to_half(model: LatentModel) -> None:
    """Round the model's floating-point parameters to float16 and back, in place: the model then computes exactly
    what it will after a save with weights_dtype="float16" and a reload."""
    keys = half_precision_keys(model)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k in keys:
                v.copy_(v.half().to(v.dtype))


def is_sequence_run(run_dir: str | Path) -> bool:
    """Whether a folder's config.json names the sequence CVAE (``seq_cvae``)."""
    try:
        return json.loads((Path(run_dir) / "config.json").read_text()).get("model") == "seq_cvae"
    except (OSError, ValueError, AttributeError):
        return False  # a broken folder is listed, and its page says what is wrong with it
