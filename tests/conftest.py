"""Shared fixtures for the model-core tests: the offline MNIST copy, small subsets, and a repo-root path.

The gpu marker skips tests when no CUDA device is present; slow tests are excluded by pytest.ini's addopts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The app's job board runs one training per two cores; page tests in one process share one board, so a slow test's
# job must not make the next test's Start wait in the queue. The queue has its own tests (tests/test_jobs.py and one
# page test that lowers the limit).
os.environ.setdefault("CVAE_MAX_JOBS", "8")
if str(REPO) not in sys.path:  # so `import cvae_core` works without installing the package
    sys.path.insert(0, str(REPO))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def mnist():
    """The full offline MNIST split (60k/10k uint8; loads in ~0.2 s from <repo>/.data)."""
    from cvae_core.data import load_dataset

    return load_dataset("mnist")


@pytest.fixture(scope="session")
def mnist_small(mnist):
    """First 512 training and 256 test images: enough for a few optimiser steps and stable metrics."""
    return mnist.subset(512, 256)


@pytest.fixture
def one_thread():
    """Small batches: one torch thread is faster, and on a shared 2-core machine two threads can be 10-30x slower
    (OpenMP threads waiting on each other). Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def lab_dirs(tmp_path, monkeypatch):
    """Empty runs and checkpoints folders for the app, so tests never touch the repository's own (the shipped
    classifier is still found: see cvae_core.eval.classifier.default_classifier_dir)."""
    runs, ckpt = tmp_path / "runs", tmp_path / "checkpoints"
    monkeypatch.setenv("CVAE_RUNS_DIR", str(runs))
    monkeypatch.setenv("CVAE_CHECKPOINTS_DIR", str(ckpt))
    return runs, ckpt
