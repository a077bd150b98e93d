"""Training checkpoints that lose nothing: one safetensors file, ``checkpoint.safetensors``, in the folder a run will
be saved to, rewritten atomically every few steps while it trains.

It holds everything a killed run needs to continue to the same final weights: the model's weights (key prefix
``model.``), the optimiser's tensors (``optim.<param>.<name>``), the random streams and batch order of ``train.fit``
(``loop.<name>``), and, as JSON in the file's metadata, the optimiser's other state, the step and phase, the history
so far and a `spec`: what the caller needs to rebuild the same model on the same data (the CLI keeps its arguments
there, the Train page its setup). safetensors never executes code, so reading a checkpoint cannot run any.

A write goes to a temporary file beside it (``.checkpoint.safetensors.tmp-<hex>``), is flushed to the disk and then
renamed over the old one: a kill at any moment leaves the previous complete checkpoint (and perhaps a temporary file,
which is ignored and cleaned up by the next write). The final ``save_run`` replaces the whole folder, checkpoint
included, so a finished run carries no checkpoint.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from cvae_core.errors import CheckpointError
from cvae_core.integrity import safetensors_problem
from cvae_core.io import json_safe
from cvae_core.train import Checkpointing, History

CHECKPOINT = "checkpoint.safetensors"
FORMAT = "cvae-lab-checkpoint/1"
TMP_PREFIX = f".{CHECKPOINT}.tmp-"
LOOP_TENSORS = ("rng", "batch_rng", "perm", "cuda_rng")


def is_checkpoint_file(name: str) -> bool:
    """A file a checkpointing run leaves in its folder (the checkpoint, or a temporary file of a write cut short)."""
    return name == CHECKPOINT or name.startswith(TMP_PREFIX)


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, entries in state["state"].items():
        rest["state"][str(pid)] = {}
        for key, val in entries.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = val
            else:
                rest["state"][str(pid)][key] = val
    return tensors, rest


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict[str, Any]] = {int(pid): dict(vals) for pid, vals in rest["state"].items()}
    for name, val in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = val
    return {"state": state, "param_groups": rest["param_groups"]}


def write_checkpoint(folder: str | Path, model: torch.nn.Module, state: dict, spec: dict) -> Path:
    """Write `model`'s weights and a ``run_loop`` checkpoint `state` (with `spec`, JSON) to folder/CHECKPOINT,
    atomically. Returns the file's path; an OSError becomes one CheckpointError line."""
    folder = Path(folder)
    optim, optim_rest = _flatten_optimizer(state["optimizer"])
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(optim)
    tensors.update({f"loop.{k}": state[k] for k in LOOP_TENSORS if state.get(k) is not None})
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}  # no shared storage
    meta = {k: v for k, v in state.items() if k not in ("optimizer", *LOOP_TENSORS)}
    meta["optimizer"] = optim_rest
    metadata = {"format": FORMAT, "state": json.dumps(json_safe(meta), allow_nan=False),
                "spec": json.dumps(json_safe(spec), allow_nan=False)}
    path = folder / CHECKPOINT
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(TMP_PREFIX + "*"):  # a write cut short by a kill
            old.unlink(missing_ok=True)
        tmp = folder / f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}"
        data = save(tensors, metadata=metadata)  # bytes: save_file writes through a temp file of its own
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise CheckpointError(f"could not write the checkpoint {path}: {e.strerror or e}") from None
    return path


class Checkpoint:
    """A checkpoint read back: ``weights`` (the model's state_dict), ``state`` (for ``fit(resume=...)``),
    ``history`` (a ``train.History`` to continue) and ``spec``."""

    def __init__(self, weights: dict[str, torch.Tensor], state: dict, spec: dict, path: Path):
        self.weights, self.state, self.spec, self.path = weights, state, spec, path

    def load_weights(self, model: torch.nn.Module) -> None:
        """Put the checkpoint's weights into `model`; one CheckpointError line when they do not fit it."""
        try:
            model.load_state_dict(self.weights)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"{self.path}: its weights do not fit this model ({first})") from None

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def total_steps(self) -> int:
        return int(self.state["history"].get("total_steps", 0))

    @property
    def history(self) -> History:
        h = dict(self.state["history"])
        return History(records=list(h.get("records", [])), status="running", message="",
                       step=int(h.get("step", self.step)), total_steps=int(h.get("total_steps", 0)),
                       phase=str(h.get("phase", "")))


def read_checkpoint(folder: str | Path) -> Checkpoint:
    """Read folder/CHECKPOINT (safetensors: no code runs). One CheckpointError line when it is missing, not
    safetensors, truncated or not a checkpoint of this lab."""
    folder = Path(folder)
    path = folder / CHECKPOINT
    if not path.is_file():
        what = "no such folder" if not folder.exists() else f"no {CHECKPOINT} in it"
        raise CheckpointError(f"cannot resume {folder}: {what} (a run trained with --checkpoint-every N leaves one)")
    problem = safetensors_problem(path)
    if problem:
        raise CheckpointError(f"cannot resume from {path}: {problem}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no items())
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot resume from {path}: {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a training checkpoint of this lab (format {meta.get('format')!r})")
    try:
        state, spec = json.loads(meta["state"]), json.loads(meta["spec"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: its metadata is damaged ({e})") from None
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    optim = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    state["optimizer"] = _unflatten_optimizer(optim, state["optimizer"])
    for k in LOOP_TENSORS:
        state[k] = tensors.get(f"loop.{k}")
    return Checkpoint(weights, state, spec, path)


def checkpointing(folder: str | Path, model: torch.nn.Module, every: int, spec: dict,
                  after: Callable[[Path, dict], None] | None = None) -> Checkpointing:
    """A ``train.Checkpointing`` that writes `model` and the loop state to folder/CHECKPOINT every `every` steps;
    `after(path, state)` is called after each write (e.g. to show "checkpoint at step 400")."""

    def write(state: dict) -> None:
        path = write_checkpoint(folder, model, state, spec)
        if after is not None:
            after(path, state)

    return Checkpointing(every, write)


def checkpoint_summary(folder: str | Path) -> dict | None:
    """What a listing shows of folder/CHECKPOINT without reading its tensors: {"folder", "step", "total_steps",
    "spec", "mtime"}; None when there is none or it is damaged (those are not offered)."""
    path = Path(folder) / CHECKPOINT
    if not path.is_file() or safetensors_problem(path):
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state, spec = json.loads(meta["state"]), json.loads(meta["spec"])
        return {"folder": Path(folder), "step": int(state["step"]),
                "total_steps": int(state["history"].get("total_steps", 0)), "spec": spec,
                "mtime": path.stat().st_mtime}
    except (SafetensorError, OSError, KeyError, ValueError, TypeError):
        return None


def list_checkpoints(root: str | Path) -> list[dict]:
    """``checkpoint_summary`` of every folder under `root` holding a checkpoint, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [checkpoint_summary(d) for d in root.iterdir() if d.is_dir()]
    return sorted((s for s in found if s is not None), key=lambda s: -s["mtime"])
