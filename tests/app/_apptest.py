"""Helpers shared by the AppTest page tests (not a test module: pytest collects test_*.py only)."""

from __future__ import annotations

import base64
import os

import numpy as np
from streamlit.testing.v1 import AppTest


def open_page(path: str, timeout: float, **query) -> AppTest:
    """The page script at `path`, run once with `query` in its URL."""
    at = AppTest.from_file(path, default_timeout=timeout)
    at.query_params.update(query)
    return at.run()


def texts(elements) -> str:
    """The values of a list of elements (errors, captions, ...) as one searchable string."""
    return " | ".join(str(e.value) for e in elements)


def plotly_values(a) -> np.ndarray:
    """A plotly array from a figure's JSON: a list, or a typed array {'dtype', 'bdata'[, 'shape']} (base64)."""
    if isinstance(a, dict):
        v = np.frombuffer(base64.b64decode(a["bdata"]), dtype=np.dtype(a["dtype"]))
        return v.reshape([int(n) for n in str(a["shape"]).split(",")]) if "shape" in a else v
    return np.asarray(a)


def open_page_without_saved_runs(path: str, timeout: float, **query) -> AppTest:
    """`open_page` with $CVAE_RUNS_DIR pointed at a folder that does not exist, so the page lists the shipped runs
    only (for a module-scoped first view, where pytest's monkeypatch is not available)."""
    old = os.environ.get("CVAE_RUNS_DIR")
    os.environ["CVAE_RUNS_DIR"] = "/nonexistent-runs-dir"
    try:
        return open_page(path, timeout, **query)
    finally:
        if old is None:
            os.environ.pop("CVAE_RUNS_DIR", None)
        else:
            os.environ["CVAE_RUNS_DIR"] = old


LESSON = "What am I looking at?"


def lesson_text(at: AppTest) -> str:
    """The text of the page's one teaching expander ("What am I looking at?", the school icon), checked to be there
    exactly once with that title and icon."""
    found = [e for e in at.expander if e.label == LESSON]
    assert len(found) == 1, [e.label for e in at.expander]
    assert found[0].proto.icon == ":material/school:"
    return texts(found[0].markdown)
