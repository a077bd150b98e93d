"""Timing helper shared by the benchmarks: interleaved repeats, median, ratio vs a reference."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable


def compare(fns: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median wall time of each fn over `repeats` rounds; rounds interleave the fns so that machine noise
    hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def table(title: str, med: dict[str, float], reference: str, unit_work: float, unit: str) -> str:
    ref = med[reference]
    rows = [f"**{title}** (reference: {reference})", "", f"| variant | median s | {unit} | speed vs reference |",
            "|---|---:|---:|---:|"]
    for k, t in med.items():
        rows.append(f"| {k} | {t:.3f} | {unit_work / t:,.0f} | {ref / t:.2f}x |")
    return "\n".join(rows) + "\n"


def timed_rerun(at, action) -> float:
    """Seconds for one AppTest interaction: `action(at)` (a widget change) and the rerun it causes; the page must
    show no exception and no error."""
    t0 = time.perf_counter()
    action(at)
    at.run()
    s = time.perf_counter() - t0
    assert not at.exception and not at.error, [e.value for e in at.error] or at.exception
    return s


@contextlib.contextmanager
def only_shipped_runs():
    """$CVAE_RUNS_DIR pointed at an empty folder while a page is timed, so it lists the shipped runs only."""
    saved = os.environ.get("CVAE_RUNS_DIR")
    with tempfile.TemporaryDirectory() as runs:
        os.environ["CVAE_RUNS_DIR"] = runs
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("CVAE_RUNS_DIR", None)
            else:
                os.environ["CVAE_RUNS_DIR"] = saved


def page_table(title: str, rows: list[tuple[str, float, float | None]], ref: float) -> str:
    """A page benchmark's table: what was timed, seconds, speed vs the reference, and the target it had (if any)."""
    lines = [title, "", "| what | s | speed vs reference | target | met |", "|---|---:|---:|---:|---|"]
    for what, s, target in rows:
        lines.append(f"| {what} | {s:.3f} | {ref / s:.1f}x | {'' if target is None else f'< {target:g}'} | "
                     f"{'' if target is None else ('yes' if s < target else 'NO')} |")
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def server_script_cache():
    """AppTest compiles the page anew on every run (a new ``ScriptCache`` each time, 5-25 ms with Streamlit's magic
    AST pass); a server compiles it once. Share one cache while a page is timed, so a rerun costs what it costs on a
    server."""
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    from streamlit.testing.v1 import app_test, local_script_runner

    shared = ScriptCache()
    saved = app_test.ScriptCache, local_script_runner.ScriptCache
    app_test.ScriptCache = local_script_runner.ScriptCache = lambda: shared
    try:
        yield
    finally:
        app_test.ScriptCache, local_script_runner.ScriptCache = saved


SCRIPT_SECONDS: list[float] = []  # filled while ``script_timer`` is active: the page script's own run time per run


@contextlib.contextmanager
def script_timer():
    """Record how long each page script run takes inside Streamlit's script runner (``SCRIPT_SECONDS``): the server's
    own work for a rerun, without AppTest's round trip (building and reading the element tree, 5-100 ms more)."""
    from streamlit.runtime.scriptrunner import script_runner

    real = script_runner.exec_func_with_error_handling

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            SCRIPT_SECONDS.append(time.perf_counter() - t)

    script_runner.exec_func_with_error_handling = timed
    try:
        yield
    finally:
        script_runner.exec_func_with_error_handling = real


def timed_script(at, action) -> float:
    """Seconds the page script itself ran for one AppTest interaction (``script_timer`` must be active); the page
    must show no exception and no error."""
    n = len(SCRIPT_SECONDS)
    timed_rerun(at, action)
    return sum(SCRIPT_SECONDS[n:])


# issue 20's targets: (key, what, target, unit, higher is better); a key absent from the figures is "not measured"
TARGETS = [
    ("fit_vs_examples_mlp", "fit / the pytorch/examples loop, MLP (fp32)", 3.0, "x", True),
    ("fit_vs_examples_conv", "fit / the pytorch/examples loop, conv (fp32)", 2.0, "x", True),
    ("fit_vs_examples_mlp_bf16", "the same, MLP, fit with bf16 autocast", 3.0, "x", True),
    ("fit_vs_examples_conv_bf16", "the same, conv, fit with bf16 autocast", 2.0, "x", True),
    ("elbo_rel_gap", "test -ELBO gap after the same epochs (MLP, mean of seeds)", 0.01, "", False),
    ("grid64_ms", "a 64-sample 28-px grid decoded and encoded", 15.0, " ms", False),
    ("generate_rerun_ms", "a Generate-page slider rerun", 50.0, " ms", False),
    ("first_umap_s", "first UMAP of 10k latents after start", 5.0, " s", False),
    ("app_start_s", "`make run` to the first page rendered", 5.0, " s", False),
    ("peak_rss_gib", "peak RSS, every shipped run loaded, every page visited", 2.0, " GiB", False),
]
BUDGET = {key: target for key, _, target, _, _ in TARGETS}  # the one place each budget is written
