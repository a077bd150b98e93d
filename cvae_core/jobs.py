"""Background jobs of the lab, for the app or a notebook: one ``Job`` interface, the server-wide ``JobBoard`` and the
``Prefetcher``. No UI code.

Every job (image training, a ct3vae at another nu, a sequence CVAE) has the same controls (``start``, ``pause``,
``resume``, ``step``, ``stop``, ``join``, ``alive``) and ``snapshot()`` returns one schema (``SNAPSHOT_KEYS``):

- ``kind``: "image", "nu", "variant" (a sweep run at another value) or "sequence"; ``status``: "queued" (waiting
  for a free slot on the board), "running", "saving", then "finished", "saved", "stopped", "diverged" or "failed";
  ``message``: how it ended (or the error);
  ``queue_position``: 1 for the next job to start, None when not waiting;
- ``step`` (optimiser steps taken so far, at every step; the last log tick is ``records[-1]["step"]``),
  ``total_steps``, ``fraction`` (0..1, saving included), ``text`` (one line for a progress bar), ``paused``;
- ``records`` (the metric history, one dict per log tick), ``previews`` (image jobs: samples and reconstructions at
  the last tick; {} otherwise), ``device``, ``saved`` (the run folder once saved, else None).

The worker thread of a job never calls the UI; pages poll ``snapshot()``. The ``JobBoard`` is one per server: it
runs at most ``max_running`` jobs at once (``CVAE_MAX_JOBS``, else one per two cores) and queues the rest, keeps each
owner's (a browser session's) jobs, stops the jobs no page has shown for a while, and reserves run names while a run
is being trained or saved, so two sessions never write the same folder.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import copy
import dataclasses
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

import torch

from cvae_core.data import Dataset
from cvae_core.errors import ConfigError, LabError
from cvae_core.eval import full_evaluation
from cvae_core.eval.generate import class_rows
from cvae_core.eval.likelihood import TickMeans, check_numbers
from cvae_core.models.base import LatentModel
from cvae_core.registry import build_model
from cvae_core.runs.checkpoint import Checkpoint, checkpointing
from cvae_core.runs.folder import check_run_destination, model_name_of, save_run
from cvae_core.runs.setup import TICK_IMAGES, build_run
from cvae_core.sequence.model import SeqCVAEConfig
from cvae_core.sequence.runs import load_base, task_from, train_and_save
from cvae_core.train import History, TrainConfig, TrainControl, fit, resolve_device

SNAPSHOT_KEYS = ("kind", "status", "message", "step", "total_steps", "fraction", "text", "paused", "records",
                 "previews", "device", "saved", "queue_position")
ENDED = ("finished", "saved", "stopped", "diverged", "failed")


class Job(abc.ABC):
    """The one interface of a background job (see the module docstring). A subclass implements ``_work()``, which
    runs in the job's thread with ``self.control`` and ``self.history`` (a ``train.History``) and may set
    ``self.saved``; an exception escaping it ends the job as "failed" with the error as its message."""

    kind = "job"

    def __init__(self, device: str = "auto") -> None:
        self.control = TrainControl()
        self.history = History()
        self.error: str | None = None
        self.saved: Path | None = None
        self.saving = 0.0  # share of the final evaluation and save done (status "saving" while 0 < it < 1)
        self._saving_now = False
        self._device = str(resolve_device(device))
        self._thread = threading.Thread(target=self._main, name=f"cvae-{self.kind}", daemon=True)
        self.queue_position: int | None = None  # set by a JobBoard while the job waits for a free slot
        self.done = False  # True once the worker has ended (before on_done runs)
        self.on_done: list[Callable[[Job], None]] = []  # called in the worker thread when it ends

    # ------------------------------------------------------------------ control
    def start(self) -> Job:
        self._thread.start()
        return self

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def step(self, n: int = 1) -> None:
        """While paused: exactly n more optimiser steps."""
        self.control.step(n)

    def stop(self) -> None:
        """Stop the job; a job still waiting in a board's queue is cancelled (it never starts)."""
        self.control.stop()
        if self.queue_position is not None and not self.started:
            self.history.status, self.history.message = "stopped", "cancelled while waiting in the queue"

    def join(self, timeout: float | None = None) -> None:
        if self.started:  # a job that never started (or waits in a queue) has nothing to wait for
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Running, or waiting in a board's queue to run."""
        return self._thread.is_alive() or (self.queued and not self.control.stopped)

    @property
    def queued(self) -> bool:
        return self.queue_position is not None and not self.started

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    # ------------------------------------------------------------------ worker side
    @abc.abstractmethod
    def _work(self) -> None:
        """The job's work, in its thread (see the class docstring)."""

    def _main(self) -> None:
        try:
            self._work()
        except LabError as e:  # a one-line error the user can act on
            self.error = str(e)
            self.history.status, self.history.message = "failed", self.error
        except Exception as e:  # surfaced to the UI, never lost silently in a thread
            self.error = f"{type(e).__name__}: {e}"
            self.history.status, self.history.message = "failed", self.error
        finally:
            self._saving_now = False
            self.done = True
            for fn in self.on_done:
                fn(self)

    def _records(self) -> list[dict]:
        return [dict(r) for r in self.history.records]

    def _previews(self) -> dict:
        return {}

    @property
    def claims(self) -> list[Path]:
        """The folders this job writes (a run it will save, its checkpoints): a board holds their names while the
        job runs or waits, so no other job writes them."""
        return [Path(p) for p in (getattr(self, "save_to", None), getattr(self, "out", None),
                                  getattr(self, "checkpoint_to", None)) if p is not None]

    # ------------------------------------------------------------------ reader side
    def snapshot(self) -> dict:
        """The job's state in the one schema ``SNAPSHOT_KEYS`` (copies: safe to keep and read from any thread)."""
        h = self.history
        records, previews = self._records(), self._previews()
        status = "saving" if self._saving_now else ("saved" if self.saved is not None else h.status)
        position = self.queue_position if self.queued and h.status == "running" else None
        if position is not None:
            status = "queued"
        total = max(h.total_steps, 1)
        step = max(h.step, h.steps_done)  # the true count: h.step moves at log ticks only (a paused run is between)
        fraction = 1.0 if status == "saved" else min(1.0, 0.9 * step / total + 0.1 * self.saving)
        if status == "queued":
            text = ("waiting for a free training slot: next in the queue" if position == 1 else
                    f"waiting for a free training slot: {position - 1} job(s) ahead in the queue")
        elif status == "running":
            text = f"step {step:,} of {h.total_steps:,}" if h.total_steps else "starting"
        elif status == "saving":
            text = f"evaluating and saving ({100 * self.saving:.0f}%)"
        elif status == "saved":
            text = f"saved as {self.saved.name}"
        else:
            text = h.message or status
        return {"kind": self.kind, "status": status, "message": h.message, "step": step, "total_steps": h.total_steps,
                "fraction": fraction, "text": text, "paused": self.control.paused and status == "running",
                "records": records, "previews": previews, "device": self._device, "saved": self.saved,
                "queue_position": position}

    def _save_progress(self, fraction: float, text: str = "") -> None:
        self.saving = fraction


class TrainingJob(Job):
    """``fit`` in the job's thread (image models). With `save_to`, a finished run is evaluated and saved there (status
    "saving", then "saved"), as the nu training of the Class balance page does; otherwise the page saves it with
    ``save``. The worker owns the model; ``snapshot()`` and ``model_at_tick()`` read copies taken at log ticks, and
    ``save`` writes the weights of the last tick, so saving never races with an optimiser step."""

    kind = "image"

    def __init__(self, model: LatentModel, data: Dataset, config: TrainConfig, *, n_preview: int = 32,
                 preview_per_class: int = 8, au_images: int = TICK_IMAGES, dataset_info: dict | None = None,
                 callbacks=(), save_to: str | Path | None = None, checkpoint_to: str | Path | None = None,
                 checkpoint_every: int = 100, checkpoint_spec: dict | None = None, resume: Checkpoint | None = None):
        """`callbacks`: extra fit() callbacks (e.g. a live certificate). Their on_log runs in the worker with the
        model in eval mode, before the tick is published, so keys they add to the record appear in snapshots.
        A callback with ``on_means(model, record, means, labels)`` also gets the encoder means (N, m) of the first
        `au_images` test images and their labels, computed once per tick for all diagnostics (active units too).

        Previews: `n_preview` samples from fixed prior noise; for a conditional model, one row of
        `preview_per_class` samples per class instead (the same noise in every row, so rows differ only by class).

        Checkpoints: with `checkpoint_to` (a folder), the weights, optimiser and random state and history are written
        there every `checkpoint_every` steps and at the end (``runs.checkpoint``, with `checkpoint_spec`: how to
        rebuild the run). `resume` (a read ``Checkpoint`` of this model and data) continues that run: its weights and
        history are taken over here, its state when training starts.
        """
        super().__init__(config.device)
        self.model, self.data, self.config = model, data, config
        self.checkpoint_to = None if checkpoint_to is None else Path(checkpoint_to)
        self.checkpoint_every, self.checkpoint_spec = checkpoint_every, dict(checkpoint_spec or {})
        self._resume = resume
        if resume is not None:
            resume.load_weights(model)
            self.history = resume.history
        self.callbacks = list(callbacks)
        self.dataset_info = dataset_info or {"name": data.name, **data.info}
        self.save_to = None if save_to is None else Path(save_to)
        if self.save_to is not None:
            check_run_destination(self.save_to)  # before any training
        self._lock = threading.Lock()
        self._state = copy.deepcopy(model.state_dict())  # weights at the last log tick
        self._state_step = self.history.step  # the step those weights are from
        self._preview_images: dict[str, torch.Tensor] = {}
        # records whose on_log has finished (fit appends a record before on_log fills it in; a resumed run's are)
        self._n_logged = len(self.history.records)
        gen = torch.Generator().manual_seed(config.seed + 1)
        cond = data.y_for(model, "test")  # class labels, or attribute vectors for an attribute condition
        if model.class_conditional:  # row k: class k, the same noise in every row
            self._z, self._y_preview = class_rows(model.prior_noise(preview_per_class, generator=gen),
                                                  model.config.num_classes)
            self.preview_columns = preview_per_class
        else:
            self._z = model.prior_noise(n_preview, generator=gen)  # fixed sample noise (the family's own kind)
            # an attribute-conditional model draws at the conditions of the first test images
            self._y_preview = cond[:n_preview] if model.conditional else None
            self.preview_columns = 8
        self._x_fixed, self._y_fixed = data.x_test[:n_preview // 2], cond[:n_preview // 2]
        self._tick = TickMeans(data.x_test[:au_images], cond[:au_images], data.y_test[:au_images],
                               [cb for cb in self.callbacks if hasattr(cb, "on_means")])

    # ------------------------------------------------------------------ worker side
    def _work(self) -> None:
        ckpt = None if self.checkpoint_to is None else checkpointing(self.checkpoint_to, self.model,
                                                                     self.checkpoint_every, self.checkpoint_spec)
        fit(self.model, self.data, self.config, callbacks=[self], control=self.control, history=self.history,
            checkpoint=ckpt, resume=self._resume.state if self._resume is not None else None)
        if self.save_to is not None and self.history.status == "finished":
            self._saving_now = True
            self.saved = self.save(self.save_to, progress=self._save_progress)

    @torch.no_grad()
    def on_log(self, model: LatentModel, record: dict, history: History) -> None:
        self._tick.on_log(model, record, history)  # the encoder means once: au and every on_means callback
        model.eval()
        device = next(model.parameters()).device
        for cb in self.callbacks:
            if hasattr(cb, "on_log"):
                cb.on_log(model, record, history)
        y_fixed = self._y_fixed.to(device)
        recon = model.reconstruct(model.prepare_batch(self._x_fixed.to(device)), y_fixed if model.conditional else None)
        samples = model.sample(len(self._z), self._y_preview, eps=self._z)
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        model.train()
        with self._lock:
            self._n_logged = len(history.records)
            self._state, self._state_step = state, history.step
            self._preview_images = {"samples": samples.float().cpu(), "recon": recon.float().cpu(),
                              "original": model.prepare_batch(self._x_fixed).float().cpu(),
                              "sample_classes": self._y_preview.clone() if model.class_conditional else None}

    def on_end(self, model: LatentModel, history: History) -> None:
        for cb in self.callbacks:
            if hasattr(cb, "on_end"):
                cb.on_end(model, history)
        with self._lock:
            self._state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            self._state_step = history.step

    # ------------------------------------------------------------------ reader side
    def _records(self) -> list[dict]:
        with self._lock:
            return self._complete_records()

    def _previews(self) -> dict:
        with self._lock:
            return dict(self._preview_images)

    def _complete_records(self) -> list[dict]:
        """Copies of the records whose on_log has finished (fit appends a record before on_log fills it in).
        Call with self._lock held."""
        return [dict(r) for r in self.history.records[: self._n_logged]]

    def _clone(self, state: dict) -> LatentModel:
        """A CPU model with the given weights, built on the meta device: building it draws nothing from torch's
        global random stream, which the training thread is using."""
        try:
            with torch.device("meta"):
                clone = build_model(model_name_of(self.model), copy.deepcopy(self.model.config))
        except RuntimeError:  # a part that reads a tensor's value while being built (zuko's coupling masks)
            clone = copy.deepcopy(self.model).to("cpu")  # draws nothing either; its weights are replaced below
        clone.load_state_dict(state, assign=True)
        return clone.eval()

    def model_at_tick(self) -> tuple[LatentModel, int]:
        """(a CPU copy of the model with the weights of the last log tick, in eval mode; that tick's step).
        Safe to call from any thread while training goes on: the worker's own model is never touched."""
        with self._lock:
            state, step = dict(self._state), self._state_step
        return self._clone(state), step

    def save(self, run_dir: str | Path, *, fid: str | None = None, progress=None) -> Path:
        """Save weights as of the last log tick (or the end), with the history so far, test metrics (likelihood
        terms and the sample metrics of ``evaluation.full_evaluation``; `fid="inception"` adds the slow Inception FID,
        `progress(fraction, text)` follows it) and the check numbers a reload is verified against."""
        check_run_destination(run_dir)  # fail before the (slow) test-set evaluation
        # The evaluation draws seeded noise from torch's global random stream, which the training thread uses too:
        # hold training between two steps meanwhile, so neither the saved numbers nor the run depend on timing.
        hold = self.control.hold(lambda: self.alive) if threading.current_thread() is not self._thread else \
            contextlib.nullcontext()  # the job's own thread saves after training: nothing to hold
        with hold:
            with self._lock:  # weights and history of the same tick, never a record being filled in
                state = dict(self._state)
                h = self.history
                history = {"status": h.status, "message": h.message, "step": h.step, "total_steps": h.total_steps,
                           "phase": h.phase, "records": self._complete_records()}
            clone = self._clone(state)
            # sample metrics skip themselves for images the classifier was not trained on
            metrics = full_evaluation(clone, self.data, fid=fid, progress=progress)
            metrics.update(model=model_name_of(clone), dataset=self.dataset_info.get("name"),
                           steps=history["step"], status=history["status"])
            check = check_numbers(clone, self.data)
        return save_run(run_dir, clone, train_config=self.config, dataset=self.dataset_info, metrics=metrics,
                        history=history, check=check)


# ------------------------------------------------------------------ a ct3vae at a nu of one's choice
SWEEP_MODEL = "ct3vae"


def variant_training(base_info: dict, changes: dict, data: Dataset, out: str | Path, steps: int | None = None
                     ) -> TrainingJob:
    """A job that trains the model of a base run (usually a shipped member of a sweep) with its config but the
    `changes` (e.g. ``{"beta": 2.0}``), then evaluates and saves it to `out`. The base run's training settings are
    reused (its steps or epochs unless `steps` is given), so the new run joins the sweep. Built by the one pipeline
    (``build_run``: a bad value is one line); not started."""
    if steps is not None and not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
        raise ConfigError(f"steps must be an integer >= 1 (got {steps!r})")
    t = base_info.get("train") or {}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    keep = {k: t[k] for k in ("batch_size", "lr", "seed", "grad_clip", "steps", "epochs")
            if t.get(k) is not None and k in fields}
    if steps is not None:
        keep.pop("epochs", None)
        keep["steps"] = steps
    train = TrainConfig(**keep)
    train = dataclasses.replace(train, log_every=max(1, min(50, train.total_steps(len(data.x_train)) // 50)))
    run = build_run(base_info["model"], data, dict(base_info["config"], **changes), train)
    job = TrainingJob(run.model, data, train, save_to=out)
    job.kind = "variant"
    return job


def nu_training(base_info: dict, nu: float, steps: int, data: Dataset, out: str | Path) -> TrainingJob:
    """A job that trains a ct3vae with the config of a base run (usually a shipped member of the nu sweep) but another
    nu, for `steps` steps, then evaluates and saves it to `out` (``variant_training``)."""
    if base_info.get("model") != SWEEP_MODEL:
        raise ConfigError(f"the nu sweep is of {SWEEP_MODEL} runs (got a {base_info.get('model')} run)")
    if not (isinstance(steps, int) and steps >= 1):
        raise ConfigError(f"steps must be an integer >= 1 (got {steps!r})")
    job = variant_training(base_info, {"nu": float(nu)}, data, out, steps=steps)
    job.kind, job.nu = "nu", float(nu)
    return job


# ------------------------------------------------------------------ a sequence CVAE
class SeqTrainingJob(Job):
    """``sequence.runs.train_and_save`` in the job's thread, over the base model in the folder `base_dir` and on its
    task: trains (pause, step and stop as for images), measures on `n_test` test pairs and saves to `out`. A stopped
    run is not saved. ``metrics`` holds the measured numbers once saved."""

    kind = "sequence"

    def __init__(self, out: str | Path, config: SeqCVAEConfig, steps: int, base_dir: str | Path, *, seed: int = 0,
                 n_test: int = 200, n_control: int = 60, log_every: int = 10):
        super().__init__("cpu")
        check_run_destination(out)  # before any training
        self.out, self.config, self.steps, self.base_dir = Path(out), config, steps, base_dir
        self.seed, self.n_test, self.n_control, self.log_every = seed, n_test, n_control, log_every
        self.metrics: dict | None = None

    def _progress(self, fraction: float, text: str) -> None:
        if fraction >= 1:  # training done: measuring and saving follow
            self._saving_now = True

    def _work(self) -> None:
        base, base_info = load_base(self.base_dir)
        path, self.metrics = train_and_save(
            self.out, task_from(base_info.get("task")), self.config, base, steps=self.steps, seed=self.seed,
            log_every=self.log_every, n_test=self.n_test, n_control=self.n_control, progress=self._progress,
            control=self.control, history=self.history, extra={"from": "Strategies page"})
        self.saving = 1.0
        self.saved = path

    def snapshot(self) -> dict:
        snap = super().snapshot()
        if snap["status"] == "saving":
            snap["text"] = f"measuring on {self.n_test} test pairs and saving ..."
        return snap


# ------------------------------------------------------------------ the server-wide job board
ORPHAN_AGE = 600.0  # seconds (10 minutes): a running job no page has shown for this long is stopped
PAUSED_AGE = 1800.0  # seconds (30 minutes): the same for a paused job
CLOSE_GRACE = 15.0  # seconds a job's browser session may be disconnected (a network blip) before its job is stopped
WATCH_EVERY = 5.0  # seconds between two looks of the board's watcher thread
MAX_JOBS_ENV = "CVAE_MAX_JOBS"


def per_core_max_jobs() -> int:
    """One job per two CPU cores, at least one. Training uses every core it is given; two jobs on two cores each run
    at less than half speed and slow every page."""
    return max(1, (os.cpu_count() or 2) // 2)


def default_max_jobs() -> int:
    """How many jobs a board runs at once: ``$CVAE_MAX_JOBS``, else ``per_core_max_jobs()``; a bad value is one
    ConfigError line."""
    raw = os.environ.get(MAX_JOBS_ENV, "").strip()
    if not raw:
        return per_core_max_jobs()
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= 1024:
        raise ConfigError(f"{MAX_JOBS_ENV} must be a whole number of jobs from 1 to 1024 (got {raw!r})")
    return n


class JobBoard:
    """Every job a server runs, by owner (a browser session and a slot, e.g. ``(session_id, "train")``); one per
    server, shared by all sessions. Thread-safe.

    - ``submit(owner, job)`` stops the owner's previous job, stops orphans, registers the new job and starts it when
      fewer than `max_running` jobs run; otherwise the job waits in a first-come queue (status "queued", its
      ``queue_position`` in the snapshot) and starts when a running job ends. ``stop()`` on a waiting job (or
      ``release``) cancels it.
    - A job whose owner is gone is stopped (a waiting one is cancelled) by ``stop_orphans()``, which ``submit`` and
      the watcher thread (``watch()``, every `WATCH_EVERY` s) call:
      * closed: `session_alive(owner)` (given by the app: is the browser session still connected?) has said False for
        `close_grace` seconds, paused or not;
      * idle: no page has shown the job (``touch``) for `orphan_age` seconds while it runs or waits, or for
        `paused_age` seconds while it is paused. These ages are long on purpose: a teacher may sit on the Home page,
        or a background tab may be throttled, for minutes while a student's run trains; stopping it then would be
        worse than letting an abandoned one finish its bounded number of steps.
    - ``reserve(path)`` holds a run folder's name while it is being saved (a context manager); a job that will save
      (``save_to``, ``out``) holds it from submit to its end. A second claim, from any session, is refused in one
      line.
    """

    def __init__(self, orphan_age: float = ORPHAN_AGE, max_running: int | None = None, *,
                 session_alive: Callable[[Hashable], bool] | None = None, close_grace: float = CLOSE_GRACE,
                 paused_age: float = PAUSED_AGE):
        self.orphan_age, self.paused_age, self.close_grace = orphan_age, paused_age, close_grace
        self.session_alive = session_alive
        self._gone_since: dict[Hashable, float] = {}  # owner -> when session_alive first said False
        self._watcher: threading.Thread | None = None
        self._closing = threading.Event()
        self.max_running = default_max_jobs() if max_running is None else int(max_running)
        if self.max_running < 1:
            raise ConfigError(f"a job board runs at least one job at once (got max_running={max_running})")
        self._lock = threading.RLock()
        self._jobs: dict[Hashable, list] = {}  # owner -> [job, last time a page showed it]
        self._queue: deque[Job] = deque()  # waiting jobs, first come first served
        self._reserved: set[Path] = set()

    # ------------------------------------------------------------------ jobs
    def submit(self, owner: Hashable, job: Job, *, now: float | None = None) -> Job:
        self.release(owner)
        self.stop_orphans(now=now)
        claimed = []
        try:
            for path in getattr(job, "claims", ()):
                self._claim(path)
                claimed.append(path)
        except LabError:
            with self._lock:
                self._reserved.difference_update(p.resolve() for p in claimed)
            raise
        job.on_done.append(self._job_ended)
        try:
            with self._lock:
                self._jobs[owner] = [job, time.monotonic() if now is None else now]
                if self._running() < self.max_running and not self._queue:
                    # started under the lock: a concurrent submit or promote counts it as running at once (started
                    # after the lock, eight sessions pressing Start together once ran five jobs with max_running 1)
                    job.start()
                else:
                    self._queue.append(job)
                    self._number_queue()
        except Exception:
            self.release(owner)
            raise
        return job

    def _running(self) -> int:
        """Jobs whose worker runs (call with the lock held)."""
        return sum(1 for job, _ in self._jobs.values() if job.started and not job.done)

    def _number_queue(self) -> None:
        """Drop cancelled jobs from the queue and number the rest 1, 2, ... (call with the lock held)."""
        self._queue = deque(j for j in self._queue if not j.control.stopped)
        for i, job in enumerate(self._queue, start=1):
            job.queue_position = i

    def _job_ended(self, ended: Job) -> None:
        """A worker ended (called in its thread): free its run name, start the next waiting jobs."""
        self._unclaim(ended)
        self.promote()

    def promote(self) -> list[Job]:
        """Start waiting jobs while there are free slots; returns those started."""
        started = []
        with self._lock:
            self._number_queue()
            while self._queue and self._running() < self.max_running:
                job = self._queue.popleft()
                job.start()  # under the lock, as in submit: it counts in _running() from now on
                started.append(job)
            self._number_queue()
        return started

    def get(self, owner: Hashable) -> Job | None:
        with self._lock:
            entry = self._jobs.get(owner)
        return entry[0] if entry else None

    def touch(self, owner: Hashable, now: float | None = None) -> None:
        with self._lock:
            if owner in self._jobs:
                self._jobs[owner][1] = time.monotonic() if now is None else now

    def touch_job(self, job: Job, now: float | None = None) -> None:
        """Mark whichever owner holds `job` as shown by a page (a no-op for a job this board does not hold)."""
        with self._lock:
            for entry in self._jobs.values():
                if entry[0] is job:
                    entry[1] = time.monotonic() if now is None else now

    def release(self, owner: Hashable, timeout: float = 10.0) -> None:
        """Stop (or cancel, when waiting) the owner's job, wait for it (bounded) and forget it."""
        with self._lock:
            entry = self._jobs.pop(owner, None)
        if entry is not None:
            job = entry[0]
            if job.alive:
                job.stop()
                job.join(timeout)
            with self._lock:
                self._number_queue()
            self._unclaim(job)

    def stop_orphans(self, now: float | None = None) -> list[Hashable]:
        """Forget ended jobs; stop (or cancel, when waiting) the jobs whose session closed or that no page has shown
        for too long (see the class docstring). Returns their owners."""
        now = time.monotonic() if now is None else now
        stopped = []
        with self._lock:
            items = list(self._jobs.items())
        for owner, (job, seen) in items:
            if not job.alive:
                with self._lock:
                    self._jobs.pop(owner, None)
                    self._gone_since.pop(owner, None)
                self._unclaim(job)
                continue
            connected = self.session_alive is None or self.session_alive(owner)
            with self._lock:
                if connected:
                    self._gone_since.pop(owner, None)
                gone = None if connected else self._gone_since.setdefault(owner, now)
            closed = gone is not None and now - gone >= self.close_grace
            idle = now - seen > (self.paused_age if job.snapshot()["paused"] else self.orphan_age)
            if closed or idle:
                job.stop()
                stopped.append(owner)
        with self._lock:
            self._number_queue()
        return stopped

    def watch(self, every: float = WATCH_EVERY) -> JobBoard:
        """Start (once) the daemon thread that calls ``stop_orphans()`` every `every` seconds, so that a closed or idle
        session's job ends without waiting for the next ``submit``. ``close()`` stops it."""
        with self._lock:
            if self._watcher is None:
                def loop() -> None:
                    while not self._closing.wait(every):
                        with contextlib.suppress(Exception):  # one bad look must not end the watcher
                            self.stop_orphans()
                self._watcher = threading.Thread(target=loop, name="job-board-watcher", daemon=True)
                self._watcher.start()
        return self

    def close(self) -> None:
        """Stop the watcher thread (jobs keep running)."""
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    def running(self) -> list[tuple[Hashable, Job]]:
        """(owner, job) of every job that runs or waits."""
        with self._lock:
            return [(o, e[0]) for o, e in self._jobs.items() if e[0].alive]

    def counts(self) -> dict[str, int]:
        """{"running": jobs whose worker runs, "queued": jobs waiting, "max": max_running}: for a page's status line."""
        with self._lock:
            self._number_queue()
            return {"running": self._running(), "queued": len(self._queue), "max": self.max_running}

    # ------------------------------------------------------------------ run-name reservation
    def _claim(self, path: Path) -> None:
        path = Path(path).resolve()
        with self._lock:
            if path in self._reserved:
                raise LabError(f"a run named {path.name!r} is being trained or saved right now (from another tab); "
                               "choose another name")
            self._reserved.add(path)

    def _unclaim(self, job: Job) -> None:
        claims = getattr(job, "claims", ())
        if claims and (job.done or not job.alive):  # done: called from the ending worker itself
            with self._lock:
                self._reserved.difference_update(Path(p).resolve() for p in claims)

    def held(self, path: str | Path) -> bool:
        """Is the folder `path` held by a job that runs or waits, or by a save in progress?"""
        with self._lock:
            return Path(path).resolve() in self._reserved

    @contextlib.contextmanager
    def reserve(self, path: str | Path) -> Iterator[Path]:
        """Hold the name of the run folder `path` while the block saves it; LabError if it is held already."""
        path = Path(path)
        self._claim(path)
        try:
            yield path
        finally:
            with self._lock:
                self._reserved.discard(path.resolve())


# ------------------------------------------------------------------ computing ahead
class Prefetcher:
    """Compute values ahead of time in one daemon thread. ``want(jobs)`` replaces the queue with (key, fn) pairs
    (the old queue is dropped: the view moved on); ``take(key)`` hands over a finished value (or waits for the one
    being computed right now) and forgets it, or returns None. ``seen(key)`` marks a key whose value the caller has
    computed itself, so it is never queued again. At most `keep` finished values are kept (oldest dropped)."""

    def __init__(self, keep: int = 64):
        self._cv = threading.Condition()
        self._queue: deque[tuple[Hashable, Callable[[], Any]]] = deque()
        self._done: OrderedDict[Hashable, Any] = OrderedDict()
        self._seen: set[Hashable] = set()
        self._current: Hashable | None = None
        self.keep = keep
        threading.Thread(target=self._work, name="prefetch", daemon=True).start()
        atexit.register(self.close)  # a daemon thread killed inside a torch op aborts the interpreter's exit

    def close(self, timeout: float = 10.0) -> None:
        """Drop the queue and wait (bounded) for the value being computed."""
        with self._cv:
            self._queue.clear()
        self.idle(timeout)

    def want(self, jobs: list[tuple[Hashable, Callable[[], Any]]]) -> None:
        with self._cv:
            self._queue = deque((k, fn) for k, fn in jobs if k not in self._seen and k not in self._done)
            self._cv.notify_all()

    def seen(self, key: Hashable) -> None:
        with self._cv:
            self._seen.add(key)

    def take(self, key: Hashable, timeout: float = 30.0) -> Any | None:
        with self._cv:
            self._cv.wait_for(lambda: self._current != key, timeout)
            self._seen.add(key)
            return self._done.pop(key, None)

    def idle(self, timeout: float | None = None) -> bool:
        """Wait until the queue is empty and nothing is being computed; False on timeout."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._queue and self._current is None, timeout)

    def _work(self) -> None:
        try:  # Linux: a nice value per thread; the page's own thread goes first when both want a core
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._queue)
                key, fn = self._queue.popleft()
                if key in self._seen or key in self._done:
                    self._cv.notify_all()  # idle() may be waiting for the queue to drain
                    continue
                self._current = key
            try:
                value = fn()
            except Exception:  # the page computes it again when asked, and shows the error then
                value = None
            with self._cv:
                self._current = None
                if value is not None and key not in self._seen:
                    self._done[key] = value
                    while len(self._done) > self.keep:
                        self._done.popitem(last=False)
                self._cv.notify_all()
