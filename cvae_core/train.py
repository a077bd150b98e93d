"""The training engine: ``fit(model, data, config, callbacks, control) -> History``. No UI code.

- The whole data set lives on the training device as uint8; batches are index slices (no DataLoader).
- Loss terms accumulate on the device and are read (one host sync) every ``log_every`` steps.
- ``TrainControl`` lets another thread pause, resume, single-step and stop the loop.
- A NaN/inf loss stops training with a clear message and restores the weights of the last good log tick.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from .data import Dataset
from .errors import ConfigError


@dataclass
class TrainConfig:
    epochs: float = 2.0  # passes over the training set (ignored when steps is set)
    steps: int | None = None  # exact number of optimiser steps; overrides epochs
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0  # seeds batch order and the reparameterisation noise
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"
    log_every: int = 50  # steps between metric snapshots (one host sync each)
    grad_clip: float | None = None  # max gradient norm, None = off

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"steps must be >= 1 (got {self.steps})")
        if self.steps is None and not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise ConfigError(f"epochs must be a finite number > 0 (got {self.epochs})")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1 (got {self.batch_size})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate must be a finite number > 0 (got {self.lr})")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda (got {self.device!r})")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device cuda was asked for but no CUDA GPU is available (use --device auto or cpu)")
        if self.log_every < 1:
            raise ConfigError(f"log_every must be >= 1 (got {self.log_every})")
        if self.grad_clip is not None and not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            # a negative max-norm would flip the gradient's sign in clip_grad_norm_ (ascent); 0 or NaN zero it
            raise ConfigError(f"grad_clip must be a finite number > 0 or None for off (got {self.grad_clip})")

    def total_steps(self, n_train: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * math.ceil(n_train / self.batch_size)))


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class History:
    """Metric records (one per log tick) plus how the run ended."""

    records: list[dict[str, float]] = field(default_factory=list)
    status: str = "running"  # running | finished | stopped | diverged
    message: str = ""
    step: int = 0
    total_steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainControl:
    """Thread-safe pause / resume / step / stop for a running ``fit``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paused = False
        self._stop = False
        self._step_tokens = 0

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopped(self) -> bool:
        return self._stop

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def step(self, n: int = 1) -> None:
        """While paused: run exactly n more optimiser steps, then pause again."""
        with self._cond:
            self._paused = True
            self._step_tokens += n
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def wait(self) -> tuple[bool, bool]:
        """Block while paused. Returns (go, single_step): go False means stop."""
        with self._cond:
            while self._paused and not self._stop and self._step_tokens == 0:
                self._cond.wait(timeout=0.5)
            if self._stop:
                return False, False
            if self._paused:
                self._step_tokens -= 1
                return True, True
            return True, False


class Callback(Protocol):
    """All hooks optional; they run in the training thread and must not touch UI code.

    on_log(model, record, history): after each log tick (record = averaged terms since the last tick).
    on_end(model, history): once, whatever the outcome.
    """


def _call(callbacks, hook: str, *args) -> None:
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(*args)


def fit(model: torch.nn.Module, data: Dataset, config: TrainConfig, callbacks=(),
        control: TrainControl | None = None, history: History | None = None) -> History:
    """Train `model` on `data.x_train` (uint8) with Adam; returns the History. See the module docstring."""
    device = resolve_device(config.device)
    control = control or TrainControl()
    history = history if history is not None else History()
    torch.manual_seed(config.seed)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)

    model.to(device).train()
    x_all = data.x_train.to(device)  # (N, C, H, W) uint8, whole set on the device
    y_all = data.y_train.to(device)
    n = len(x_all)
    bs = min(config.batch_size, n)
    total = config.total_steps(n)
    history.total_steps = total
    fused = device.type == "cuda"
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, fused=fused)

    good_state = copy.deepcopy(model.state_dict())
    sums: dict[str, torch.Tensor] = {}
    window = 0
    perm = torch.randperm(n, generator=gen).to(device)
    pos = 0
    t0 = time.perf_counter()
    step = history.step

    def weights_finite() -> bool:
        return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())

    def diverge(at: int) -> None:
        model.load_state_dict(good_state)
        history.status = "diverged"
        history.message = (f"loss became NaN or infinite between steps {history.step} and {at}; "
                           f"weights restored from step {history.step}. Try a lower learning rate.")

    def flush(force_step: int) -> bool:
        """Read accumulated terms (one host sync); False if non-finite."""
        nonlocal sums, window, good_state
        if window == 0:
            return True
        rec = {k: (v / window).item() for k, v in sums.items()}
        if not all(math.isfinite(v) for v in rec.values()) or not weights_finite():
            return False  # a finite loss with a NaN gradient leaves NaN weights: that tick is not good either
        rec.update(step=force_step, epoch=force_step * bs / n, time=time.perf_counter() - t0)
        history.records.append(rec)
        history.step = force_step
        good_state = copy.deepcopy(model.state_dict())
        sums, window = {}, 0
        _call(callbacks, "on_log", model, rec, history)
        return True

    try:
        while step < total:
            go, single = control.wait()
            if not go:
                history.status, history.message = "stopped", f"stopped by the user at step {step}"
                break
            if pos + bs > n:
                perm = torch.randperm(n, generator=gen).to(device)
                pos = 0
            idx = perm[pos : pos + bs]
            pos += bs
            x = model.prepare_batch(x_all[idx])
            terms = model.loss(x, y_all[idx])  # models build distributions with validate_args=False: no sync
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            opt.step()
            step += 1
            for k, v in terms.items():
                v = v.detach()
                sums[k] = sums[k] + v if k in sums else v.clone()
            window += 1
            if step % config.log_every == 0 or step == total or single:
                if not flush(step):
                    diverge(step)
                    break
        else:
            history.status, history.message = "finished", f"finished {total} steps"
        if history.status == "stopped" and not flush(step):
            diverge(step)
    finally:
        if history.status == "running":  # an exception escaped the loop
            history.status = "failed"
        model.eval()
        _call(callbacks, "on_end", model, history)
    return history
