"""Load test of the app: many browser sessions at once against a real ``streamlit run`` on localhost (issue 19).

    .venv/bin/python bench/load_test.py [--sessions 8] [--steps 300] [--max-jobs 1] [--json OUT]

The server gets its own process group, a free port, a temporary runs folder and ``CVAE_MAX_JOBS`` (1: the queue is
used); it is always killed at the end. One headless Debian chromium (through Python playwright; never ``playwright
install``) first opens Home once and waits for the server's one-off UMAP compile, then opens `sessions` browser
contexts, each a Streamlit session on ``/train?model=vae&steps=N``, and presses **Start** in all of them at about the
same time. While the runs train and wait, the script

- reads every session's page about twice a second: its status line ("step 125 of 300 · running", "queued"), its queue
  position and the board's load line ("1 of 1 training slots busy, 7 waiting"): queue waits (Start to "running"), the
  most runs busy at once by the board's count and as seen moving on the pages;
- opens one more, fresh session on Home and times until its heading and its runs table are shown;
- types a run name in each session, which reruns that session's page on the server, and times the answer;
- samples the server's resident memory (its process group, from /proc) every 0.5 s.

Once half the runs have started (--close-at), it closes the sessions' browser contexts, the rest still waiting, and
polls the sidebar's load line from fresh sessions until the board reads "0 ... busy, 0 waiting" (bounded by
--end-timeout), then measures the server's CPU use. It counts Streamlit exception boxes on every page and tracebacks
in the server's log (Streamlit's own websocket-close errors apart, see WS_CLOSED). The CPU used by other processes is
measured too, since the cores are shared; the test first waits (at most QUIET_WAIT s) for them to calm down.

A markdown table of the figures goes to stdout, ``--json`` writes them (with each session's trace), and the exit
status is 0 only when every criterion holds (``CRITERIA``). Linux only (/proc); bounded by --time-limit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import kill_group, start_server, wait_healthy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
HOME_HEADING, TRAIN_HEADING = "Interactive VAE lab", "Train a VAE live"
HOME_RUNS = "Pretrained runs shipped with the lab"  # Home's first section header (its table follows)
STATUS = re.compile(r"step ([\d,]+) of ([\d,]+) · (\w+)")  # the Train page's progress line
LOAD = re.compile(r"(\d+) of (\d+) training slots busy, (\d+) waiting")  # pages/_jobs.load_line()
UNNAMED = "Left empty, the run is saved as"  # the Save form's caption while the run name is empty
LIVE = ("queued", "running", "saving")
MIB = 1024 * 1024
QUIET_WAIT = 60.0  # seconds, at most, of waiting for other processes to calm down before the test

# criterion -> its test on the figures; the pytest wrapper tests/app/test_load.py asserts each one
CRITERIA = {
    "every session answers": lambda f: f["sessions_answering"] == f["sessions"],
    "a new session loads Home within 15 s": lambda f: f["home_load_s"] is not None and f["home_load_s"] < 15,
    "peak server RSS under 2 GiB": lambda f: f["peak_rss_mib"] < 2048,
    "never more runs busy than CVAE_MAX_JOBS": lambda f: max(f["max_busy"], f["max_advancing"]) <= f["max_jobs"],
    "closing the sessions ends their jobs": lambda f: f["jobs_end_s"] is not None,
    "the server is idle after the close (< 20% of a core)": lambda f: (f["cpu_after_close_pct"] is not None
                                                                       and f["cpu_after_close_pct"] < 20),
    "no exception box on any page": lambda f: f["exception_boxes"] == 0,
    "no traceback in the server log": lambda f: f["server_tracebacks"] == 0,
}


# ---------------------------------------------------------------------------------------------- the server process
# Streamlit 1.67 with Starlette 1.10: when a browser goes away while the server sends to it, starlette raises
# WebSocketDisconnected (a RuntimeError) in receive_bytes, Streamlit's websocket endpoint takes it for a text frame
# and calls close() on the closed socket, and uvicorn logs "Exception in ASGI application". The session was ending
# anyway; these are counted apart from the app's own tracebacks.
WS_CLOSED = "starlette.websockets.WebSocketDisconnected"


def tracebacks(log: str) -> list[str]:
    """The exception line ("module.Error: message") that ends each traceback in a log."""
    lines, out = log.splitlines(), []
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last):"):
            end = next((x for x in lines[i + 1:] if x.strip() and not x.startswith((" ", "\t"))), "?")
            out.append(end.strip())
    return out


# ---------------------------------------------------------------------------------- memory and CPU from /proc
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def processes() -> dict[int, tuple[int, int, float]]:
    """pid -> (parent pid, process group, CPU seconds used so far) of every process (/proc)."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:  # a process that ended meanwhile
                continue
            f = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ... utime stime
            out[int(d)] = (int(f[1]), int(f[2]), (int(f[11]) + int(f[12])) / CLOCK_TICKS)
    return out


def rss_bytes(pid: int) -> int:
    try:
        m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return 0
    return int(m.group(1)) * 1024 if m else 0


def group_usage(pgid: int) -> tuple[int, float]:
    """(resident bytes, CPU seconds used so far) summed over the processes of process group `pgid`."""
    members = [(pid, cpu) for pid, (_, grp, cpu) in processes().items() if grp == pgid]
    return sum(rss_bytes(pid) for pid, _ in members), sum(cpu for _, cpu in members)


def cpu_by_owner(server_pgid: int) -> dict[str, float]:
    """CPU seconds used so far by the server's process group, by this script and its descendants (the browser),
    and by the whole machine (busy time of all cores, /proc/stat)."""
    table = processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    mine, todo = set(), [os.getpid()]
    while todo:
        pid = todo.pop()
        if pid not in mine:
            mine.add(pid)
            todo += children.get(pid, [])
    server = {pid for pid, (_, grp, _) in table.items() if grp == server_pgid}
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return {"server": sum(table[p][2] for p in server), "load test": sum(table[p][2] for p in mine - server),
            "machine": (sum(v[:8]) - v[3] - v[4]) / CLOCK_TICKS}  # all but idle and iowait


class Sampler(threading.Thread):
    """The server group's RSS every `period` s; `peak` is the largest sum seen."""

    def __init__(self, pgid: int, period: float = 0.5):
        super().__init__(name="rss-sampler", daemon=True)
        self.pgid, self.period, self.peak, self.samples = pgid, period, 0, 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            rss, _ = group_usage(self.pgid)
            self.peak, self.samples = max(self.peak, rss), self.samples + 1
            self._halt.wait(self.period)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def cpu_percent(pgid: int, seconds: float) -> float:
    """The server group's CPU use over the next `seconds`, in % of one core."""
    _, c0 = group_usage(pgid)
    t0 = time.monotonic()
    time.sleep(seconds)
    _, c1 = group_usage(pgid)
    return 100 * (c1 - c0) / (time.monotonic() - t0)


def wait_for_quiet(threshold: float, timeout: float) -> float:
    """Wait (at most `timeout` s) until other processes use less than `threshold` % of one core over 3 s, since the
    test shares the cores with them; returns the last such reading."""
    deadline = time.monotonic() + timeout
    while True:
        c0, t0 = cpu_by_owner(-1), time.monotonic()
        time.sleep(3)
        c1, t1 = cpu_by_owner(-1), time.monotonic()
        other = 100 * ((c1["machine"] - c0["machine"]) - (c1["load test"] - c0["load test"])) / (t1 - t0)
        if other < threshold or time.monotonic() > deadline:
            return round(max(other, 0))
        print(f"waiting for a quieter machine: other processes use {other:.0f}% of a core", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- reading the pages
PAGE_TEXT = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const side = document.querySelector('[data-testid="stSidebar"]');
  const h1 = [...document.querySelectorAll('h1')].map(e => e.innerText);
  return {main: main ? main.innerText : '', side: side ? side.innerText : '', h1: h1,
          exceptions: document.querySelectorAll('[data-testid="stException"]').length,
          tables: document.querySelectorAll('[data-testid="stDataFrame"]').length};
}"""


def read_page(page) -> dict:
    try:
        return page.evaluate(PAGE_TEXT)
    except Exception as e:  # a page that is navigating or closed: nothing to read this time
        return {"main": "", "side": "", "h1": [], "exceptions": 0, "tables": 0, "error": str(e)}


class Session:
    """One browser context = one Streamlit session on the Train page, and what was seen of it."""

    def __init__(self, index: int, context, page):
        self.index, self.context, self.page = index, context, page
        self.t_start: float | None = None  # when Start was pressed
        self.t_running: float | None = None  # when its run was first seen running (or past it)
        self.positions: list[int] = []  # queue positions seen (1 = next)
        self.status, self.step, self.total = "", 0, 0
        self.t_seen: float | None = None  # last time a status line was read
        self.t_named: float | None = None  # when a run name was typed (a rerun on the server)
        self.answer_s: float | None = None  # how long that rerun took to show
        self.exceptions = 0
        self.trace: list[tuple[float, str, int]] = []  # (s after Start, status, step) at each change
        self.first_tick: tuple[float, int] | None = None  # (time, step) of the first step > 0 seen
        self.rate = 0.0  # steps/s between the first step > 0 seen and the last, while it ran

    def observe(self, now: float) -> dict:
        text = read_page(self.page)
        self.exceptions = max(self.exceptions, text["exceptions"])
        m = STATUS.search(text["main"])
        if m:
            self.step, self.total, self.status = int(m[1].replace(",", "")), int(m[2].replace(",", "")), m[3]
            self.t_seen = now
            if self.t_start is not None and (not self.trace or self.trace[-1][1:] != (self.status, self.step)):
                self.trace.append((round(now - self.t_start, 1), self.status, self.step))
            if self.status != "queued" and self.t_running is None and self.t_start is not None:
                self.t_running = now
            if self.status == "running" and self.step > 0:
                if self.first_tick is None:
                    self.first_tick = (now, self.step)
                elif now > self.first_tick[0] and self.step > self.first_tick[1]:
                    self.rate = (self.step - self.first_tick[1]) / (now - self.first_tick[0])
            if self.status == "queued":
                q = re.search(r"next in the queue|(\d+) job\(s\) ahead in the queue", text["main"])
                if q:
                    pos = 1 if q[1] is None else int(q[1]) + 1
                    if not self.positions or self.positions[-1] != pos:
                        self.positions.append(pos)
        if self.t_named is not None and self.answer_s is None and text["main"] and UNNAMED not in text["main"]:
            self.answer_s = now - self.t_named
        return text


def most_advancing(sessions: list[Session], t0: float) -> int:
    """The most sessions whose runs were seen moving at the same time, from the pages alone: a check of the board's
    own count. A run moves from its first to its last running step that a page showed; runs one after another
    do not overlap, whatever their speed."""
    spans = []
    for s in sessions:
        moves = [s.t_start - t0 + t for (_, _, before), (t, status, step) in zip(s.trace, s.trace[1:], strict=False)
                 if status == "running" and step > before]
        if moves:
            spans.append((min(moves), max(moves)))
    return max((sum(a <= t <= b for a, b in spans) for t, _ in spans), default=0)


def new_session_page(browser, url: str, wait: bool = True):
    """A new browser context (a new Streamlit session) with one page at `url`. With wait=False the navigation is
    only started, so that the caller can poll the page while the server is slow to answer."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    if wait:
        page.goto(url, wait_until="commit", timeout=60_000)
    else:
        page.evaluate("url => setTimeout(() => { window.location.href = url; }, 0)", url)
    return context, page


def wait_for(pred, timeout: float, period: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(period)
    return False


def probe_load_line(browser, base: str, timeout: float = 20) -> tuple[int, int, int] | None:
    """(busy, max, waiting) as a brand-new session's sidebar shows it; None if it did not show within `timeout`."""
    context, page = new_session_page(browser, f"{base}/", wait=False)
    try:
        found: list = []
        wait_for(lambda: found.append(LOAD.search(read_page(page)["side"])) or found[-1], timeout)
        m = found[-1] if found else None
        return (int(m[1]), int(m[2]), int(m[3])) if m else None
    finally:
        context.close()


# ---------------------------------------------------------------------------------------------- the test
def run(args) -> dict:
    from playwright.sync_api import sync_playwright

    t_begin = time.monotonic()
    deadline = t_begin + args.time_limit
    left = lambda: deadline - time.monotonic()  # noqa: E731
    tmp = Path(tempfile.mkdtemp(prefix="cvae-load-"))
    log_path = tmp / "server.log"
    figures: dict = {"sessions": args.sessions, "steps": args.steps, "max_jobs": args.max_jobs, "model": args.model,
                     "date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                     "end_timeout": args.end_timeout, "notes": []}
    figures["other_cpu_before_pct"] = wait_for_quiet(args.quiet, QUIET_WAIT)
    deadline = time.monotonic() + args.time_limit  # the wait above (at most QUIET_WAIT s) does not count
    extra_env = dict(kv.split("=", 1) for kv in args.server_env)
    figures["server_env"] = extra_env
    proc, port = start_server(tmp / "runs", log_path, env=dict(extra_env, CVAE_MAX_JOBS=str(args.max_jobs)))
    base = f"http://localhost:{port}"
    sampler = Sampler(proc.pid)
    watchdog = threading.Timer(args.time_limit + 60, lambda: (kill_group(proc), os._exit(3)))
    watchdog.daemon = True
    watchdog.start()
    try:
        wait_healthy(proc, port, log_path)
        sampler.start()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                drive(browser, base, proc.pid, args, left, figures)
            except Exception as e:  # a timeout or a crash: reported with the figures measured so far
                figures["error"] = f"{type(e).__name__} while {figures.get('phase')}: {str(e)[:1000]}"
            finally:
                browser.close()
    finally:
        watchdog.cancel()
        sampler.stop()
        kill_group(proc)
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
        errors = tracebacks(log)
        figures["server_tracebacks"] = sum(not e.startswith(WS_CLOSED) for e in errors)
        figures["server_ws_close_errors"] = sum(e.startswith(WS_CLOSED) for e in errors)
        figures["server_asgi_errors"] = log.count("Exception in ASGI application")
        figures["peak_rss_mib"] = round(sampler.peak / MIB)
        figures["rss_samples"] = sampler.samples
        figures["wall_s"] = round(time.monotonic() - t_begin, 1)
        if figures["server_tracebacks"]:
            figures["notes"] += [f"server log: {e}" for e in errors if not e.startswith(WS_CLOSED)][:5]
    figures["failed"] = [name for name, ok in CRITERIA.items() if not safe(ok, figures)]
    if "error" in figures:
        figures["failed"].insert(0, "the test ran to its end: " + figures["error"])
    if figures["failed"]:
        figures["notes"].append(f"server log and runs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return figures


def safe(test, figures: dict) -> bool:
    try:
        return bool(test(figures))
    except (KeyError, TypeError):
        return False


def drive(browser, base: str, pgid: int, args, left, f: dict) -> None:
    """The sessions, the busy phase, the close; figures go into `f` as they are measured."""
    # ---- warm-up, as before a class: a first page view, then the server's one-off UMAP compile (a background thread)
    f["phase"], t_warm = "warming up", time.monotonic()
    context, page = new_session_page(browser, f"{base}/")
    page.get_by_role("heading", name=HOME_HEADING).wait_for(timeout=min(90, left()) * 1000)
    context.close()
    wait_for(lambda: cpu_percent(pgid, 2) < 30, timeout=min(60, left() - 120), period=0)
    f["warm_up_s"] = round(time.monotonic() - t_warm, 1)

    f["phase"], t_open = "opening the sessions", time.monotonic()
    url = f"{base}/train?model={args.model}&steps={args.steps}"
    sessions = []
    for i in range(args.sessions):
        context, page = new_session_page(browser, url)
        sessions.append(Session(i, context, page))
    for s in sessions:  # every Train page shown, with its Start button
        s.page.get_by_role("heading", name=TRAIN_HEADING).wait_for(timeout=min(90, left()) * 1000)
        s.page.get_by_role("button", name=re.compile("Start")).wait_for(timeout=min(60, left()) * 1000)
    for s in sessions:  # settle: no element still being re-run, so a click is not lost in a rerun
        s.page.wait_for_function("document.querySelectorAll('[data-stale=\"true\"]').length === 0",
                                 timeout=min(60, left()) * 1000)
    f["pages_ready_s"] = round(time.monotonic() - t_open, 1)  # first goto to every Train page settled

    # ---- Start everywhere at about the same time
    f["phase"] = "pressing Start"
    for s in sessions:
        s.t_start = time.monotonic()
        s.page.get_by_role("button", name=re.compile("Start")).click()
    t0 = sessions[0].t_start
    f["start_spread_s"] = round(sessions[-1].t_start - t0, 2)
    cpu0, t_cpu0 = cpu_by_owner(pgid), time.monotonic()

    # ---- watch the runs and the queue; a fresh session on Home; a rerun in every session
    f["phase"], home = "watching the sessions", None  # home: (context, page, t_goto)
    max_busy = max_waiting = 0
    home_heading_s = home_table_s = None
    named = False
    while time.monotonic() - t0 < args.observe and left() > args.end_timeout + 30:
        now = time.monotonic()
        texts = [s.observe(now) for s in sessions]
        for t in texts:
            m = LOAD.search(t["main"]) or LOAD.search(t["side"])
            if m:
                max_busy, max_waiting = max(max_busy, int(m[1])), max(max_waiting, int(m[3]))
        if home is None and now - t0 >= args.home_after:
            home = (*new_session_page(browser, f"{base}/", wait=False), time.monotonic())
        if home is not None and (home_heading_s is None or home_table_s is None):
            h = read_page(home[1])
            if home_heading_s is None and HOME_HEADING in h["h1"] and HOME_RUNS in h["main"]:
                home_heading_s = time.monotonic() - home[2]
            if home_table_s is None and h["tables"] > 0:
                home_table_s = time.monotonic() - home[2]
        if not named and now - t0 >= args.rerun_after:
            for s in sessions:  # a rerun of the whole page on the server: the "Left empty" caption goes away
                box = s.page.get_by_role("textbox", name="Run name")
                box.fill(f"load-{s.index}", timeout=10_000)
                box.press("Enter", timeout=10_000)
                s.t_named = time.monotonic()
            named = True
        started = sum(s.t_running is not None for s in sessions)
        if started >= args.close_at and home_table_s is not None and all(s.answer_s is not None for s in sessions):
            break  # measured: close while the rest still wait, so that closing has jobs to end
        time.sleep(max(0.0, 0.5 - (time.monotonic() - now)))
    f["observed_s"] = round(time.monotonic() - t0, 1)
    cpu1, t_cpu1 = cpu_by_owner(pgid), time.monotonic()
    # % of one core during the busy phase: the server, this script with its browser, everything else on the machine
    pct = {k: 100 * (cpu1[k] - cpu0[k]) / max(t_cpu1 - t_cpu0, 1e-9) for k in cpu0}
    f["busy_phase_cpu_pct"] = {"server": round(pct["server"]), "browser": round(pct["load test"]),
                               "other": round(max(pct["machine"] - pct["server"] - pct["load test"], 0))}

    # ---- the figures of the busy phase
    waits = [s.t_running - s.t_start for s in sessions if s.t_running is not None]
    f["jobs_started"] = len(waits)
    f["queue_wait_s"] = ({"min": round(min(waits), 1), "median": round(statistics.median(waits), 1),
                          "max": round(max(waits), 1)} if waits else None)
    f["still_waiting_at_close"] = sum(s.t_running is None for s in sessions)
    f["queue_positions_seen"] = sorted({p for s in sessions for p in s.positions})
    f["max_busy"], f["max_waiting"] = max_busy, max_waiting
    f["max_advancing"] = most_advancing(sessions, t0)
    f["home_load_s"] = None if home_heading_s is None else round(home_heading_s, 1)
    f["home_table_s"] = None if home_table_s is None else round(home_table_s, 1)
    answers = [s.answer_s for s in sessions if s.answer_s is not None]
    f["rerun_answer_s"] = {"median": round(statistics.median(answers), 1), "max": round(max(answers), 1)} \
        if answers else None
    f["sessions_answering"] = sum(s.t_seen is not None and s.answer_s is not None and
                                  time.monotonic() - s.t_seen < 15 for s in sessions)
    alive = [s for s in sessions if s.status in LIVE]
    f["jobs_alive_at_close"] = len(alive)
    # a queued job's page says "step 0 of 0" (its total is set when it starts)
    f["steps_left_at_close"] = sum(max((s.total or args.steps) - s.step, 0) for s in alive)
    rate = max((s.rate for s in sessions), default=0.0)
    f["steps_per_s"] = round(rate, 1)  # the fastest run seen; with the load, what the queue could drain by itself
    f["drain_alone_s"] = round(f["steps_left_at_close"] / rate) if rate else None
    f["per_session"] = [{"status": s.status, "step": s.step, "positions": s.positions,
                         "wait_s": None if s.t_running is None else round(s.t_running - s.t_start, 1),
                         "answer_s": None if s.answer_s is None else round(s.answer_s, 1),
                         "steps_per_s": round(s.rate, 1), "trace": s.trace} for s in sessions]

    # ---- exception boxes on every page, then close every session
    f["phase"] = "closing the sessions"
    for s in sessions:
        s.observe(time.monotonic())
    f["exception_boxes"] = sum(s.exceptions for s in sessions)
    if home is not None:
        f["exception_boxes"] += read_page(home[1])["exceptions"]
        home[0].close()
    t_close = time.monotonic()
    for s in sessions:
        s.context.close()
    f["close_s"] = round(time.monotonic() - t_close, 1)

    # ---- the jobs of the closed sessions end: a fresh session's load line reads 0 busy, 0 waiting
    f["phase"], f["jobs_end_s"], f["load_after_close"] = "waiting for the jobs to end", None, []
    while time.monotonic() - t_close < args.end_timeout and left() > 15:
        line = probe_load_line(browser, base, timeout=min(20, left() - 10))
        f["load_after_close"].append([round(time.monotonic() - t_close, 1), line])
        if line is not None and line[0] == 0 and line[2] == 0:
            f["jobs_end_s"] = round(time.monotonic() - t_close, 1)
            break
        time.sleep(2)
    f["cpu_after_close_pct"] = round(cpu_percent(pgid, min(5.0, max(1.0, left() - 5))), 1)
    f["phase"] = "done"


# ---------------------------------------------------------------------------------------------- the report
def table(f: dict) -> str:
    w = f.get("queue_wait_s")
    r = f.get("rerun_answer_s")
    cpu = f.get("busy_phase_cpu_pct") or {}
    ended = (f"{f['jobs_end_s']} s" if f.get("jobs_end_s") is not None else
             f"not within {f.get('end_timeout', '?')} s (last load line: {_last_line(f)})")
    rows = [
        ("browser sessions at once", f"{f['sessions']} (+1 fresh on Home, + fresh probes after the close)"),
        ("runs per session / CVAE_MAX_JOBS", f"{f['model']}, {f['steps']} steps / {f['max_jobs']}"),
        ("jobs started (seen running) / still queued at close",
         f"{f.get('jobs_started', '?')} / {f.get('still_waiting_at_close', '?')}"),
        ("most runs busy at once: the board's load line / runs seen moving at once on the pages",
         f"{f.get('max_busy', '?')} / {f.get('max_advancing', '?')}"),
        ("queue wait, Start to running: min / median / max",
         f"{w['min']} / {w['median']} / {w['max']} s" if w else "none started"),
        ("a fresh session's Home: heading / runs table", f"{f.get('home_load_s')} s / {f.get('home_table_s')} s"),
        ("sessions answering / rerun after typing a name: median / max",
         f"{f.get('sessions_answering', '?')} of {f['sessions']} / " + (f"{r['median']} / {r['max']} s" if r else "-")),
        ("peak server RSS (process group, 0.5 s samples)", f"{f['peak_rss_mib']} MiB"),
        ("CPU while busy, % of one core: server / browser / other processes (before the test)",
         f"{cpu.get('server', '?')} / {cpu.get('browser', '?')} / {cpu.get('other', '?')} "
         f"({f.get('other_cpu_before_pct', '?')})"),
        ("fastest run seen", f"{f.get('steps_per_s', '?')} steps/s"),
        ("jobs alive at close: steps left (time to run them alone)",
         f"{f.get('jobs_alive_at_close', '?')}: {f.get('steps_left_at_close', '?')} (~{f.get('drain_alone_s')} s)"),
        ("closed sessions' jobs ended after", ended),
        ("server CPU after that", f"{f.get('cpu_after_close_pct')}% of one core"),
        ("exception boxes / server tracebacks (+ Streamlit's websocket-close errors)",
         f"{f.get('exception_boxes', '?')} / {f['server_tracebacks']} (+{f['server_ws_close_errors']})"),
        ("wall time", f"{f['wall_s']} s"),
    ]
    out = [f"Load test, {f['date']}, {f['machine']}", "", "| figure | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    out.append("")
    out.append("All criteria hold." if not f["failed"] else "FAILED: " + "; ".join(f["failed"]))
    return "\n".join(out)


def _last_line(f: dict) -> str:
    seen = [line for _, line in f.get("load_after_close", []) if line is not None]
    return f"{seen[-1][0]} busy, {seen[-1][2]} waiting" if seen else "none read"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=8, help="browser sessions that press Start at once (1-16)")
    ap.add_argument("--steps", type=int, default=300, help="training steps of each session's run")
    ap.add_argument("--model", default="vae", help="the model each session trains")
    ap.add_argument("--max-jobs", type=int, default=1, help="CVAE_MAX_JOBS of the server")
    ap.add_argument("--observe", type=float, default=150, help="at most this many seconds of the busy phase")
    ap.add_argument("--close-at", type=int, help="close the sessions once this many runs have started "
                    "(default: half the sessions), the others still waiting")
    ap.add_argument("--home-after", type=float, default=8, help="seconds after Start to open a fresh Home session")
    ap.add_argument("--rerun-after", type=float, default=20, help="seconds after Start to type a run name everywhere")
    ap.add_argument("--end-timeout", type=float, default=60, help="seconds to wait for the closed sessions' jobs")
    ap.add_argument("--time-limit", type=float, default=360, help="seconds for the whole test")
    ap.add_argument("--quiet", type=float, default=50, help=f"first wait (at most {QUIET_WAIT:.0f} s) until other "
                    "processes use less than this %% of one core")
    ap.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                    help="an extra environment variable for the server (e.g. OMP_NUM_THREADS=1); repeatable")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    if not 1 <= args.sessions <= 16:
        ap.error("--sessions must be 1-16")
    args.close_at = args.close_at or max(1, (args.sessions + 1) // 2)
    if any("=" not in kv for kv in args.server_env):
        ap.error("--server-env takes NAME=VALUE")
    if not CHROMIUM.exists():
        print(f"error: {CHROMIUM} not found (apt-get install chromium; never 'playwright install')", file=sys.stderr)
        return 2
    if not Path("/proc/self/stat").exists():
        print("error: the load test reads memory and CPU from /proc (Linux only)", file=sys.stderr)
        return 2
    figures = run(args)
    print(table(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n")
    return 1 if figures["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
