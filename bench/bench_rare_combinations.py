"""Rare combinations page: how long a slider move takes to redraw, on the four shipped morpho-mnist runs, against a
reference measured in the same process:

- reference: what a move would cost without the app's caches: load the four runs, draw and measure 16 samples of
  each for the combination, fit the latent PCA of both flow runs (2,000 test images each) and draw their prior
  picture;
- the page through AppTest: its first run (data set, four runs, two PCA fits), a rerun with nothing moved, a move
  of an attribute slider to a value the page has not drawn (16 samples x 4 runs drawn and measured, two prior
  pictures) and to a digit not drawn; after a pause (the page's prefetcher draws every condition one move away:
  each attribute flipped, the digits either side), an attribute flip and a digit step; and a move back to a value
  shown before (caches hit).

Target (2-core CPU): a slider move redraws in < 100 ms. Runs from ``$CVAE_CHECKPOINTS_DIR`` or ``<repo>/checkpoints``;
says so and stops when the shipped runs are not there.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
try:
    from _common import compare, only_shipped_runs, page_table, timed_rerun
except ImportError:
    from bench._common import compare, only_shipped_runs, page_table, timed_rerun

RUNS = ("morpho_cvae", "morpho_sigma_cvae", "morpho_flow_cvae", "morpho_flow_cvae_2stage")
FLOWS = RUNS[2:]


def _page_rows(repeats: int) -> list[tuple[str, float, float | None]]:
    from streamlit.testing.v1 import AppTest

    from cvae_core.data import morpho
    from pages import _rare

    with only_shipped_runs():
        at = AppTest.from_file(str(REPO / "pages" / "rare_combinations.py"), default_timeout=600)
        first = timed_rerun(at, lambda at: None)
        idle = statistics.median(timed_rerun(at, lambda at: None) for _ in range(repeats))
        values = [round(0.05 * k, 2) for k in range(1, 20)]  # slider positions the page has not drawn yet
        fresh = [timed_rerun(at, lambda at, v=v, a=a: at.slider(key=a).set_value(v))
                 for a, v in zip(("slant", "large", "thick", "red") * repeats, values, strict=False)][:repeats]
        digit = [timed_rerun(at, lambda at, d=d: at.segmented_control(key="digit").set_value(d))
                 for d in (1, 6, 9)[:repeats]]

        def pause() -> None:  # a teacher talks: the background prefetch draws the neighbouring conditions
            assert _rare.prefetcher().idle(120), "the prefetch did not finish within 120 s"

        flips, steps = [], []
        for k in range(repeats):
            pause()
            a = morpho.ATTRIBUTES[k % 4]
            flips.append(timed_rerun(at, lambda at, a=a: at.slider(key=a).set_value(  # as _rare.neighbours does
                0.0 if at.slider(key=a).value >= 0.5 else 1.0)))
            pause()
            steps.append(timed_rerun(at, lambda at: at.segmented_control(key="digit").set_value(
                (at.segmented_control(key="digit").value + 1) % 10)))
        seen = []
        for k in range(repeats):  # a move away and back: the way back was drawn before
            a = morpho.ATTRIBUTES[k % 4]
            v = at.slider(key=a).value
            timed_rerun(at, lambda at, a=a, v=v: at.slider(key=a).set_value(round(1.0 - v * 0.9, 2)))
            pause()
            seen.append(timed_rerun(at, lambda at, a=a, v=v: at.slider(key=a).set_value(v)))
        _rare.prefetcher().close()
    return [("first run of the page (cold: data set, four runs, two PCA fits)", first, None),
            ("rerun, nothing moved", idle, 0.1),
            ("attribute slider to a value not drawn before (4 runs x 16 samples, 2 prior pictures)",
             statistics.median(fresh), None),
            ("digit to one not drawn before", statistics.median(digit), None),
            ("attribute flip 0 <-> 1 after a pause (the prefetcher drew it)", statistics.median(flips), 0.1),
            ("digit step after a pause (prefetched)", statistics.median(steps), 0.1),
            ("slider back to a value shown before (cached)", statistics.median(seen), 0.1)]


def main(repeats: int = 3) -> str:
    import torch

    from cvae_core.data import load_dataset
    from cvae_core.eval import attributes as A
    from cvae_core.runs.catalog import shipped_root
    from cvae_core.runs.folder import load_run

    root = shipped_root()
    if not all((root / r).is_dir() for r in RUNS):
        return f"**Rare combinations**: skipped, the shipped runs {', '.join(RUNS)} are not all in {root}.\n"
    data = load_dataset("morpho-mnist")
    moves = iter(range(1, 10_000))

    def reference():  # a move with no caches
        slant = (next(moves) % 19 + 1) / 20
        for name in RUNS:
            model, _ = load_run(root / name)
            A.score_cell(model, 4, [1, slant, 1, 0], 16)
            if name in FLOWS:
                A.prior_picture(model, data, 4, [1, slant, 1, 0], A.latent_pca(model, data))

    ref = compare({"reference": reference}, repeats=3, warmup=1)["reference"]
    return page_table(f"**Rare combinations page** on the four shipped morpho-mnist runs ({torch.get_num_threads()} "
                      f"torch threads; AppTest; reference: no caches, load the runs, draw and measure 16 samples each, "
                      f"fit both flows' PCA and draw their prior pictures = {ref:.3f} s)", _page_rows(repeats), ref)

if __name__ == "__main__":
    print(main())
