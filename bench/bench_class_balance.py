"""Class balance page: how long a slider move takes to redraw, on the shipped MNIST-LT runs (rho = 100; main run
mnistlt100_ct3vae, compare run mnistlt100_vae), against a reference measured in the same process:

- reference: what every move would cost without the caches: load both runs and draw + classify 1,000 samples of
  each (``cvae_core.balance.draw`` with the in-project classifier), nothing else;
- the page through AppTest: its first run (MNIST-LT, two runs, two latent maps of 2,000 test images, two draws),
  a rerun with nothing moved, and moves of tau, of the class weighting and of nu: to a value the page has not
  drawn (one draw per run, ~the reference), to a neighbouring value after a pause (the page's prefetcher drew it
  in the background meanwhile) and back to one it has shown (caches hit).

Target (2-core CPU): a move to a value seen before, or to a neighbour after a pause, redraws in < 100 ms. Runs
from ``$CVAE_CHECKPOINTS_DIR`` or ``<repo>/checkpoints``; says so and stops when the shipped runs are not there.
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

MAIN, OTHER = "mnistlt100_ct3vae", "mnistlt100_vae"


def _page_rows(root: Path, repeats: int = 5) -> list[tuple[str, float, float | None]]:
    from streamlit.testing.v1 import AppTest

    from cvae_core.runs.folder import load_run
    from pages import _balance

    theory = load_run(root / MAIN)[0].t3.tau
    grid = _balance.tau_options(theory)
    start = grid.index(_balance.snap(theory, grid))  # the page opens at the theoretical tau
    with only_shipped_runs():
        at = AppTest.from_file(str(REPO / "pages" / "class_balance.py"), default_timeout=600)
        first = timed_rerun(at, lambda at: None)

        def tau(at, k):  # widgets are looked up again after every run: the element tree is rebuilt each time
            at.select_slider(key="tau").set_value(grid[start + k])

        def weighting(at, v):
            at.segmented_control(key="weighting").set_value(v)

        def pause() -> None:  # a teacher talks: the background prefetch finishes its queue
            assert _balance.prefetcher().idle(120), "the prefetch did not finish within 120 s"

        far = 7  # notches per jump
        fresh = []  # right after a move, before the background fill reached the far notch
        for k in range(1, repeats + 1):
            fresh.append(timed_rerun(at, lambda at, k=k: tau(at, far * k % (len(grid) - start))))
        pause()
        idle = statistics.median(timed_rerun(at, lambda at: None) for _ in range(repeats))
        near = []
        for k in range(repeats):
            pause()
            near.append(timed_rerun(at, lambda at, k=k: tau(at, -start + (11 * k + 3) % len(grid))))
        seen = [timed_rerun(at, lambda at, k=k: tau(at, far * k)) for k in range(1, repeats + 1)]
        pause()
        w_near = timed_rerun(at, lambda at: weighting(at, "frequency"))
        pause()
        w_seen = statistics.median(timed_rerun(at, lambda at, v=v: weighting(at, v))
                                   for v in ["equal", "frequency"] * 2)
        rows = [("first run of the page (cold)", first, None), ("rerun, nothing moved", idle, 0.1),
                (f"τ jump of {far}+ notches at once, before the background fill got there (2 draws)",
                 statistics.median(fresh), None),
                ("τ move anywhere on the slider after a pause (the prefetcher drew the whole row)",
                 statistics.median(near), 0.1),
                ("τ move to a value shown before (cached)", statistics.median(seen), 0.1),
                ("weighting switch after a pause (prefetched)", w_near, 0.1),
                ("weighting switch, shown before (cached)", w_seen, 0.1)]
        nus = [float(v) for v in at.select_slider(key="nu").options]
        if len(nus) > 1:
            other = next(v for v in nus if v != 10.0)

            def nu(at, v):
                at.select_slider(key="nu").set_value(v)

            pause()
            n_fresh = timed_rerun(at, lambda at: nu(at, other))
            pause()
            n_seen = statistics.median(timed_rerun(at, lambda at, v=v: nu(at, v)) for v in [10.0, other] * 2)
            rows += [(f"ν move to another run, first time (load, map, draw; ν = {other:g})", n_fresh, None),
                     ("ν move to a run shown before (cached)", n_seen, 0.1)]
    return rows


def main(repeats: int = 5) -> str:
    import torch

    from cvae_core.eval import balance
    from cvae_core.eval.classifier import load_classifier
    from cvae_core.runs.catalog import shipped_root
    from cvae_core.runs.folder import load_run

    root = shipped_root()
    if not (root / MAIN).is_dir() or not (root / OTHER).is_dir():
        return f"**Class balance**: skipped, the shipped runs {root}/{MAIN} and {OTHER} are not there yet.\n"
    clf = load_classifier()
    taus = iter(range(1, 10_000))

    def reference():  # a move with no caches: load both runs, draw and classify 1,000 samples of each
        for name in (MAIN, OTHER):
            model, _ = load_run(root / name)
            balance.draw(model, clf, 1000, model.default_tau * (1 + next(taus) / 1e4), "equal", seed=0)

    ref = compare({"reference": reference}, repeats=3, warmup=1)["reference"]
    return page_table(f"**Class balance page** on {MAIN} + {OTHER} ({torch.get_num_threads()} torch threads; AppTest; "
                      f"reference: no caches, load both runs and draw + classify 1,000 samples of each = {ref:.3f} s)",
                      _page_rows(root, repeats), ref)

if __name__ == "__main__":
    print(main())
