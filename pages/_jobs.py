"""The pages' job plumbing over the server's one ``cvae_core.jobs.JobBoard``: submit a session's job (Train, the nu
training of Class balance, the sequence CVAE of Strategies), mark jobs as seen, pause/step/stop, run names and
saving. The training itself runs in the jobs' worker threads.
"""

from __future__ import annotations

import re
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import streamlit as st
from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

from cvae_core import jobs
from cvae_core.errors import ConfigError, LabError
from cvae_core.eval.certificate import LiveCertificate
from cvae_core.jobs import Job, JobBoard, TrainingJob, per_core_max_jobs
from cvae_core.runs import catalog
from cvae_core.runs.checkpoint import Checkpoint, list_checkpoints, read_checkpoint
from cvae_core.runs.setup import TICK_IMAGES, build_run
from cvae_core.train import TrainConfig
from cvae_core.witness import config_of
from pages._runs import get_dataset

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# One JobBoard per server (cvae_core.jobs): every session's jobs by owner (the Streamlit session and a slot: "train",
# "nu", "seq"). The board's watcher thread stops a job whose browser session has closed (tab closed or reloaded) after
# CLOSE_GRACE seconds, paused or not, and a job no page has shown for ORPHAN_AGE seconds (PAUSED_AGE when paused): every
# page view marks its session's jobs as seen (app.py calls mark_session_job_seen; the Train page's live view also
# touches its job at each tick).
ORPHAN_AGE = jobs.ORPHAN_AGE
SLOTS = {"train": "job", "nu": "nu_job", "seq": "seq_job", "gen": "gen_job"}  # slot -> the session_state key of its job


SESSION_IDS: dict[str, str] = {}  # owner key -> Streamlit's id of that browser session


def session_alive(owner: tuple[str, str]) -> bool:
    """Is the owner's browser session still connected to this server? True when unknown (no Streamlit runtime, as
    under AppTest): only a session Streamlit knows to be gone ends a job."""
    session_id = SESSION_IDS.get(owner[0])
    if session_id is None or not Runtime.exists():
        return True
    try:
        return bool(Runtime.instance().is_active_session(session_id))
    except Exception:  # a runtime that is starting or stopping
        return True


PROBLEMS: list[str] = []  # a bad CVAE_MAX_JOBS, said on every page (mark_session_job_seen)


@st.cache_resource
def board() -> JobBoard:
    """The server's one job board, shared by all sessions: at most CVAE_MAX_JOBS trainings at once (default one per
    two cores), the rest wait in a queue."""
    try:
        return JobBoard(session_alive=session_alive).watch()
    except ConfigError as e:
        fallback = per_core_max_jobs()
        PROBLEMS.append(f"{e}; the server runs {fallback} training(s) at once instead.")
        return JobBoard(session_alive=session_alive, max_running=fallback).watch()


def load_line() -> str:
    """How busy the server is, e.g. "1 of 1 training slots busy, 2 waiting"."""
    c = board().counts()
    return f"{c['running']} of {c['max']} training slots busy, {c['queued']} waiting"


def owner(slot: str) -> tuple[str, str]:
    """This browser session's owner key of a slot."""
    if "_lab_session" not in st.session_state:
        st.session_state["_lab_session"] = uuid.uuid4().hex
        ctx = get_script_run_ctx()  # the server's id of this browser session, which session_alive asks about
        if ctx is not None:  # (not the owner key itself: AppTest gives every session the same id)
            SESSION_IDS[st.session_state["_lab_session"]] = ctx.session_id
    return st.session_state["_lab_session"], slot


def submit(slot: str, job: Job) -> Job:
    """Stop this session's job of the slot, stop orphans, register and start `job`; keep it in the session."""
    board().submit(owner(slot), job)
    st.session_state[SLOTS[slot]] = job
    return job


def touch(job: Job | None) -> None:
    """Mark `job` as just seen by a page (no-op for None or a job this server did not start)."""
    if job is not None:
        board().touch_job(job)


def mark_session_job_seen() -> None:
    """Call on every page view: this session's jobs, if any, are still wanted (see ORPHAN_AGE)."""
    board()
    for problem in PROBLEMS:
        st.warning(problem, icon=":material/settings:")
    for key in SLOTS.values():
        touch(st.session_state.get(key))


@st.fragment(run_every=1.0)
def job_progress(key: str, on_end: Callable[[Job, dict], None]) -> None:
    """The progress bar of the job in ``st.session_state[key]``, redrawn every second while the page shows it (pages
    draw it only while a job runs). When the job ends: ``on_end(job, snapshot)`` (a message, the run to show), then a
    full rerun, and polling stops."""
    job = st.session_state.get(key)
    if job is None:
        return
    snap = job.snapshot()
    if snap["status"] in jobs.ENDED:
        st.session_state.pop(key)
        on_end(job, snap)
        st.rerun(scope="app")
    st.progress(snap["fraction"], text=snap["text"])


def stop_job(job: Job | None, timeout: float = 10.0) -> None:
    if job is not None and job.alive:
        job.stop()
        job.join(timeout)


AU_IMAGES = TICK_IMAGES  # test images whose encoder means each tick reads (one number for CLI, pages and jobs)


def live_certificate(job: TrainingJob | None) -> LiveCertificate | None:
    return next((c for c in job.callbacks if isinstance(c, LiveCertificate)), None) if job else None


CHECKPOINTS = ".checkpoints"  # under the saved-runs folder (hidden from the run catalog): one folder per Start
KEEP_CHECKPOINTS = 12  # the newest this many checkpoints no job holds are kept; older ones are deleted at a Start
PAGE_SPEC = "train-page"  # the `kind` of the spec the Train page writes into its checkpoints


def checkpoint_root() -> Path:
    return catalog.saved_root() / CHECKPOINTS


def checkpoint_every(steps: int) -> int:
    """Steps between two checkpoints of a Train page run: about 20 per run, at least 100 steps apart."""
    return max(100, steps // 20)


def lost_runs() -> list[dict]:
    """The Train page checkpoints no job on this server holds (``runs.checkpoint.list_checkpoints``), newest first:
    runs the server lost (restarted, a tab closed, a Start that replaced them) or finished and never saved."""
    return [c for c in list_checkpoints(checkpoint_root())
            if c["spec"].get("kind") == PAGE_SPEC and not board().held(c["folder"])]


def _prune_checkpoints() -> None:
    for old in lost_runs()[KEEP_CHECKPOINTS:]:
        shutil.rmtree(old["folder"], ignore_errors=True)


def discard_checkpoint(folder: Path) -> None:
    if board().held(folder):
        raise LabError("that run is training right now; stop it first")
    shutil.rmtree(folder, ignore_errors=True)


def resume_training(folder: Path) -> TrainingJob:
    """Continue the Train page run checkpointed in `folder` (``start_training`` with its setup and options)."""
    ck = read_checkpoint(folder)
    if ck.spec.get("kind") != PAGE_SPEC:
        raise LabError(f"{folder.name} is not a Train page checkpoint")
    return start_training(ck.spec["setup"], ck.spec["options"], resume=ck)


def start_training(setup: dict, options: dict, resume: Checkpoint | None = None) -> TrainingJob:
    """Stop this session's old job, build the model and data set from the setup, start a new job (or continue the
    run checkpointed in `resume`). It writes checkpoints (``checkpoint_every``) to a folder under
    ``checkpoint_root()``, so that nothing is lost if the server or the session goes.
    Raises LabError (ConfigError / DataError / CheckpointError) with a one-line message on bad values."""
    rho = setup["rho"] if setup["dataset"].endswith("-lt") else 10.0
    data = get_dataset(setup["dataset"], rho=rho)
    train = TrainConfig(steps=setup["steps"], batch_size=setup["batch_size"], lr=setup["lr"], seed=setup["seed"],
                        log_every=max(1, min(25, setup["steps"] // 8), setup["steps"] // 200))  # <= ~200 ticks
    # the one set-up pipeline (cvae_core.runs.setup): options, data-fixed fields, seeded build, model/data check
    run = build_run(setup["model"], data, dict(options, latent_dim=setup["latent_dim"], beta=setup["beta"]), train)
    model = run.model
    # GT each tick, the teacher read or fitted in the background (nothing for a latent too small for the witness)
    live = LiveCertificate(data, data.x_test[:AU_IMAGES], config_of(model), latent_dim=model.config.latent_dim)
    folder = resume.path.parent if resume is not None else \
        checkpoint_root() / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    job = TrainingJob(model, data, train, au_images=AU_IMAGES, callbacks=[live], checkpoint_to=folder,
                      checkpoint_every=checkpoint_every(train.steps), resume=resume,
                      checkpoint_spec={"kind": PAGE_SPEC, "setup": setup, "options": options})
    # only now that the new setup is known to be valid: the board stops this session's old job and any orphans
    job = submit("train", job)
    _prune_checkpoints()
    st.session_state["job_setup"] = dict(setup, **options)
    return job


def pause_and_wait(job: Job, timeout: float = 5.0) -> None:
    """Pause and wait (bounded) until the worker has finished its step and waits before the next, so that the page
    drawn next shows the step the run stopped at (and a Step after it moves the count by exactly one)."""
    job.pause()
    t0 = time.monotonic()
    while job.started and job.alive and not job.control.parked and time.monotonic() - t0 < timeout:
        time.sleep(0.02)


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


def save_job(job: TrainingJob, name: str, overwrite: bool = False, **save_kw) -> Path:
    """Save the job as catalog.saved_root()/name. Refuses (LabError) a name that is already taken unless
    `overwrite`, and a name that another session is saving at this moment (evaluating the test set takes a few
    seconds)."""
    if not RUN_NAME.fullmatch(name):
        raise LabError(f"run name {name!r} may only use letters, digits, '.', '_' and '-' (up to 64 characters)")
    path = catalog.saved_root() / name
    with board().reserve(path):  # refused when another session trains or saves this name right now
        if not overwrite and (path.exists() or path.is_symlink()):
            raise LabError(f"a run named {name!r} is already saved; choose another name or tick "
                           f"\"Overwrite an existing run of this name\"")
        saved = job.save(path, **save_kw)
    folder = getattr(job, "checkpoint_to", None)
    if folder is not None and not job.alive:  # saved at its end: its checkpoint has nothing more to keep
        shutil.rmtree(folder, ignore_errors=True)
    return saved
