"""A real ``streamlit run app.py`` for the load test and the browser and exposure tests: a free localhost port, its
own process group (so every child goes with it), a health wait, and a kill that always happens."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# what the tests and the load test pass; the exposure test passes none, to read .streamlit/config.toml as `make run`
FLAGS = ("--server.address", "localhost", "--server.headless", "true", "--browser.gatherUsageStats", "false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_server(runs_dir: Path, log_path: Path, *, flags: tuple[str, ...] = FLAGS, env: dict | None = None
                 ) -> tuple[subprocess.Popen, int]:
    """(the server process, its port): app.py with its runs saved under `runs_dir`, output to `log_path`."""
    port = free_port()
    full_env = dict(os.environ, CVAE_RUNS_DIR=str(runs_dir), PYTHONPATH=str(REPO), **(env or {}))
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), *flags],
            cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, port


def wait_healthy(proc: subprocess.Popen, port: int, log_path: Path, timeout: float = 60) -> None:
    """Until /_stcore/health answers ok; RuntimeError with the log's tail when the server exits or never answers."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"streamlit did not answer /_stcore/health within {timeout:.0f} s")
        time.sleep(0.3)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, then SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def running_server(runs_dir: Path, log_path: Path, *, flags: tuple[str, ...] = FLAGS, env: dict | None = None,
                   timeout: float = 60) -> Iterator[tuple[subprocess.Popen, int]]:
    """``start_server`` and ``wait_healthy``; the server is killed on the way out, whatever happened."""
    proc, port = start_server(runs_dir, log_path, flags=flags, env=env)
    try:
        wait_healthy(proc, port, log_path, timeout)
        yield proc, port
    finally:
        kill_group(proc)


def wait_drawn(page, timeout_s: float = 120) -> None:
    """Until a Streamlit page in a playwright `page` has drawn: no stale element in three checks 0.5 s apart (a rerun
    about to start leaves none stale, so one check is not enough)."""
    deadline, quiet = time.monotonic() + timeout_s, 0
    while quiet < 3:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{page.url} did not finish drawing within {timeout_s:.0f} s")
        quiet = quiet + 1 if page.evaluate("document.querySelectorAll('[data-stale=\"true\"]').length") == 0 else 0
        page.wait_for_timeout(500)
