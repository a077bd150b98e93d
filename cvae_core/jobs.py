"""A training job that runs ``fit`` in a background thread, for the app (or a notebook). No UI code.

The worker thread owns the model; other threads read ``snapshot()``: a copy of the metric history, the run status
and the latest previews (samples from fixed noise, reconstructions of fixed test images), all taken at log ticks.
``save`` writes the weights as of the last log tick, so saving never races with an optimiser step.
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import torch

from cvae_core.data import Dataset
from cvae_core.errors import ConfigError, LabError
from cvae_core.eval import full_evaluation
from cvae_core.eval.likelihood import TickMeans, check_numbers
from cvae_core.models.base import LatentModel
from cvae_core.registry import build_model
from cvae_core.runs.folder import check_run_destination, model_name_of, save_run
from cvae_core.runs.setup import TICK_IMAGES, build_run
from cvae_core.train import History, TrainConfig, TrainControl, fit, resolve_device


class TrainingJob:
    def __init__(self, model: LatentModel, data: Dataset, config: TrainConfig, *, n_preview: int = 32,
                 preview_per_class: int = 8, au_images: int = 1000, dataset_info: dict | None = None, callbacks=()):
        """`callbacks`: extra fit() callbacks (e.g. a live certificate). Their on_log runs in the worker with the
        model in eval mode, before the tick is published, so keys they add to the record appear in snapshots.
        A callback with ``on_means(model, record, means, labels)`` also gets the encoder means (N, m) of the first
        `au_images` test images and their labels, computed once per tick for all diagnostics (active units too).

        Previews: `n_preview` samples from fixed prior noise; for a conditional model, one row of
        `preview_per_class` samples per class instead (the same noise in every row, so rows differ only by class).
        """
        self.model, self.data, self.config = model, data, config
        self.callbacks = list(callbacks)
        self.dataset_info = dataset_info or {"name": data.name, **data.info}
        self.control = TrainControl()
        self.history = History()
        self._lock = threading.Lock()
        self._state = copy.deepcopy(model.state_dict())  # weights at the last log tick
        self._state_step = 0  # the step those weights are from
        self._previews: dict[str, torch.Tensor] = {}
        self._n_logged = 0  # records whose on_log has finished (fit appends a record before on_log fills it in)
        self.error: str | None = None
        gen = torch.Generator().manual_seed(config.seed + 1)
        cond = data.y_for(model, "test")  # class labels, or attribute vectors for an attribute condition
        if model.class_conditional:
            K = model.config.num_classes
            noise = model.prior_noise(preview_per_class, generator=gen)
            self._z = noise.repeat(K, *[1] * (noise.dim() - 1))  # (K * per, ...): the same noise in every row
            self._y_preview = torch.arange(K).repeat_interleave(preview_per_class)  # row k: class k
            self.preview_columns = preview_per_class
        else:
            self._z = model.prior_noise(n_preview, generator=gen)  # fixed sample noise (the family's own kind)
            # an attribute-conditional model draws at the conditions of the first test images
            self._y_preview = cond[:n_preview] if model.conditional else None
            self.preview_columns = 8
        self._x_fixed, self._y_fixed = data.x_test[:n_preview // 2], cond[:n_preview // 2]
        self._tick = TickMeans(data.x_test[:au_images], cond[:au_images], data.y_test[:au_images],
                               [cb for cb in self.callbacks if hasattr(cb, "on_means")])
        self._thread = threading.Thread(target=self._run, name="cvae-train", daemon=True)

    # ------------------------------------------------------------------ control
    def start(self) -> TrainingJob:
        self._thread.start()
        return self

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def step(self, n: int = 1) -> None:
        self.control.step(n)

    def stop(self) -> None:
        self.control.stop()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ worker side
    def _run(self) -> None:
        try:
            fit(self.model, self.data, self.config, callbacks=[self], control=self.control, history=self.history)
        except Exception as e:  # surfaced to the UI, never lost silently
            self.error = f"{type(e).__name__}: {e}"
            self.history.status, self.history.message = "failed", self.error

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
            self._previews = {"samples": samples.float().cpu(), "recon": recon.float().cpu(),
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
    def snapshot(self) -> dict:
        with self._lock:
            previews = dict(self._previews)
            records = self._complete_records()
        h = self.history
        return {"records": records, "status": h.status, "message": h.message, "step": h.step,
                "total_steps": h.total_steps, "paused": self.control.paused and h.status == "running",
                "previews": previews, "device": str(resolve_device(self.config.device))}

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
        with self.control.hold(lambda: self.alive):
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


class NuTraining:
    """Train a ct3vae with the config of a base run (usually a shipped member of the nu sweep) but another nu, in a
    background thread, then save it (with its metrics) to `out`. Nothing here calls the UI: the page polls
    ``snapshot()``. The base run's config and training settings are reused so the new run joins the sweep."""

    def __init__(self, base_info: dict, nu: float, steps: int, data: Dataset, out: str | Path):
        if base_info.get("model") != SWEEP_MODEL:
            raise ConfigError(f"the nu sweep is of {SWEEP_MODEL} runs (got a {base_info.get('model')} run)")
        if not (isinstance(steps, int) and steps >= 1):
            raise ConfigError(f"steps must be an integer >= 1 (got {steps!r})")
        t = base_info.get("train") or {}
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        keep = {k: t[k] for k in ("batch_size", "lr", "seed", "grad_clip") if k in t and k in fields}
        self.train = TrainConfig(**keep, steps=steps, log_every=max(1, min(50, steps // 50)))
        # the one set-up pipeline; refuses nu <= 2 in one line
        self.model = build_run(SWEEP_MODEL, data, dict(base_info["config"], nu=float(nu)), self.train).model
        self.nu, self.out = float(nu), Path(out)
        self.job = TrainingJob(self.model, data, self.train, au_images=TICK_IMAGES)
        self.status, self.message, self.saved = "training", "", None
        self.save_fraction = 0.0
        self._thread = threading.Thread(target=self._run, name="nu-training", daemon=True)

    def start(self) -> NuTraining:
        self.job.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self.job.stop()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        self.job.join()
        snap = self.job.snapshot()
        if snap["status"] != "finished":
            self.status, self.message = "failed", snap["message"] or snap["status"]
            return
        self.status = "saving"
        try:
            self.saved = self.job.save(self.out, progress=lambda f, text: setattr(self, "save_fraction", f))
            self.status, self.message = "saved", f"saved as {self.out.name}"
        except LabError as e:
            self.status, self.message = "failed", str(e)
        except Exception as e:  # surfaced to the page, never lost in a thread
            self.status, self.message = "failed", f"{type(e).__name__}: {e}"

    def snapshot(self) -> dict:
        """status ('training', 'saving', 'saved' or 'failed'), fraction done (training is 90%, saving 10%), text."""
        snap = self.job.snapshot()
        step, total = snap["step"], max(snap["total_steps"], self.train.steps)
        frac = 0.9 * step / max(total, 1) + (0.1 * self.save_fraction if self.status != "training" else 0.0)
        if self.status == "training":
            text = f"training ν = {self.nu:g}: step {step:,} of {total:,}"
        elif self.status == "saving":
            text = f"ν = {self.nu:g}: evaluating and saving ({100 * self.save_fraction:.0f}%)"
        else:
            text = self.message
        return {"status": self.status, "fraction": 1.0 if self.status == "saved" else min(frac, 1.0),
                "text": text, "saved": self.saved}


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
