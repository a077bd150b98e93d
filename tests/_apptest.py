"""Helpers shared by the AppTest page tests (not a test module: pytest collects test_*.py only)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def open_page(path: str, timeout: float, **query) -> AppTest:
    """The page script at `path`, run once with `query` in its URL."""
    at = AppTest.from_file(path, default_timeout=timeout)
    at.query_params.update(query)
    return at.run()


def texts(elements) -> str:
    """The values of a list of elements (errors, captions, ...) as one searchable string."""
    return " | ".join(str(e.value) for e in elements)
