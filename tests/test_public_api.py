"""The public API of ``cvae_core`` (``__all__``): every name has a runnable Example in its docstring, and the
examples run here (doctest, zuko's style), so the documentation cannot drift from the code."""

from __future__ import annotations

import doctest
import inspect

import pytest

import cvae_core
from cvae_core import registry

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
pytestmark = pytest.mark.usefixtures("one_thread")


def _run(obj, name: str) -> tuple[int, int]:
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs={})
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for t in tests:
        runner.run(t)
    return sum(len(t.examples) for t in tests), runner.failures


def test_all_names_the_promised_api():
    assert set(cvae_core.__all__) >= {"build_model", "load_run", "save_run", "fit", "TrainConfig", "evaluate",
                                      "load_dataset", "MODELS"}
    assert all(hasattr(cvae_core, n) for n in cvae_core.__all__)


@pytest.mark.parametrize("name", sorted(cvae_core.__all__))
def test_the_example_of_each_public_name_runs(name, mnist):
    obj = getattr(cvae_core, name)
    where = registry if name == "MODELS" else obj  # a dict has no docstring of its own: its module's shows it
    if not (inspect.isfunction(where) or inspect.isclass(where) or inspect.ismodule(where)):
        pytest.fail(f"{name} is neither a function, a class nor documented by its module")
    n, failed = _run(where, name)
    assert n >= 2, f"{name}: its docstring needs an Example (found {n} doctest lines)"
    assert failed == 0, f"{name}: {failed} of its {n} Example lines failed (see the doctest report above)"


def test_the_package_example_runs(mnist):
    n, failed = _run(cvae_core, "cvae_core")
    assert n >= 4 and failed == 0
