"""The Train page's training-job plumbing: start a job for the session, the server-wide board that stops jobs no page
has shown for a while, pause/step/stop, run names and saving. Moved here as it was from ``_ui`` (a core ``JobBoard``
is to replace it); the training itself runs in ``cvae_core.jobs.TrainingJob``'s worker thread.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import streamlit as st

from cvae_core.errors import LabError
from cvae_core.eval.certificate import LiveCertificate
from cvae_core.jobs import TrainingJob
from cvae_core.runs import catalog
from cvae_core.runs.setup import TICK_IMAGES, build_run
from cvae_core.train import TrainConfig
from cvae_core.witness import config_of
from pages._runs import get_dataset

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# A job whose browser tab is gone (closed, reloaded) would otherwise train on until its step count is used up.
# Every page view marks its session's job as seen (app.py calls mark_session_job_seen; the Train page's live view
# also touches it at each tick), and a Start anywhere stops jobs that no page has shown for ORPHAN_AGE seconds.
# The age is long on purpose: a teacher may sit on the Home page, or a background tab may be throttled and not
# refresh, for minutes while a student presses Start; stopping their run then would be worse than letting an
# abandoned one finish its bounded number of steps. Paused jobs are never stopped (someone is looking at them).
ORPHAN_AGE = 600.0  # seconds (10 minutes)


@st.cache_resource
def _job_board() -> dict[int, list]:
    """Every job this server started: id -> [job, last time a page showed it]. Shared by all sessions."""
    return {}


_board_lock = threading.Lock()


def touch(job: TrainingJob | None) -> None:
    """Mark `job` as just seen by a page (no-op for None or a job this server did not start)."""
    if job is None:
        return
    with _board_lock:
        if id(job) in _job_board():
            _job_board()[id(job)][1] = time.monotonic()


def mark_session_job_seen() -> None:
    """Call on every page view: this session's job, if any, is still wanted (see ORPHAN_AGE)."""
    touch(st.session_state.get("job"))


def stop_job(job: TrainingJob | None, timeout: float = 10.0) -> None:
    if job is not None and job.alive:
        job.stop()
        job.join(timeout)


def _stop_orphans(max_age: float = ORPHAN_AGE, now: float | None = None) -> None:
    """Forget finished jobs; stop running, unpaused jobs that no page has shown for `max_age` s."""
    now = time.monotonic() if now is None else now
    with _board_lock:
        board = _job_board()
        for k, (job, seen) in list(board.items()):
            if not job.alive:
                del board[k]
            elif now - seen > max_age and not job.snapshot()["paused"]:
                job.stop()


AU_IMAGES = TICK_IMAGES  # test images whose encoder means each tick reads (one number for CLI, pages and jobs)


def live_certificate(job: TrainingJob | None) -> LiveCertificate | None:
    return next((c for c in job.callbacks if isinstance(c, LiveCertificate)), None) if job else None


def start_training(setup: dict, options: dict) -> TrainingJob:
    """Stop this session's old job, build the model and data set from the setup, start a new job.
    Raises LabError (ConfigError / DataError) with a one-line message on bad values."""
    rho = setup["rho"] if setup["dataset"].endswith("-lt") else 10.0
    data = get_dataset(setup["dataset"], rho=rho)
    train = TrainConfig(steps=setup["steps"], batch_size=setup["batch_size"], lr=setup["lr"], seed=setup["seed"],
                        log_every=max(1, min(25, setup["steps"] // 8), setup["steps"] // 200))  # <= ~200 ticks
    # the one set-up pipeline (cvae_core.runs.setup): options, data-fixed fields, seeded build, model/data check
    run = build_run(setup["model"], data, dict(options, latent_dim=setup["latent_dim"], beta=setup["beta"]), train)
    model = run.model
    stop_job(st.session_state.get("job"))  # only once the new setup is known to be valid
    _stop_orphans()
    # GT each tick, the teacher read or fitted in the background (nothing for a latent too small for the witness)
    live = LiveCertificate(data, data.x_test[:AU_IMAGES], config_of(model), latent_dim=model.config.latent_dim)
    job = TrainingJob(model, data, train, au_images=AU_IMAGES, callbacks=[live]).start()
    with _board_lock:
        _job_board()[id(job)] = [job, time.monotonic()]
    st.session_state["job"], st.session_state["job_setup"] = job, dict(setup, **options)
    return job


def step_and_wait(job: TrainingJob, timeout: float = 5.0) -> None:
    """While paused: run one optimiser step and wait (bounded) until its log record is complete."""
    n_before = len(job.snapshot()["records"])
    job.step(1)
    t0 = time.monotonic()
    while job.alive and len(job.snapshot()["records"]) == n_before and time.monotonic() - t0 < timeout:
        time.sleep(0.05)


def suggested_run_name(setup: dict) -> str:
    """A run name from the setup, e.g. ``bs_vae-mnist-beta1-m16-400steps-lr0.001-seed0``, so that runs with a
    different model, data set, beta, latent size, length, learning rate or seed get different names. Falls back to
    shorter labels in the rare case the full name would not fit RUN_NAME (64 characters)."""
    data = setup["dataset"] + (f"-rho{setup['rho']:g}" if setup.get("rho") is not None else "")
    for labels in (("beta", "m", "steps", "lr", "seed"), ("b", "m", "st", "lr", "s")):
        b, m, st_, lr, sd = labels
        name = (f"{setup['model']}-{data}-{b}{setup['beta']:g}-{m}{setup['latent_dim']}-{setup['steps']}{st_}"
                f"-{lr}{setup['lr']:g}-{sd}{setup['seed']}")
        if RUN_NAME.fullmatch(name):
            return name
    return name[:64].rstrip("-._")


_saving: set[Path] = set()  # run folders being written right now, by any session
_saving_lock = threading.Lock()


def save_job(job: TrainingJob, name: str, overwrite: bool = False, **save_kw) -> Path:
    """Save the job as catalog.saved_root()/name. Refuses (LabError) a name that is already taken unless
    `overwrite`, and a name that another session is saving at this moment (evaluating the test set takes a few
    seconds)."""
    if not RUN_NAME.fullmatch(name):
        raise LabError(f"run name {name!r} may only use letters, digits, '.', '_' and '-' (up to 64 characters)")
    path = catalog.saved_root() / name
    with _saving_lock:
        if path in _saving:
            raise LabError(f"a run named {name!r} is being saved right now (from another tab); choose another name")
        if not overwrite and (path.exists() or path.is_symlink()):
            raise LabError(f"a run named {name!r} is already saved; choose another name or tick "
                           f"\"Overwrite an existing run of this name\"")
        _saving.add(path)
    try:
        return job.save(path, **save_kw)
    finally:
        with _saving_lock:
            _saving.discard(path)
