"""Generate and Compare pages: what a slider move costs on the server, against the budgets of issue 18, on the shipped
beta sweeps (and, for the picture itself, on a conv run and a colour run).

- The picture: a 64-sample 28-px grid decoded from fixed noise and encoded as the PNG the page sends (and offers for
  download). Budget 15 ms.
- The Generate page through AppTest, with the page compiled once as a server does (``server_script_cache``), timing
  the page script's own run (``script_timer``: the server's work, not AppTest's round trip): a β move
  to a shipped run the server has not loaded yet (load, per-run statistics, three pictures; budget 150 ms), to one it
  has shown (cached; 50 ms), a τ move to a new value (50 ms), a rerun with nothing moved.
- The Compare page with four runs: its first view (1.5 s) and a rerun (50 ms).

Reference for the ratios: the uncached β move. Runs from ``$CVAE_CHECKPOINTS_DIR`` or ``<repo>/checkpoints``; says so
and stops when the sweeps are not there.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
try:
    import _common as C
except ImportError:
    from bench import _common as C

BETAS = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0]
COMPARE_RUNS = "bs_beta1,sse_beta1,sigma1_beta1,bs_beta10"
GRID_RUNS = {"MLP (sweeps/bs_beta1)": "sweeps/bs_beta1", "conv (mnist_bs_vae)": "mnist_bs_vae",
             "colour, conv (morpho_flow_cvae)": "morpho_flow_cvae"}


def grid_rows(root: Path, repeats: int = 20) -> list[tuple[str, float, float | None]]:
    """(what, seconds, budget) of one 64-sample grid, decoded and PNG-encoded by the page's own functions."""
    from cvae_core.runs.folder import load_run
    from pages import _gen

    rows = []
    for label, name in GRID_RUNS.items():
        model, _ = load_run(root / name)
        y = "4" if model.conditional else _gen.ALL
        attrs = (1.0, 0.0, 1.0, 0.0) if model.conditional and not model.class_conditional else ()
        taus = iter(range(1, 10**6))

        def grid(model=model, y=y, attrs=attrs, taus=taus):  # a new tau each time: nothing cached
            images, per_row, _ = _gen.samples(model, 0, 1.0 + next(taus) * 1e-6, y, attrs)
            return _gen.picture(images, per_row)

        med = C.compare({"grid": grid}, repeats=repeats, warmup=3)["grid"]
        c = model.config.image_shape[0]
        rows.append((f"64-sample grid decoded + PNG, {label}{'' if c == 1 else ' (2x pixels, not 3x)'}", med,
                     C.BUDGET["grid64_ms"] / 1000 if c == 1 else None))
    return rows


def page_rows(repeats: int = 5) -> list[tuple[str, float, float | None]]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    st.cache_resource.clear()
    rows = []
    with C.only_shipped_runs(), C.server_script_cache(), C.script_timer():
        at = AppTest.from_file(str(REPO / "pages" / "generate.py"), default_timeout=600)
        first = C.timed_script(at, lambda at: None)

        def beta(at, v):
            at.select_slider(key="gen_value").set_value(v)

        new = [b for b in BETAS if b != 1.0]
        fresh = [C.timed_script(at, lambda at, v=v: beta(at, v)) for v in new[:repeats + 1]]
        seen = [C.timed_script(at, lambda at, v=v: beta(at, v)) for v in new[:repeats + 1][::-1]]
        taus = iter(k / 100 for k in range(5, 300, 7))
        tau = [C.timed_script(at, lambda at: at.slider(key="gen_tau").set_value(next(taus)))
               for _ in range(repeats)]
        idle = [C.timed_script(at, lambda at: None) for _ in range(repeats)]
        rerun_budget = C.BUDGET["generate_rerun_ms"] / 1000  # the two rows generate_rerun_ms is read from
        rows += [("Generate: first view (cold: MNIST, one run, three pictures)", first, None),
                 ("Generate: β move to a shipped run not shown before (load + statistics + 3 pictures)",
                  statistics.median(fresh), 0.150),
                 ("Generate: β move to a run shown before (cached)", statistics.median(seen), rerun_budget),
                 ("Generate: τ move to a new value (one new grid)", statistics.median(tau), rerun_budget),
                 ("Generate: rerun, nothing moved", statistics.median(idle), 0.050)]

        cmp = AppTest.from_file(str(REPO / "pages" / "compare.py"), default_timeout=600)
        cmp.query_params["runs"] = COMPARE_RUNS
        c_first = C.timed_script(cmp, lambda at: None)
        c_again = [C.timed_script(cmp, lambda at: None) for _ in range(repeats)]
        rows += [(f"Compare, four runs ({COMPARE_RUNS}): first view", c_first, 1.5),
                 ("Compare, four runs: rerun", statistics.median(c_again), 0.050)]
    return rows


FIGURES: dict = {}  # filled by main(): the keys of make bench's final JSON line


def main(repeats: int = 5) -> str:
    import torch

    from cvae_core.runs import catalog

    root = catalog.shipped_root()
    if not all((catalog.sweep_root() / f"bs_beta{b:g}").is_dir() for b in BETAS):
        return f"**Generate / Compare**: skipped, the β sweeps are not in {catalog.sweep_root()}.\n"
    rows = page_rows(repeats)
    ref = rows[1][1]  # the uncached beta move
    grids = grid_rows(root)
    FIGURES.update(grid64_ms=1000 * max(s for what, s, budget in grids if budget is not None),  # 1-channel 28 px
                   generate_rerun_ms=1000 * max(rows[2][1], rows[3][1]))  # a β move shown before, a new τ
    rows = grids + rows
    title = (f"**Generate and Compare pages** ({torch.get_num_threads()} torch threads; the page script's own run "
             "time under AppTest, compiled once as on a server; reference: a β move to a run not loaded yet = "
             f"{ref:.3f} s)")
    return C.page_table(title, rows, ref)


if __name__ == "__main__":
    print(main())
