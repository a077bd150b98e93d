"""The training engine: ``fit(model, data, config, callbacks, control) -> History``. No UI code.

- The whole data set lives on the training device as uint8; batches are index slices (no DataLoader).
- Loss terms accumulate on the device and are read (one host sync) every ``log_every`` steps.
- ``TrainControl`` lets another thread pause, resume, single-step and stop the loop.
- A NaN/inf loss stops training with a clear message and restores the weights of the last good log tick.
- Per-item extras of the data set (attributes, teacher probabilities, token masks) are sliced with the same batch
  index as x and passed to the model's loss.
- ``model.setup(data)`` runs once before the first step; ``model.phases()`` splits the steps into phases, each with
  a fresh Adam over its parameter group, minimising its own named term. Records name their phase.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch

from cvae_core.data import Dataset, check_labels
from cvae_core.errors import ConfigError, DataError

DEVICES = ("auto", "cpu", "cuda")  # "auto": CUDA when present
PRECISIONS = ("fp32", "bf16", "auto")  # "auto": bf16 where bf16_fast(device), fp32 elsewhere


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass
class TrainConfig:
    """How ``fit`` trains: a budget in epochs or exact steps, the batch, Adam's learning rate, the seed, the device.
    Bad values are one-line ConfigErrors.

    Example:
        >>> from cvae_core import TrainConfig
        >>> TrainConfig(steps=100).total_steps(60_000), TrainConfig(epochs=1, batch_size=100).total_steps(60_000)
        (100, 600)
        >>> TrainConfig(steps=0)
        Traceback (most recent call last):
        ...
        cvae_core.errors.ConfigError: steps must be >= 1 (got 0)
    """

    epochs: float = field(default=2.0, metadata={"help": "passes over the training set (ignored when steps is set)"})
    steps: int | None = field(default=None, metadata={"help": "exact number of optimiser steps; overrides epochs"})
    batch_size: int = field(default=128, metadata={"help": "training items (images) per optimiser step"})
    lr: float = field(default=1e-3, metadata={"help": "Adam's learning rate"})
    seed: int = field(default=0, metadata={"help": "seeds batch order and the reparameterisation noise"})
    device: str = field(default="auto", metadata={"help": '"auto" (CUDA when present), "cpu" or "cuda"',
                                                  "choices": DEVICES})
    log_every: int = field(default=50, metadata={"help": "steps between metric snapshots (one host sync each)"})
    grad_clip: float | None = field(default=None, metadata={"help": "max gradient norm, None = off"})
    precision: str = field(default="fp32", metadata={
        "help": 'fp32, or bf16: the loss under bfloat16 autocast (weights and Adam stay float32). Pays on CPUs with '
                'avx512_bf16 or AMX and on recent GPUs (bf16_fast() says); "auto" picks bf16 there',
        "choices": PRECISIONS})

    def __post_init__(self) -> None:
        if self.steps is not None:
            if not _is_int(self.steps):
                raise ConfigError(f"steps must be an integer >= 1, or None to count epochs (got {self.steps!r})")
            if self.steps < 1:
                raise ConfigError(f"steps must be >= 1 (got {self.steps})")
            self.steps = int(self.steps)
        if not _is_real(self.epochs) or (self.steps is None and not (self.epochs > 0 and math.isfinite(self.epochs))):
            raise ConfigError(f"epochs must be a finite number > 0 (got {self.epochs!r})")
        if not (_is_int(self.batch_size) and self.batch_size >= 1):
            raise ConfigError(f"batch size must be an integer >= 1 (got {self.batch_size!r})")
        if not (_is_real(self.lr) and self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"learning rate must be a finite number > 0 (got {self.lr!r})")
        if not (_is_int(self.seed) and 0 <= self.seed < 2**32):
            raise ConfigError(f"seed must be an integer in 0 .. 2^32-1 (got {self.seed!r})")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be auto, cpu or cuda (got {self.device!r})")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device cuda was asked for but no CUDA GPU is available (use --device auto or cpu)")
        if not (_is_int(self.log_every) and self.log_every >= 1):
            raise ConfigError(f"log_every must be an integer >= 1 (got {self.log_every!r})")
        if self.grad_clip is not None and not (_is_real(self.grad_clip) and self.grad_clip > 0
                                               and math.isfinite(self.grad_clip)):
            # a negative max-norm would flip the gradient's sign in clip_grad_norm_ (ascent); 0 or NaN zero it
            raise ConfigError(f"grad_clip must be a finite number > 0 or None for off (got {self.grad_clip!r})")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        self.epochs, self.lr = float(self.epochs), float(self.lr)  # numpy scalars would be saved as strings
        self.batch_size, self.seed, self.log_every = int(self.batch_size), int(self.seed), int(self.log_every)

    def total_steps(self, n_train: int) -> int:
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * math.ceil(n_train / self.batch_size)))


CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_info() -> tuple[str, tuple[str, ...]]:
    """The CPU's model name and which of CPU_BF16_FLAGS it has (Linux /proc/cpuinfo; ("", ()) elsewhere)."""
    try:
        lines = open("/proc/cpuinfo", encoding="utf-8").read().splitlines()
    except OSError:
        return "", ()
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    flags = set(next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), []))
    return name, tuple(f for f in CPU_BF16_FLAGS if f in flags)


def bf16_fast(device: torch.device) -> bool:
    """Whether bfloat16 arithmetic has hardware support here (detected, not assumed): a CUDA GPU that says so, or a
    CPU whose flags (Linux /proc/cpuinfo) name avx512_bf16 or amx_bf16. Elsewhere bf16 runs, but emulated and slower."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool(cpu_info()[1])


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
    step: int = 0  # the step of the last log tick (the records and the weights a job shows are from it)
    total_steps: int = 0
    steps_done: int = 0  # optimiser steps taken so far: set every step (no host sync), ahead of `step` between ticks
    phase: str = ""  # name of the training phase the last record belongs to

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainControl:
    """Thread-safe pause / resume / step / stop for a running ``fit``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._paused = False
        self._stop = False
        self._step_tokens = 0
        self._parked = False  # True while the training thread waits in wait() (between two steps)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopped(self) -> bool:
        return self._stop

    @property
    def parked(self) -> bool:
        """True while the training thread waits between two steps (paused): its step count no longer moves."""
        return self._parked

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

    @contextlib.contextmanager
    def hold(self, alive, timeout: float = 60.0):
        """Pause the training thread between two steps and wait (bounded) until it is parked there, for work that
        must not interleave with training (an evaluation that uses torch's global random stream); afterwards the
        previous paused/running state is restored. `alive()` says whether the training thread still runs."""
        with self._cond:
            was_paused, tokens = self._paused, self._step_tokens
            self._paused, self._step_tokens = True, 0
            deadline = time.monotonic() + timeout
            while alive() and not self._parked and not self._stop and time.monotonic() < deadline:
                self._cond.wait(timeout=0.05)
        try:
            yield
        finally:
            with self._cond:
                self._paused, self._step_tokens = was_paused, self._step_tokens + tokens
                self._cond.notify_all()

    def wait(self) -> tuple[bool, bool]:
        """Block while paused. Returns (go, single_step): go False means stop."""
        with self._cond:
            while self._paused and not self._stop and self._step_tokens == 0:
                self._parked = True
                self._cond.notify_all()
                self._cond.wait(timeout=0.5)
            self._parked = False
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


def phase_plan(phases, total: int) -> list[tuple[int, int]]:
    """[(first step, end step)] of each phase: shares of `total` by the phases' fractions; the last phase ends at
    `total`, and every phase gets at least one step when `total` allows (a short run still does its pre-fit)."""
    fr = [float(p.fraction) for p in phases]
    if not phases or sum(fr) <= 0 or min(fr) < 0 or not all(math.isfinite(f) for f in fr):
        raise ConfigError("training phases need fractions >= 0 that add up to more than 0 "
                          f"(got {[p.fraction for p in phases]})")
    ends, acc = [], 0.0
    for f in fr[:-1]:
        acc += f
        ends.append(round(total * acc / sum(fr)))
    ends.append(total)
    k = len(phases)
    for i in range(k - 1):  # at least one step each, when there are enough steps
        lo = (ends[i - 1] if i else 0) + (1 if fr[i] > 0 and total >= k else 0)
        hi = total - (k - 1 - i) if total >= k else total
        ends[i] = min(max(ends[i], lo), hi)
    starts = [0, *ends[:-1]]
    return list(zip(starts, ends, strict=True))


def _phase_params(model: torch.nn.Module, phase) -> list[torch.nn.Parameter]:
    """The parameters of a phase: those named `prefix` or `prefix.<anything>` for one of its prefixes (so
    "encoder" does not also pick "encoder_head"), all of them when it names none."""
    prefixes = [p.rstrip(".") for p in phase.params]
    chosen = [p for n, p in model.named_parameters()
              if not prefixes or any(n == q or n.startswith(q + ".") for q in prefixes)]
    if not chosen:
        raise ConfigError(f"training phase {phase.name!r} selects no parameters (prefixes {phase.params})")
    return chosen


def check_model_data(model: torch.nn.Module, data: Dataset) -> None:
    """Refuse, in one line, a model that cannot train on this data set (before any work starts): images of another
    shape than the model's, no training images, class labels outside the model's classes, an attribute condition
    without attribute vectors. (``Dataset`` itself holds uint8 images (N, C, H, W) and integer labels.)"""
    if not isinstance(data, Dataset):
        raise ConfigError(f"the data must be a cvae_core.data.Dataset (from load_dataset), got {type(data).__name__}")
    cfg = getattr(model, "config", None)
    shape = getattr(cfg, "image_shape", None)
    if shape is not None and tuple(data.image_shape) != tuple(shape):
        raise DataError(f"{data.name} has images of shape {tuple(data.image_shape)} (C, H, W) but the model was built "
                        f"for {tuple(shape)}; build it with image_shape={list(data.image_shape)} (build_run does)")
    if len(data.x_train) == 0:
        raise DataError(f"{data.name} has no training images")
    if getattr(model, "class_conditional", False):  # once per run: one pass over the labels
        for split, y in (("training", data.y_train), ("test", data.y_test)):
            check_labels(y, cfg.num_classes, what=f"{data.name}: {split} labels for a model of "
                                                  f"{cfg.num_classes} classes")
    data.y_for(model, "train")  # an attribute condition needs the data set's attribute vectors (one-line DataError)


@dataclass
class Checkpointing:
    """Where ``run_loop`` sends its checkpoints: ``write(state)`` every `every` steps and at the end of the run (see
    ``run_loop``; ``cvae_core.runs.checkpoint`` writes them to a run folder atomically)."""

    every: int
    write: Callable[[dict], None]

    def __post_init__(self) -> None:
        if not (_is_int(self.every) and self.every >= 1):
            raise ConfigError(f"checkpoint every must be an integer number of steps >= 1 (got {self.every!r})")


@dataclass
class LoopPhase:
    """One phase of ``run_loop``: steps ``start`` (inclusive) to ``end`` (exclusive); ``enter()`` is called when the
    phase begins and returns the optimiser of its steps (a fresh one, or the previous phase's to carry its state)."""

    name: str
    start: int
    end: int
    enter: Callable[[], torch.optim.Optimizer]


def run_loop(model: torch.nn.Module, phases: list[LoopPhase], step_fn, *, log_every: int,
             grad_clip: float | None = None, epoch_of: Callable[[int], float] = float,
             control: TrainControl | None = None, history: History | None = None, callbacks=(),
             cleanup: Callable[[], None] | None = None, checkpoint: Checkpointing | None = None,
             loop_state: Callable[[], dict] | None = None, resume: dict | None = None) -> History:
    """The one training engine of the lab, for images (``fit``) and sequences (``sequence.train.fit_seq``).

    `step_fn(step, phase_index)` draws a batch and returns ``(objective, terms)``: the scalar tensor to minimise and
    the named scalar terms to log. The engine owns everything else: ``TrainControl`` (pause, step, stop) between two
    steps, backward, the gradient clip (`grad_clip`, None = off) over the phase's parameters, the optimiser step,
    device-side sums of the terms with one host sync per log tick (every `log_every` steps, at a phase's end, after a
    single step and at a stop), the NaN/inf check that restores the weights of the last good tick and says what to
    change, and the callbacks' ``on_log`` / ``on_end``. `epoch_of(step)` gives records their ``epoch`` (passes over
    the data). `cleanup()` runs before ``on_end`` whatever the outcome.

    Checkpoints: with `checkpoint`, every ``checkpoint.every`` steps and when the run finishes, the loop logs a tick
    and calls ``checkpoint.write(state)`` with everything a resumed run needs besides the weights: ``step``,
    ``phase`` (index), ``optimizer`` (its state_dict), ``history`` (a dict) and the front end's `loop_state()`
    (random streams, batch order). A run continues from such a state with `history` = its history and `resume` = the
    state: the loop starts at its step and the optimiser of its phase gets its state back."""
    control = control or TrainControl()
    history = history if history is not None else History()
    total = phases[-1].end if phases else 0
    history.total_steps = total
    phase_i, opt, params = -1, None, []
    good_state = copy.deepcopy(model.state_dict())
    sums: dict[str, torch.Tensor] = {}
    window = 0
    t0 = time.perf_counter()
    step = history.steps_done = history.step

    def weights_finite() -> bool:
        return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())

    def diverge(at: int) -> None:
        model.load_state_dict(good_state)
        history.status = "diverged"
        clip = "set a gradient clip (grad_clip)" if not grad_clip else f"lower the gradient clip (now {grad_clip:g})"
        history.message = (f"loss became NaN or infinite between steps {history.step} and {at}; weights restored "
                           f"from step {history.step}. Try a lower learning rate, or {clip}.")

    def flush(at: int) -> bool:
        """Read accumulated terms (one host sync); False if non-finite."""
        nonlocal sums, window, good_state
        if window == 0:
            return True
        rec = {k: (v / window).item() for k, v in sums.items()}
        if not all(math.isfinite(v) for v in rec.values()) or not weights_finite():
            return False  # a finite loss with a NaN gradient leaves NaN weights: that tick is not good either
        rec.update(step=at, epoch=epoch_of(at), time=time.perf_counter() - t0)
        if len(phases) > 1:
            rec["phase"] = phases[phase_i].name
        history.records.append(rec)
        history.step, history.phase = at, phases[phase_i].name
        good_state = copy.deepcopy(model.state_dict())
        sums, window = {}, 0
        _call(callbacks, "on_log", model, rec, history)
        return True

    try:
        while step < total:
            if phase_i < 0 or step >= phases[phase_i].end:
                if window and not flush(step):  # a phase's last record holds only its own steps
                    diverge(step)
                    break
                phase_i = next(i for i, p in enumerate(phases) if p.start <= step < p.end)
                opt = phases[phase_i].enter()
                params = [p for g in opt.param_groups for p in g["params"]]
                if resume is not None and resume["step"] == step and resume["phase"] == phase_i:
                    opt.load_state_dict(resume["optimizer"])  # (at a phase's first step the phase starts afresh)
            go, single = control.wait()
            if not go:
                history.status, history.message = "stopped", f"stopped by the user at step {step}"
                break
            objective, terms = step_fn(step, phase_i)
            opt.zero_grad(set_to_none=True)
            objective.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)  # the phase's parameters
            opt.step()
            step += 1
            for k, v in terms.items():
                v = v.detach()
                sums[k] = sums[k] + v if k in sums else v.clone()
            window += 1
            save = checkpoint is not None and (step % checkpoint.every == 0 or step == total)
            if step % log_every == 0 or step == total or single or save:
                if not flush(step):
                    diverge(step)
                    break
            history.steps_done = step  # after a tick's record: the count never runs ahead of a tick being logged
            if save:
                checkpoint.write({"step": step, "phase": phase_i, "optimizer": opt.state_dict(),
                                  "history": dict(history.to_dict(), status="finished" if step == total else
                                                  "running"),
                                  **(loop_state() if loop_state is not None else {})})
        else:
            history.status, history.message = "finished", f"finished {total} steps"
        if history.status == "stopped" and not flush(step):
            diverge(step)
    finally:
        if cleanup is not None:
            cleanup()
        if history.status == "running":  # an exception escaped the loop
            history.status = "failed"
        model.eval()
        _call(callbacks, "on_end", model, history)
    return history


def fit(model: torch.nn.Module, data: Dataset, config: TrainConfig, callbacks=(),
        control: TrainControl | None = None, history: History | None = None,
        checkpoint: Checkpointing | None = None, resume: dict | None = None) -> History:
    """Train `model` on `data.x_train` (uint8) with Adam through ``run_loop``; returns the History. See the module
    docstring.

    `checkpoint` writes the loop's state every few steps (``run_loop``), with this front end's random streams (torch's
    global one, the batch order's generator, CUDA's) and batch position. `resume` is such a state: with the model's
    weights of the same step (loaded by the caller), `history` = ``History(**resume["history"])`` and the same data
    and config, the run continues exactly where it was: on the CPU its final weights equal those of an uninterrupted
    run.

    Example:
        >>> from cvae_core import TrainConfig, build_model, fit, load_dataset
        >>> data = load_dataset("mnist").subset(512, 64)
        >>> hist = fit(build_model("bs_vae", seed=0), data, TrainConfig(steps=4, batch_size=64, device="cpu"))
        >>> hist.status, hist.step
        ('finished', 4)
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"fit needs a TrainConfig, got {type(config).__name__}")
    device = resolve_device(config.device)
    history = history if history is not None else History()
    torch.manual_seed(config.seed)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)

    check_model_data(model, data)
    if history.step == 0:
        model.setup(data)  # a family's one look at the training data (centres, a teacher), kept in buffers
    model.to(device).train()
    x_all = data.x_train.to(device)  # (N, C, H, W) uint8, whole set on the device
    y_all = data.y_for(model, "train").to(device)  # class labels, or attribute vectors for condition=attributes
    extras_all = {k: v.to(device) for k, v in data.extras_train.items()}  # per-item, first dim N
    n = len(x_all)
    bs = min(config.batch_size, n)
    total = config.total_steps(n)
    bf16 = config.precision == "bf16" or (config.precision == "auto" and bf16_fast(device))
    phases = model.phases()
    requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}

    def entering(i: int) -> Callable[[], torch.optim.Optimizer]:
        def enter() -> torch.optim.Optimizer:
            """Freeze every parameter outside phase i's group and give the group a fresh Adam."""
            chosen = {id(p) for p in _phase_params(model, phases[i])}
            for name, p in model.named_parameters():
                p.requires_grad_(requires_grad[name] and id(p) in chosen)
            # Adam's fused kernel (one pass over all parameters, CPU and CUDA): 1.2x the images/s of the MLP bs_vae on a
            # 2-core CPU (bench/bench_examples.py); on CUDA it also avoids per-parameter launches
            return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr, fused=True)
        return enter

    plan = [LoopPhase(p.name, a, b, entering(i)) for i, (p, (a, b)) in enumerate(zip(phases, phase_plan(phases, total),
                                                                                   strict=True))]
    batches = {"perm": torch.randperm(n, generator=gen).to(device), "pos": 0}
    if resume is not None:
        check_resume(resume, history, total)
        torch.set_rng_state(resume["rng"])
        gen.set_state(resume["batch_rng"])
        batches["perm"], batches["pos"] = resume["perm"].to(device), int(resume["pos"])
        if device.type == "cuda" and resume.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(resume["cuda_rng"], device)

    def loop_state() -> dict:
        return {"rng": torch.get_rng_state(), "batch_rng": gen.get_state(), "perm": batches["perm"].cpu(),
                "pos": batches["pos"], "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}

    def step_fn(step: int, phase_i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if batches["pos"] + bs > n:
            batches["perm"], batches["pos"] = torch.randperm(n, generator=gen).to(device), 0
        idx = batches["perm"][batches["pos"] : batches["pos"] + bs]
        batches["pos"] += bs
        x = model.prepare_batch(x_all[idx])
        extras = {k: v[idx] for k, v in extras_all.items()} or None
        objective = phases[phase_i].objective
        # models build distributions with validate_args=False: no host sync per step
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            terms = model.loss(x, y_all[idx], extras, objective=objective)
        return terms[objective], terms

    def cleanup() -> None:
        for name, p in model.named_parameters():
            p.requires_grad_(requires_grad[name])

    return run_loop(model, plan, step_fn, log_every=config.log_every, grad_clip=config.grad_clip,
                    epoch_of=lambda at: at * bs / n, control=control, history=history, callbacks=callbacks,
                    cleanup=cleanup, checkpoint=checkpoint, loop_state=loop_state, resume=resume)


def check_resume(resume: dict, history: History, total: int) -> None:
    """One line when a checkpoint does not fit the run it is to continue."""
    missing = [k for k in ("step", "phase", "optimizer", "rng", "batch_rng", "perm", "pos") if k not in resume]
    if missing:
        raise ConfigError(f"the checkpoint lacks {', '.join(missing)}; it was not written by fit")
    if history.step != resume["step"]:
        raise ConfigError(f"resuming needs the checkpoint's history (at step {resume['step']}), got one at step "
                          f"{history.step}")
    if not 0 < resume["step"] <= total:
        raise ConfigError(f"the checkpoint is at step {resume['step']} but this run has {total} steps")
