"""The one job interface (``cvae_core.jobs``): image, nu and sequence jobs answer the same controls and the same
snapshot schema, and the server-wide ``JobBoard`` stops an owner's old job, stops orphans (never paused ones),
forgets ended jobs and reserves run names."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from cvae_core import jobs
from cvae_core.errors import ConfigError, LabError
from cvae_core.registry import build_model
from cvae_core.sequence.model import SeqCVAEConfig
from cvae_core.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
SHIPPED_BASE = Path(__file__).resolve().parents[1] / "checkpoints" / "strategies" / "base"


def _image_job(data, steps=10**6, **kw) -> jobs.TrainingJob:
    """log_every=1: the snapshot's step is the true step whenever the job is parked."""
    model = build_model("vae", seed=0, arch="mlp", hidden=16, latent_dim=2)
    return jobs.TrainingJob(model, data, TrainConfig(steps=steps, batch_size=16, log_every=1), n_preview=4,
                            au_images=32, **kw)


def _wait(pred, timeout=60.0) -> None:
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.02)


@pytest.fixture
def tiny(mnist):
    return mnist.subset(256, 64)


def test_image_job_controls_and_snapshot_schema(tiny):
    job = _image_job(tiny)
    snap = job.snapshot()
    assert tuple(snap) == jobs.SNAPSHOT_KEYS and snap["status"] == "running" and not job.started
    job.start()
    job.pause()
    _wait(lambda: job.control._parked)
    s0 = job.snapshot()["step"]
    job.step(3)
    _wait(lambda: job.snapshot()["step"] == s0 + 3)
    time.sleep(0.2)
    assert job.snapshot()["step"] == s0 + 3 and job.snapshot()["paused"]  # exactly three steps, then parked again
    job.stop()
    job.join(30)
    snap = job.snapshot()
    assert snap["status"] == "stopped" and not job.alive and snap["kind"] == "image" and snap["saved"] is None
    assert snap["records"][-1]["step"] == snap["step"] and snap["previews"]["samples"].shape[0] == 4


def test_a_job_with_save_to_saves_when_finished(tiny, tmp_path):
    job = _image_job(tiny, steps=6, save_to=tmp_path / "run").start()
    job.join(120)
    snap = job.snapshot()
    assert snap["status"] == "saved" and snap["saved"] == tmp_path / "run" and snap["fraction"] == 1.0, snap["text"]
    assert (tmp_path / "run" / "model.safetensors").is_file() and snap["text"] == "saved as run"
    with pytest.raises(LabError, match="is a file"):  # the destination is checked before any training
        _image_job(tiny, save_to=tmp_path / "run" / "model.safetensors")


def test_a_failing_job_reports_instead_of_dying(tiny):
    job = _image_job(tiny, steps=4)
    job.model.loss = None  # calling it raises TypeError in the worker thread
    job.start().join(30)
    snap = job.snapshot()
    assert snap["status"] == "failed" and "TypeError" in snap["message"] and snap["text"] == snap["message"]


def test_board_replaces_an_owners_job_and_stops_orphans_but_not_paused_ones(tiny):
    board = jobs.JobBoard(orphan_age=100.0, max_running=4)
    a = board.submit(("s1", "train"), _image_job(tiny), now=0.0)
    b = board.submit(("s1", "train"), _image_job(tiny), now=1.0)  # the same owner: the old job is stopped
    assert not a.alive and a.snapshot()["status"] == "stopped" and board.get(("s1", "train")) is b
    c = board.submit(("s2", "train"), _image_job(tiny), now=2.0)
    c.pause()
    board.touch(("s1", "train"), now=50.0)
    assert board.stop_orphans(now=120.0) == []  # b was shown 70 s ago; c is paused: neither is an orphan
    assert b.alive and c.alive
    assert board.stop_orphans(now=160.0) == [("s1", "train")]  # b unseen for 110 s; c still paused
    b.join(30)
    assert not b.alive and b.snapshot()["status"] == "stopped" and c.alive
    c.resume()
    assert board.stop_orphans(now=161.0) == [("s2", "train")]  # c unpaused, unseen for 159 s; b ended: forgotten
    c.join(30)
    assert not c.alive and board.get(("s1", "train")) is None and board.get(("s2", "train")) is c
    assert board.stop_orphans(now=162.0) == [] and board.get(("s2", "train")) is None and board.running() == []


def test_board_reserves_run_names(tiny, tmp_path):
    board = jobs.JobBoard(max_running=4)
    with board.reserve(tmp_path / "x"):
        with pytest.raises(LabError, match="'x' is being trained or saved"):
            with board.reserve(tmp_path / "x"):
                pass
        with pytest.raises(LabError, match="'x'"):  # a job that will save there is refused too
            board.submit("s9", _image_job(tiny, steps=2, save_to=tmp_path / "x"))
    with board.reserve(tmp_path / "x"):  # released after the block
        pass
    job = board.submit("s1", _image_job(tiny, steps=2, save_to=tmp_path / "y"))
    with pytest.raises(LabError, match="'y'"):
        board.submit("s2", _image_job(tiny, steps=2, save_to=tmp_path / "y"))
    job.join(120)
    board.stop_orphans()  # the job ended: its name is free for the next save (which then finds the folder taken)
    with board.reserve(tmp_path / "y"):
        pass


def test_sequence_job_has_the_same_interface(tmp_path):
    job = jobs.SeqTrainingJob(tmp_path / "seq", SeqCVAEConfig(K=2), 10**6, SHIPPED_BASE, n_test=8, n_control=4,
                              log_every=1)
    assert tuple(job.snapshot()) == jobs.SNAPSHOT_KEYS and job.snapshot()["kind"] == "sequence"
    job.start()
    _wait(lambda: job.snapshot()["step"] >= 1, timeout=120)
    job.pause()
    _wait(lambda: job.control._parked)
    s0 = job.snapshot()["step"]
    job.step(2)
    _wait(lambda: job.snapshot()["step"] == s0 + 2)
    assert job.snapshot()["paused"] and job.snapshot()["records"][-1]["step"] == s0 + 2
    job.stop()
    job.join(60)
    snap = job.snapshot()
    assert snap["status"] == "stopped" and snap["saved"] is None and not (tmp_path / "seq").exists()


def test_board_queues_past_its_limit_and_starts_in_order(tiny):
    board = jobs.JobBoard(max_running=1)
    a = board.submit("a", _image_job(tiny))
    b = board.submit("b", _image_job(tiny))
    c = board.submit("c", _image_job(tiny, steps=3))
    assert a.started and not b.started and not c.started and b.alive and c.alive  # waiting counts as alive
    sb, sc = b.snapshot(), c.snapshot()
    assert (sb["status"], sb["queue_position"], sc["status"], sc["queue_position"]) == ("queued", 1, "queued", 2)
    assert "next in the queue" in sb["text"] and "1 job(s) ahead" in sc["text"]
    assert a.snapshot()["queue_position"] is None
    assert board.counts() == {"running": 1, "queued": 2, "max": 1}
    b.stop()  # a waiting job is cancelled: it never starts, and the queue closes up
    assert not b.alive and b.snapshot()["status"] == "stopped" and "cancelled" in b.snapshot()["message"]
    assert board.counts()["queued"] == 1 and c.snapshot()["queue_position"] == 1
    a.stop()
    a.join(30)
    _wait(lambda: c.started)  # a's end starts the next waiting job
    c.join(60)
    assert c.snapshot()["status"] == "finished" and not b.started and board.counts()["running"] == 0
    board.stop_orphans()
    assert board.running() == [] and board.counts() == {"running": 0, "queued": 0, "max": 1}


class _Parked(jobs.Job):
    """A job that only waits until it is stopped."""

    kind = "parked"

    def _work(self) -> None:
        while not self.control.stopped:
            time.sleep(0.01)
        self.history.status = "stopped"


def _press_start_together(board: jobs.JobBoard, parked: list[jobs.Job]) -> None:
    barrier = threading.Barrier(len(parked))

    def press_start(i: int) -> None:
        barrier.wait()
        board.submit((f"session{i}", "train"), parked[i])

    threads = [threading.Thread(target=press_start, args=(i,)) for i in range(len(parked))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)


def test_board_never_runs_more_than_its_limit_when_sessions_submit_at_once():
    """Eight sessions pressing Start together (the load test, bench/load_test.py): one runs, seven wait. Starting a
    job after the board's lock was released once let five of them run with max_running=1."""
    for _ in range(5):
        board, parked = jobs.JobBoard(max_running=1), [_Parked() for _ in range(8)]
        _press_start_together(board, parked)
        assert sum(j.started for j in parked) == 1
        assert board.counts() == {"running": 1, "queued": 7, "max": 1}
        for j in parked:
            j.stop()
        _wait(lambda parked=parked: not any(j.alive for j in parked))
        assert sum(j.started for j in parked) == 1  # the cancelled ones never started


def test_board_releases_a_waiting_job_and_cancels_orphans_in_the_queue(tiny, tmp_path):
    board = jobs.JobBoard(orphan_age=100.0, max_running=1)
    a = board.submit("a", _image_job(tiny), now=0.0)
    b = board.submit("b", _image_job(tiny, save_to=tmp_path / "b"), now=0.0)
    with pytest.raises(LabError, match="'b'"):  # its name is held while it waits
        board.submit("x", _image_job(tiny, save_to=tmp_path / "b"), now=0.0)
    board.release("b")  # the session closed its tab: cancelled, its name freed
    assert not b.alive and not b.started and board.get("b") is None and board.counts()["queued"] == 0
    with board.reserve(tmp_path / "b"):
        pass
    c = board.submit("c", _image_job(tiny), now=0.0)
    board.touch("a", now=150.0)
    assert board.stop_orphans(now=150.0) == ["c"]  # unseen while waiting for 150 s: cancelled
    assert not c.alive and not c.started and a.alive
    a.stop()
    a.join(30)


def test_a_closed_sessions_jobs_stop_after_the_grace_even_when_paused_or_waiting(tiny):
    connected = {"s1": True, "s2": True, "s3": True}
    board = jobs.JobBoard(orphan_age=100.0, max_running=2, close_grace=10.0,
                          session_alive=lambda owner: connected[owner[0]])
    a = board.submit(("s1", "train"), _image_job(tiny), now=0.0)
    b = board.submit(("s2", "train"), _image_job(tiny), now=0.0)
    c = board.submit(("s3", "train"), _image_job(tiny), now=0.0)  # waits: two slots
    b.pause()
    connected["s3"] = False  # a tab closed
    assert board.stop_orphans(now=1.0) == []  # gone for 0 s: within the grace (a network blip)
    connected["s3"] = True  # it came back within the grace: its clock is reset
    assert board.stop_orphans(now=4.0) == []
    connected["s3"] = False
    assert board.stop_orphans(now=5.0) == []
    connected["s2"] = False
    assert board.stop_orphans(now=6.0) == []
    assert board.stop_orphans(now=12.0) == []  # s3 gone 7 s since it came back (11 s since it first left)
    assert board.stop_orphans(now=15.0) == [("s3", "train")]  # the waiting job: cancelled, never started
    assert not c.alive and not c.started and board.counts() == {"running": 2, "queued": 0, "max": 2}
    assert board.stop_orphans(now=16.0) == [("s2", "train")]  # paused, but its session closed 10 s ago
    b.join(30)
    assert not b.alive and b.snapshot()["status"] == "stopped" and a.alive
    a.stop()
    a.join(30)


def test_an_idle_paused_job_is_stopped_after_the_longer_paused_age(tiny):
    board = jobs.JobBoard(orphan_age=100.0, paused_age=1000.0, max_running=2)
    a = board.submit("a", _image_job(tiny), now=0.0)
    a.pause()
    assert board.stop_orphans(now=999.0) == [] and a.alive
    assert board.stop_orphans(now=1001.0) == ["a"]
    a.join(30)
    assert not a.alive


def test_the_watcher_thread_stops_a_closed_sessions_job_without_a_submit(tiny):
    connected = {"s": True}
    board = jobs.JobBoard(max_running=1, close_grace=0.2, session_alive=lambda owner: connected[owner])
    board.watch(every=0.05)
    try:
        job = board.submit("s", _image_job(tiny))
        time.sleep(0.5)
        assert job.alive  # connected: the watcher leaves it alone
        connected["s"] = False
        job.join(30)
        assert job.snapshot()["status"] == "stopped" and board.counts()["running"] == 0
        _wait(lambda: board.get("s") is None, timeout=10)  # the ended job is forgotten by the next look
    finally:
        board.close()
    assert not board._watcher.is_alive()


def test_the_default_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(jobs.MAX_JOBS_ENV, raising=False)
    assert jobs.default_max_jobs() == max(1, (os.cpu_count() or 2) // 2)
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "3")
    assert jobs.default_max_jobs() == 3 and jobs.JobBoard().max_running == 3
    for bad in ("0", "-1", "abc", "1e9", "2.5"):
        monkeypatch.setenv(jobs.MAX_JOBS_ENV, bad)
        with pytest.raises(ConfigError, match="CVAE_MAX_JOBS must be a whole number"):
            jobs.default_max_jobs()


def test_jobs_share_the_data_set_instead_of_copying_it(mnist):
    """A job's memory is its model, optimiser and previews: four jobs on the full MNIST training set (47 MB of uint8
    images) add less than one copy of it to the process's memory, all four together. (Four jobs on a small subset
    first: the first threads' allocator and library set-up costs ~180 MB once, whatever the data.)"""
    import psutil

    def four_jobs(data) -> int:
        board = jobs.JobBoard(max_running=4)
        before = psutil.Process().memory_info().rss
        started = [board.submit(i, _image_job(data)) for i in range(4)]
        try:
            _wait(lambda: all(len(j.snapshot()["records"]) >= 3 for j in started), timeout=120)
            return psutil.Process().memory_info().rss - before
        finally:
            for i in range(4):
                board.release(i)

    four_jobs(mnist.subset(1000, 100))
    grown = four_jobs(mnist)
    assert mnist.x_train.numel() == 60_000 * 784
    assert grown < mnist.x_train.numel(), f"{grown / 2**20:.0f} MiB for four jobs"  # a copy each: >= 4 x 47 MB
