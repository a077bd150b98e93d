"""The app as a user starts it: `make run` to the first page rendered in Chromium, and the server's peak memory with
every page visited (every shipped run each page opens on is then loaded).

- ``app_start_s``: seconds from starting ``make run`` (already set up) until Chromium shows the Home page's title
  and its first run grid, the median of 3 starts after one that fills the disk cache. Budget 5 s.
- ``peak_rss_gib``: the largest resident memory of the server's process tree while one browser visits every page
  and waits until each has finished drawing. Budget 2 GiB.

Needs /usr/bin/chromium and the playwright package; says so and stops otherwise.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BUDGET  # noqa: E402
from _server import REPO, free_port, kill_group, wait_drawn  # noqa: E402
from load_test import CHROMIUM, CHROMIUM_ARGS, Sampler  # noqa: E402  (the load test's RSS sampler)

PAGES = ["", "train", "generate", "compare", "latent_map", "class_balance", "rare_combinations", "certificate",
         "strategies"]
GIB = 1 << 30


def start_once(page, tmp: Path, visit: bool = False) -> dict:
    """One `make run` until the Home page's first grid shows in `page`; with `visit`, then every page in turn (for
    the server's peak RSS). The server is always killed at the end."""
    port = free_port()
    out: dict = {}
    env = dict(os.environ, CVAE_RUNS_DIR=str(tmp / "runs"), PORT=str(port))
    with open(tmp / "make_run.log", "w") as log:
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
                        raise RuntimeError(f"make run did not serve: {(tmp / 'make_run.log').read_text()}") from None
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
            peak.stop()
            kill_group(proc)
    out["peak_rss_gib"] = peak.peak / GIB
    return out


def figures(visit: bool = True, repeats: int = 3) -> dict:
    """The medians of `repeats` starts after one unmeasured start (which fills the disk cache: the first start of
    a day is slower, and varies with the machine's other work); then, with `visit`, one more start that visits
    every page."""
    if not CHROMIUM.exists():
        return {"skipped": f"{CHROMIUM} not found"}
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        return {"skipped": f"playwright missing ({e})"}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            def once(**kw) -> dict:
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                try:
                    return start_once(page, Path(tmp), **kw)
                finally:
                    page.close()

            first = once()
            runs = [once() for _ in range(repeats)]
            out = {k: statistics.median(r[k] for r in runs) for k in ("served_s", "title_s", "app_start_s")}
            out.update(first_start_s=first["app_start_s"], repeats=repeats,
                       app_start_all_s=[round(r["app_start_s"], 2) for r in runs])
            if visit:
                v = once(visit=True)
                out["pages_s"], out["peak_rss_gib"] = v["pages_s"], v["peak_rss_gib"]
        finally:
            browser.close()
    return out


def table(f: dict) -> str:
    if "skipped" in f:
        return f"**App start and memory**: skipped ({f['skipped']}).\n"
    rows = ["**App start and memory** (`make run`, already set up, to the Home page drawn in Chromium; then one "
            "browser visits every page)", "", "| what | measured | budget | met |", "|---|---:|---:|---|",
            f"| `make run` to the first page rendered | {f['app_start_s']:.1f} s | {BUDGET['app_start_s']:g} s | "
            f"{'yes' if f['app_start_s'] <= BUDGET['app_start_s'] else 'NO'} |"]
    rows.append(f"| of which: the server answers / the Home title shows | {f['served_s']:.1f} s / {f['title_s']:.1f} s "
                "|  |  |")
    rows.append(f"| (medians of {f['repeats']} starts: {', '.join(f'{v:g}' for v in f['app_start_all_s'])} s; the "
                f"first, unmeasured start: {f['first_start_s']:.1f} s) |  |  |  |")
    if "pages_s" in f:
        rss, budget = f["peak_rss_gib"], BUDGET["peak_rss_gib"]
        rows.append(f"| peak RSS of the server, every page visited | {rss:.2f} GiB | {budget:g} GiB | "
                    f"{'yes' if rss <= budget else 'NO'} |")
        rows += ["", "Seconds per page until drawn: " + ", ".join(f"{k} {v:g}" for k, v in f["pages_s"].items())]
    return "\n".join(rows) + "\n"


def main() -> tuple[str, dict]:
    f = figures()
    return table(f), f


if __name__ == "__main__":
    print(main()[0])
