"""The load test (``bench/load_test.py``, issue 19): 8 browser sessions at once against a real ``streamlit run``, with
``CVAE_MAX_JOBS=1`` so that seven runs wait in the job board's queue. Marked ``browser`` and ``slow``: it takes 3-5
minutes on 2 cores, so it is left out of the default suite (``pytest -m slow tests/app/test_load.py`` runs it, as
does ``make loadtest``). The helpers that read the server's log and judge the figures are tested here too, fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import load_test  # noqa: E402

SESSIONS = 8

try:
    import playwright  # noqa: F401
    PLAYWRIGHT_MISSING = None
except ImportError as e:  # pragma: no cover - depends on the environment
    PLAYWRIGHT_MISSING = f"LOAD TEST SKIPPED: the playwright Python package is not importable ({e})"


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(load_test.QUIET_WAIT + 360 + 120)
def test_eight_sessions_at_once(tmp_path):
    if PLAYWRIGHT_MISSING:
        pytest.skip(PLAYWRIGHT_MISSING)
    if not load_test.CHROMIUM.exists():
        pytest.skip(f"LOAD TEST SKIPPED: {load_test.CHROMIUM} not found (install Debian's chromium package)")
    out = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "load_test.py"), "--sessions", str(SESSIONS),
                           "--time-limit", "360", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=load_test.QUIET_WAIT + 360 + 90)
    report = proc.stdout[-4000:] + proc.stderr[-3000:]
    assert out.exists(), report
    f = json.loads(out.read_text())
    assert "error" not in f, report
    assert f["sessions"] == SESSIONS and f["max_jobs"] == 1
    assert f["jobs_started"] >= 1 and f["max_waiting"] >= 1, report  # the queue was used
    assert f["sessions_answering"] == SESSIONS, report
    assert f["home_load_s"] is not None and f["home_load_s"] < 15, report
    assert f["peak_rss_mib"] < 2048, report
    assert f["max_busy"] <= f["max_jobs"], report  # the board's own count
    assert f["max_advancing"] <= f["max_jobs"], report  # runs seen moving at once on the pages
    assert f["exception_boxes"] == 0, report
    assert f["server_tracebacks"] == 0, report
    # closing the sessions ends their jobs: the board reads 0 busy, 0 waiting, and the server goes quiet
    assert f["jobs_end_s"] is not None, report
    assert f["cpu_after_close_pct"] < 20, report
    assert proc.returncode == 0, report


def test_tracebacks_tell_streamlits_websocket_close_from_app_errors():
    log = "\n".join([
        "Exception in ASGI application", "Traceback (most recent call last):", '  File "x.py", line 1, in f',
        "    await websocket.receive_bytes()",
        'starlette.websockets.WebSocketDisconnected: WebSocket is not connected. Need to call "accept" first.', "",
        "During handling of the above exception, another exception occurred:", "",
        "Traceback (most recent call last):", '  File "y.py", line 2, in g',
        'starlette.websockets.WebSocketDisconnected: Cannot call "send" once a close message has been sent.',
        "2026-12-07 12:00:00.000 Uncaught app execution", "Traceback (most recent call last):",
        '  File "pages/train.py", line 9, in <module>', "ValueError: boom", "  Stopping...",
    ])
    errors = load_test.tracebacks(log)
    assert errors == ['starlette.websockets.WebSocketDisconnected: WebSocket is not connected. Need to call "accept" '
                      'first.', 'starlette.websockets.WebSocketDisconnected: Cannot call "send" once a close message '
                      'has been sent.', "ValueError: boom"]
    assert [e.startswith(load_test.WS_CLOSED) for e in errors] == [True, True, False]


def test_runs_seen_moving_at_once_from_the_pages():
    """Two runs whose steps move in the same stretch of time count as two, however fast; one after another, one."""
    def session(i: int, trace: list) -> load_test.Session:
        s = load_test.Session(i, None, None)
        s.t_start, s.trace = 100.0, trace
        return s

    a = session(0, [[3.2, "running", 0], [4.2, "running", 25], [7.1, "running", 50], [11.3, "running", 75]])
    b = session(1, [[3.1, "running", 0], [6.3, "running", 25], [12.3, "running", 50]])
    c = session(2, [[3.0, "queued", 0], [11.5, "running", 0], [11.6, "running", 25], [11.7, "running", 50]])
    assert load_test.most_advancing([a, b, c], 100.0) == 2
    assert load_test.most_advancing([a, c], 100.0) == 1
    assert load_test.most_advancing([], 100.0) == 0


def test_criteria_and_table_on_canned_figures():
    good = {"sessions": 8, "steps": 300, "max_jobs": 1, "model": "vae", "date": "2026-12-07",
            "machine": "x86_64, 2 cores", "end_timeout": 60, "sessions_answering": 8, "home_load_s": 4.2,
            "home_table_s": 6.0, "peak_rss_mib": 1500, "max_busy": 1, "max_advancing": 1, "max_waiting": 7,
            "jobs_end_s": 12.5,
            "cpu_after_close_pct": 3.0, "exception_boxes": 0, "server_tracebacks": 0, "server_ws_close_errors": 1,
            "jobs_started": 4, "queue_wait_s": {"min": 1.0, "median": 20.0, "max": 45.0}, "wall_s": 200.0,
            "load_after_close": [[3.0, [1, 1, 3]], [12.5, [0, 1, 0]]]}
    assert [name for name, ok in load_test.CRITERIA.items() if not ok(good)] == []
    bad = dict(good, jobs_end_s=None, home_load_s=15.0, peak_rss_mib=2048, load_after_close=[[3.0, [1, 1, 3]]])
    assert [name for name, ok in load_test.CRITERIA.items() if not load_test.safe(ok, bad)] == [
        "a new session loads Home within 15 s", "peak server RSS under 2 GiB", "closing the sessions ends their jobs"]
    text = load_test.table(dict(good, failed=[]))
    assert "| queue wait, Start to running: min / median / max | 1.0 / 20.0 / 45.0 s |" in text
    assert "All criteria hold." in text
    assert "not within 60 s (last load line: 1 busy, 3 waiting)" in load_test.table(dict(bad, failed=["x"]))


def test_the_server_does_not_collect_garbage_after_every_rerun():
    """Streamlit's default gc.collect(2) after each script run (0.2-0.4 s with the GIL held here) saturated the server
    with 8 sessions whose live views rerun every second; .streamlit/config.toml turns it off."""
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False
