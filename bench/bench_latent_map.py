"""Latent map: UMAP and PCA of the encoder means of the 10k MNIST test images (m = 16, the shipped mnist_vae run)
and the page's cached rerun, against references measured in the same process:

- UMAP: umap-learn with its default settings (pynndescent k-NN, spectral init, 500 epochs at N = 10k, parallel
  SGD) vs ``cvae_core.eval.projection.umap_2d`` (exact scikit-learn k-NN, PCA init, 100 epochs, random_state, which
  makes the SGD single-threaded), and ours with parallel SGD (no random_state) to show that choice.
- Warm-up (numba compile) in a fresh process: umap-learn's default path vs ours (``warm_up_umap``).
- PCA: scikit-learn ``PCA(2)`` with its default solver vs ``pca_2d`` (covariance eigh solver).
- The page: first script run on a shipped run, and a rerun with the same selection (all caches hit), via AppTest.

Targets (2-core CPU): first UMAP of 10k latents after warm-up <= 5 s, PCA < 100 ms, a cached rerun < 50 ms.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
try:
    from _common import BUDGET, compare, table
except ImportError:
    from bench._common import BUDGET, compare, table

FRESH_WARMUPS = {  # run each in a fresh interpreter: the compile cost is per process
    "umap-learn defaults": "import numpy as np, umap; x = np.random.default_rng(0).standard_normal((64, 4)); "
                           "r = umap.UMAP(force_approximation_algorithm=True).fit(x); r.transform(x[:4] + 0.01)",
    "ours (warm_up_umap)": "from cvae_core.eval.projection import warm_up_umap; warm_up_umap()",
}


def _table(title: str, med: dict[str, float], reference: str, unit: str = "ms") -> str:
    """Like _common.table, for times far below a second (ms) or single events (no rate column)."""
    scale = 1000.0 if unit == "ms" else 1.0
    rows = [f"**{title}** (reference: {reference})", "", f"| variant | median {unit} | speed vs reference |",
            "|---|---:|---:|"]
    rows += [f"| {k} | {t * scale:.{1 if unit == 'ms' else 2}f} | {med[reference] / t:.2f}x |" for k, t in med.items()]
    return "\n".join(rows) + "\n"


def _fresh(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - t0


def _latents(n: int = 10_000) -> np.ndarray:
    from cvae_core.data import load_dataset
    from cvae_core.eval.likelihood import encoder_means
    from cvae_core.runs.folder import load_run

    model, _ = load_run(REPO / "checkpoints" / "mnist_vae")
    return encoder_means(model, load_dataset("mnist").x_test[:n]).numpy()


def _page_times(repeats: int = 7) -> tuple[float, float]:
    """(first run, median cached rerun) of the Latent map page on the first shipped run, in seconds."""
    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory() as runs:
        os.environ.setdefault("CVAE_RUNS_DIR", runs)
        at = AppTest.from_file(str(REPO / "pages" / "latent_map.py"), default_timeout=300)
        t0 = time.perf_counter()
        at.run()
        first = time.perf_counter() - t0
        assert not at.exception and len(at.get("plotly_chart")) == 2, "the page did not render its charts"
        reruns = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            at.run()
            reruns.append(time.perf_counter() - t0)
    return first, statistics.median(reruns)


FIGURES: dict = {}  # filled by main(): first_umap_s for make bench's final JSON line


def main(repeats: int = 3) -> str:
    import umap
    from sklearn.decomposition import PCA

    from cvae_core.eval.projection import ExactKNNIndex, pca_2d, umap_2d, warm_up_umap

    warnings.filterwarnings("ignore")
    mu = _latents()
    n, m = mu.shape
    out = []

    t0 = time.perf_counter()
    warm_up_umap()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, reducer = umap_2d(mu, seed=0)
    first_fit = time.perf_counter() - t0
    FIGURES["first_umap_s"] = first_fit
    t0 = time.perf_counter()
    reducer.transform(np.random.default_rng(0).standard_normal((500, m)).astype(np.float32))  # the prior overlay
    first_transform = time.perf_counter() - t0

    def ours_parallel():
        idx = ExactKNNIndex(mu)
        i, d = idx.query(mu, 15)
        umap.UMAP(n_neighbors=15, n_epochs=100, init="pca", n_jobs=-1, precomputed_knn=(i, d, idx)).fit_transform(mu)

    med = compare({"umap-learn defaults": lambda: umap.UMAP().fit_transform(mu),
                   "ours, parallel SGD (no random_state)": ours_parallel,
                   "ours (umap_2d)": lambda: umap_2d(mu, seed=0)}, repeats=repeats, warmup=1)
    out.append(table(f"UMAP of {n:,} encoder means (m = {m}), after warm-up", med, "umap-learn defaults", n,
                     "latents/s"))

    fresh = {k: _fresh(code) for k, code in FRESH_WARMUPS.items()}
    out.append(_table("UMAP warm-up (import + numba compile) in a fresh process", fresh, "umap-learn defaults", "s"))

    med = compare({"sklearn PCA(2), default solver": lambda: PCA(2).fit_transform(mu),
                   "ours (pca_2d)": lambda: pca_2d(mu)}, repeats=21, warmup=2)
    out.append(_table(f"PCA of {n:,} encoder means (m = {m})", med, "sklearn PCA(2), default solver"))
    pca_s = med["ours (pca_2d)"]

    page_first, page_rerun = _page_times()
    rows = [("UMAP warm-up in this process (before the first map)", warm_s, None),
            (f"first UMAP of {n:,} latents after warm-up (fit)", first_fit, BUDGET["first_umap_s"]),
            ("  + placing 500 prior samples (transform)", first_fit + first_transform, BUDGET["first_umap_s"]),
            (f"PCA of {n:,} latents", pca_s, 0.1),
            ("Latent map page, first run (5,000 images, PCA; AppTest)", page_first, None),
            ("Latent map page, rerun with the same selection (caches hit; AppTest)", page_rerun, 0.05)]
    lines = ["**Latent map targets** (2-core CPU)", "", "| what | s | target | met |", "|---|---:|---:|---|"]
    for what, s, target in rows:
        lines.append(f"| {what} | {s:.3f} | {'' if target is None else f'<= {target:g}'} | "
                     f"{'' if target is None else ('yes' if s <= target else 'NO')} |")
    out.append("\n".join(lines) + "\n")
    return "\n".join(out)


if __name__ == "__main__":
    print(main())
