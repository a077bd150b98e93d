"""Class balance of a model's samples on long-tailed data (SPEC sections 3 and 4). No UI code.

The question the Class balance page asks: draw N samples from a run, let the in-project classifier say which digit
each one is, and compare the per-class shares with the training set's. A Gaussian VAE trained on MNIST-LT with a
strong imbalance (rho = 100) reproduces the long tail: its samples almost never show the rare digits. A
Conditional-t3VAE (arXiv:2509.02154) draws the class first, with equal weights 1/K, then z = mu_y + tau * eps *
sqrt((nu+n)/v) around that class's centre, so every digit comes out equally often; nu sets how heavy the tails of
q and of the sampling prior are, tau how far samples stray from their class centre.

- ``find_runs``: the mnist-lt run folders under the shipped and saved roots, with model, rho and nu read from
  config.json (the nu sweep is discovered, never listed by hand); ``nu_sweep``, ``default_pair``.
- ``draw``: N samples at (tau, weighting, seed) with their asked classes (class-conditional runs) and the
  classifier's predicted classes (of the 8-bit images, as shown) and per-class counts. Noise and classes come
  from private seeded generators, so a tau move changes the images and nothing else, and a training thread's
  global random stream is never touched.
- ``grid_order``: which of the N samples fill a K-row grid (row k: class k asked, or predicted for unconditional
  models), so the grid shows the very samples the counts are made of.
- ``NuTraining``: train a ct3vae at an exact nu in a background thread (``TrainingJob``), then save the run.
- ``Prefetcher``: one background thread that computes keyed values before they are asked for (the page queues the
  draws of the neighbouring tau values and of the other weighting, so most slider moves find them ready).
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import os
import re
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import read_run_info
from .data import Dataset
from .errors import ConfigError, LabError
from .jobs import TrainingJob
from .models.base import LatentModel
from .registry import build_model, make_config
from .sample_metrics import class_counts
from .train import TrainConfig

HEAD, TAIL = (0, 1, 2), (7, 8, 9)  # MNIST-LT's most and least frequent digits: n_k = n_max * rho^(-k/9)
SCARCE = 0.2  # a class is scarce in a set of samples below this fraction of an equal share 1/K
SWEEP_MODEL = "ct3vae"


@dataclass(frozen=True)
class RunRef:
    """A run folder trained on mnist-lt, as its config.json describes it."""

    path: Path
    label: str  # the name shown in a run list: the folder name, "saved: <name>" for saved runs
    model: str
    rho: float
    nu: float | None  # Student-t families only
    shipped: bool


def find_runs(shipped_root: str | Path, saved_root: str | Path) -> tuple[list[RunRef], list[str]]:
    """(mnist-lt runs under both roots, shipped first, each sorted by name; one-line problems for folders whose
    config.json cannot be read). Folders of other data sets are skipped silently."""
    runs, problems = [], []
    for root, shipped in ((Path(shipped_root), True), (Path(saved_root), False)):
        if not root.is_dir():
            continue
        for p in sorted(q for q in root.iterdir() if q.is_dir() and not q.name.startswith(".")):
            if not (p / "config.json").is_file():
                continue  # not a run folder (e.g. the classifier's)
            try:
                info = read_run_info(p)
            except LabError as e:
                problems.append(str(e))
                continue
            ds = info.get("dataset") or {}
            if ds.get("name") != "mnist-lt":
                continue
            nu = info["config"].get("nu")
            runs.append(RunRef(p, p.name if shipped else f"saved: {p.name}", info["model"],
                               float(ds.get("rho", 10.0)), None if nu is None else float(nu), shipped))
    return runs, problems


def nu_sweep(runs: list[RunRef], rho: float, model: str = SWEEP_MODEL) -> dict[float, RunRef]:
    """nu -> run for the `model` runs at this rho, sorted by nu; a shipped run wins over a saved one of equal nu."""
    out: dict[float, RunRef] = {}
    for r in runs:
        if r.model == model and r.rho == rho and r.nu is not None and (r.nu not in out or not out[r.nu].shipped):
            out[r.nu] = r
    return dict(sorted(out.items()))


def default_pair(runs: list[RunRef]) -> tuple[RunRef | None, RunRef | None]:
    """(main, compare) runs of one rho: the shipped ct3vae at its default nu (10) and the shipped vae; otherwise
    the nearest thing there is (any ct3vae, any run; any vae, any other run)."""
    if not runs:
        return None, None
    default_nu = make_config(SWEEP_MODEL).nu

    def pick(*tests) -> RunRef | None:
        for test in tests:
            for r in sorted(runs, key=lambda r: not r.shipped):
                if test(r):
                    return r
        return None

    main = pick(lambda r: r.model == SWEEP_MODEL and r.nu == default_nu, lambda r: r.model == SWEEP_MODEL,
                lambda r: True)
    other = pick(lambda r: r.model == "vae" and r is not main, lambda r: r is not main) or main
    return main, other


# ------------------------------------------------------------------ samples and counts
@dataclass
class Draw:
    """N samples of one run at one (tau, weighting, seed) and what the classifier makes of them."""

    images: torch.Tensor  # (N, C, H, W) uint8
    asked: np.ndarray | None  # (N,) the class each sample was drawn for; None for unconditional runs
    predicted: np.ndarray  # (N,) the classifier's class
    counts: np.ndarray  # (K,) how many samples the classifier puts in each class


def shares(counts) -> np.ndarray:
    """Counts (K,) -> fractions summing to 1 (zeros for no counts)."""
    c = np.asarray(counts, dtype=np.float64)
    return c / max(c.sum(), 1.0)


@torch.no_grad()
def draw(model: LatentModel, classifier, n: int, tau: float | None = None, weighting: str = "equal", seed: int = 0,
         batch_size: int = 500) -> Draw:
    """n samples of `model` at sampling scale `tau` (None: the model's ``default_tau``) and their classes.

    Class-conditional models draw their classes with ``sample_classes(n, weighting)`` ("equal": 1/K each, the
    mixture sampler of SPEC section 3; "frequency": the training frequencies). Unconditional models have no class
    to weight, so `weighting` does not change their samples. Classes come from ``Generator(seed + 1)`` and prior
    noise from ``Generator(seed)``, so changing tau or weighting keeps the other draw fixed."""
    if n < 1:
        raise ConfigError(f"the number of samples must be >= 1 (got {n})")
    if tau is not None and not (tau >= 0 and math.isfinite(tau)):
        raise ConfigError(f"tau must be a finite number >= 0 (got {tau})")
    K = model.config.num_classes
    asked = None
    if model.class_conditional:
        asked = model.sample_classes(n, weighting, generator=torch.Generator().manual_seed(seed + 1))  # (n,)
    elif weighting not in ("equal", "frequency"):
        raise ConfigError(f"weighting must be 'equal' or 'frequency' (got {weighting!r})")
    noise = model.prior_noise(n, generator=torch.Generator().manual_seed(seed))  # (n, m) or (n, m + 1)
    images, preds = [], []
    for i in range(0, n, batch_size):
        y = None if asked is None else asked[i : i + batch_size]
        x = model.sample(len(noise[i : i + batch_size]), y, tau=tau, eps=noise[i : i + batch_size])  # (b, C, H, W)
        u8 = (x.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()  # the images as shown
        images.append(u8)
        preds.append(classifier.predict(u8))
    predicted = torch.cat(preds).numpy()
    return Draw(torch.cat(images), None if asked is None else asked.numpy(), predicted, class_counts(predicted, K))


def grid_order(rows: np.ndarray, K: int, per_row: int) -> list[list[int]]:
    """For each class k (a grid row), the indices of the first `per_row` samples whose row label is k (the class
    asked for, or the one the classifier sees): rows of rare classes stay short, as they are in the N samples."""
    rows = np.asarray(rows)
    return [np.flatnonzero(rows == k)[:per_row].tolist() for k in range(K)]


def scarce(shares_, fraction: float = SCARCE) -> list[int]:
    """Classes whose share is below `fraction` / K: the digits a model almost never shows."""
    s = np.asarray(shares_, dtype=np.float64)
    return np.flatnonzero(s < fraction / len(s)).tolist()


def group_share(shares_, classes) -> float:
    """Summed share of a group of classes (e.g. HEAD or TAIL)."""
    return float(np.asarray(shares_, dtype=np.float64)[list(classes)].sum())


# ------------------------------------------------------------------ a ct3vae at a nu of one's choice
def nu_label(nu: float) -> str:
    """2.5 -> '2.5', 10.0 -> '10' (folder names and labels)."""
    return f"{nu:g}"


def nu_run_name(rho: float, nu: float, steps: int, taken: set[str] = frozenset()) -> str:
    """A folder name for a ct3vae trained at `nu`, e.g. ``mnistlt100_ct3vae_nu7.5_2000steps``; `-2`, `-3`, ... when
    the name is taken."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", f"mnistlt{rho:g}_{SWEEP_MODEL}_nu{nu_label(nu)}_{steps}steps")
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name


class NuTraining:
    """Train a ct3vae with the config of a base run (usually a shipped member of the nu sweep) but another nu, in a
    background thread, then save it (with its metrics) to `out`. Nothing here calls the UI: the page polls
    ``snapshot()``. The base run's config and training settings are reused so the new run joins the sweep."""

    def __init__(self, base_info: dict, nu: float, steps: int, data: Dataset, out: str | Path):
        if base_info.get("model") != SWEEP_MODEL:
            raise ConfigError(f"the nu sweep is of {SWEEP_MODEL} runs (got a {base_info.get('model')} run)")
        if not (isinstance(steps, int) and steps >= 1):
            raise ConfigError(f"steps must be an integer >= 1 (got {steps!r})")
        config = make_config(SWEEP_MODEL, **dict(base_info["config"], nu=float(nu)))  # refuses nu <= 2 in one line
        t = base_info.get("train") or {}
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        keep = {k: t[k] for k in ("batch_size", "lr", "seed", "grad_clip") if k in t and k in fields}
        self.train = TrainConfig(**keep, steps=steps, log_every=max(1, min(50, steps // 50)))
        with torch.random.fork_rng(devices=[]):  # seeding must not reset the stream of another thread's job
            self.model = build_model(SWEEP_MODEL, config, seed=self.train.seed)
        self.nu, self.out = float(nu), Path(out)
        self.job = TrainingJob(self.model, data, self.train, au_images=200)
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
            text = f"training ν = {nu_label(self.nu)}: step {step:,} of {total:,}"
        elif self.status == "saving":
            text = f"ν = {nu_label(self.nu)}: evaluating and saving ({100 * self.save_fraction:.0f}%)"
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
