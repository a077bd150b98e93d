"""The app as a user starts it: `make run` to the first page rendered in Chromium, and the server's peak memory with
every page visited (every shipped run each page opens on is then loaded).

- ``app_start_s``: seconds from starting ``make run`` (already set up: the second call of the day) until Chromium
  shows the Home page's title and its first run grid. Budget 5 s.
- ``peak_rss_gib``: the largest resident memory of the server's process tree while one browser visits every page
  and waits until each has finished drawing. Budget 2 GiB.

Needs /usr/bin/chromium and the playwright package; says so and stops otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import REPO, free_port, kill_group, wait_drawn  # noqa: E402
from load_test import CHROMIUM, CHROMIUM_ARGS, Sampler  # noqa: E402  (the load test's RSS sampler)

PAGES = ["", "train", "generate", "compare", "latent_map", "class_balance", "rare_combinations", "certificate",
         "strategies"]
GIB = 1 << 30


def figures(visit: bool = True) -> dict:
    if not CHROMIUM.exists():
        return {"skipped": f"{CHROMIUM} not found"}
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        return {"skipped": f"playwright missing ({e})"}
    port = free_port()
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, CVAE_RUNS_DIR=str(Path(tmp) / "runs"), PORT=str(port))
        log = open(Path(tmp) / "make_run.log", "w")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            t0 = time.perf_counter()
            proc = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=REPO, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            peak = Sampler(proc.pid, period=0.2)  # make run's own process group (start_new_session)
            peak.start()
            try:
                while True:
                    try:
                        page.goto(f"http://localhost:{port}/", timeout=5_000)
                        break
                    except Exception:  # not listening yet
                        if proc.poll() is not None or time.perf_counter() - t0 > 120:
                            told = (Path(tmp) / "make_run.log").read_text()
                            raise RuntimeError(f"make run did not serve: {told}") from None
                        time.sleep(0.1)
                out["served_s"] = time.perf_counter() - t0
                page.get_by_role("heading", name="Interactive VAE lab").wait_for(timeout=60_000)
                out["title_s"] = time.perf_counter() - t0
                page.locator('[data-testid="stImage"]').first.wait_for(timeout=60_000)
                out["app_start_s"] = time.perf_counter() - t0
                if visit:
                    visited = {}
                    for name in PAGES:
                        t = time.perf_counter()
                        page.goto(f"http://localhost:{port}/{name}", timeout=60_000)
                        page.locator("h1").first.wait_for(timeout=120_000)
                        wait_drawn(page)
                        visited[name or "home"] = round(time.perf_counter() - t - 1.5, 2)  # less the quiet wait
                    out["pages_s"] = visited
                    time.sleep(1)
            finally:
                browser.close()
                peak.stop()
                kill_group(proc)
                log.close()
        out["peak_rss_gib"] = peak.peak / GIB
    return out


def table(f: dict) -> str:
    if "skipped" in f:
        return f"**App start and memory**: skipped ({f['skipped']}).\n"
    rows = ["**App start and memory** (`make run`, already set up, to the Home page drawn in Chromium; then one "
            "browser visits every page)", "", "| what | measured | budget | met |", "|---|---:|---:|---|",
            f"| `make run` to the first page rendered | {f['app_start_s']:.1f} s | 5 s | "
            f"{'yes' if f['app_start_s'] <= 5 else 'NO'} |"]
    rows.append(f"| of which: the server answers / the Home title shows | {f['served_s']:.1f} s / {f['title_s']:.1f} s "
                "|  |  |")
    if "pages_s" in f:
        rows.append(f"| peak RSS of the server, every page visited | {f['peak_rss_gib']:.2f} GiB | 2 GiB | "
                    f"{'yes' if f['peak_rss_gib'] <= 2 else 'NO'} |")
        rows += ["", "Seconds per page until drawn: " + ", ".join(f"{k} {v:g}" for k, v in f["pages_s"].items())]
    return "\n".join(rows) + "\n"


def main() -> tuple[str, dict]:
    f = figures()
    return table(f), f


if __name__ == "__main__":
    print(main()[0])
