"""Does a learned conditional prior help on rare attribute combinations? (arXiv 2511.08946 on morpho-mnist)

    .venv/bin/python scripts/flow_experiment.py --out docs/flow_experiment            # what docs/ holds
    .venv/bin/python scripts/flow_experiment.py --quick --out /tmp/flow_quick         # a tiny smoke version
    .venv/bin/python scripts/flow_experiment.py --report-only                         # the table from runs.jsonl

cvae, sigma_cvae, flow_cvae (end to end) and flow_cvae with two_stage=true, each with seeds 0, 1, 2 (initial
weights, batch order and evaluation noise; the data set is the same fixed morpho-mnist), all conditioned on the 14
morpho-mnist condition values (digit one-hot and thick, slant, red, large), conv nets, latent 16, beta 1, the same
number of Adam steps. Evaluation (``full_evaluation``): attribute accuracy measured in the pixels of 16 samples for
each of the 160 (digit, combination) cells, split by the cell's kind in training (common; rare: < 1% of training;
held-out: never seen), the test -ELBO with the training decoder variance by cell kind (the held-out likelihood),
digit accuracy and classifier-FID of the samples' ink.

Each finished run is one JSON line of <out>/runs.jsonl; a restart skips the runs already there with the same
settings. <out>/table.md is rebuilt from runs.jsonl and <out>/settings.json alone.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

VARIANTS = {  # name -> (registry model, config overrides)
    "cvae": ("cvae", {}),
    "sigma_cvae": ("sigma_cvae", {}),
    "flow_cvae": ("flow_cvae", {}),
    "flow_cvae (two-stage)": ("flow_cvae", {"two_stage": True}),
}
SEEDS = (0, 1, 2)
SETTINGS = dict(dataset="morpho-mnist", arch="conv", latent_dim=16, beta=1.0, steps=3000, batch_size=128, lr=1e-3)
QUICK = dict(steps=40, subset=[2000, 2000])  # the first 2,000 training and test images
COLUMNS = (("attr_accuracy", "attr acc (all)", 3), ("common_attr_accuracy", "common", 3),
           ("rare_attr_accuracy", "rare", 3), ("heldout_attr_accuracy", "held-out", 3),
           ("combo_accuracy", "all 4 right", 3), ("digit_accuracy", "digit acc", 3),
           ("neg_elbo_train_sigma", "test -ELBO", 1), ("rare_neg_elbo", "-ELBO rare", 1),
           ("heldout_neg_elbo", "-ELBO held-out", 1), ("classifier_fid", "classifier-FID", 2))


def run_one(variant: str, seed: int, settings: dict, data) -> dict:
    import torch

    from cvae_core.eval import full_evaluation
    from cvae_core.eval.attributes import condition_fields
    from cvae_core.registry import build_model
    from cvae_core.train import TrainConfig, fit

    name, over = VARIANTS[variant]
    fields = condition_fields(name, data)
    model = build_model(name, seed=seed, arch=settings["arch"], latent_dim=settings["latent_dim"],
                        beta=settings["beta"], **fields, **over)
    t0 = time.perf_counter()
    hist = fit(model, data, TrainConfig(steps=settings["steps"], batch_size=settings["batch_size"], lr=settings["lr"],
                                        seed=seed, log_every=100))
    t_train = time.perf_counter() - t0
    with torch.no_grad():
        m = full_evaluation(model, data, seed=seed)
    keep = {k: v for k, v in m.items() if isinstance(v, (int, float))}
    return dict(variant=variant, seed=seed, status=hist.status, train_s=round(t_train, 1),
                eval_s=round(time.perf_counter() - t0 - t_train, 1), **keep)


def report(out: Path) -> str:
    settings = json.loads((out / "settings.json").read_text())
    runs = [r for r in (json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines() if line.strip())
            if r.get("settings", settings) == settings]  # only the runs made with these settings
    head = "| model | " + " | ".join(c[1] for c in COLUMNS) + " | seeds |"
    lines = [f"Settings: {json.dumps(settings)}", "", "Mean ± standard deviation over seeds.", "", head,
             "|" + "---|" * (len(COLUMNS) + 2)]
    for variant in VARIANTS:
        rs = [r for r in runs if r["variant"] == variant]
        if not rs:
            continue
        cells = []
        for key, _, digits in COLUMNS:
            v = np.array([r.get(key, math.nan) for r in rs], dtype=float)
            cells.append(f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0:.{digits}f}")
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {len(rs)} |")
    per_attr = ["", "Per-attribute accuracy (all cells):", "",
                "| model | thick | slant | red | large |", "|---|---|---|---|---|"]
    for variant in VARIANTS:
        rs = [r for r in runs if r["variant"] == variant]
        if rs:
            per_attr.append(f"| {variant} | " + " | ".join(
                f"{np.mean([r[f'attr_accuracy_{a}'] for r in rs]):.3f}" for a in ("thick", "slant", "red", "large"))
                + " |")
    text = "\n".join(lines + per_attr) + "\n"
    (out / "table.md").write_text(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "flow_experiment")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                   help="seeds to run (e.g. one per process on a machine with cores to spare; same --out is not "
                        "safe for two processes at once: give each its own and concatenate runs.jsonl)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.report_only:
        print(report(a.out))
        return 0
    import torch

    from cvae_core.data import load_dataset

    torch.set_num_threads(1)
    settings = dict(SETTINGS, **(QUICK if a.quick else {}))
    if a.steps:
        settings["steps"] = a.steps
    (a.out / "settings.json").write_text(json.dumps(settings, indent=1))
    log = a.out / "runs.jsonl"
    done = set()
    if log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            if r.get("settings", settings) == settings:
                done.add((r["variant"], r["seed"]))
    data = load_dataset(settings["dataset"])
    if a.quick:
        data = data.subset(*settings["subset"])
    for seed in a.seeds[:1] if a.quick else a.seeds:
        for variant in VARIANTS:
            if (variant, seed) in done:
                continue
            r = run_one(variant, seed, settings, data)
            r["steps"], r["settings"] = settings["steps"], settings
            with log.open("a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"{variant} seed {seed}: attr {r.get('attr_accuracy', math.nan):.3f} held-out "
                  f"{r.get('heldout_attr_accuracy', math.nan):.3f} ({r['train_s']:.0f} s train, {r['eval_s']:.0f} s "
                  f"eval)", flush=True)
    print(report(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
