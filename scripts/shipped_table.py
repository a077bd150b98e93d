"""Print the table of the shipped runs (docs/results/shipped_runs.md) from their metrics.json (no computation: the
numbers are those `scripts/train_shipped.sh` recorded).

    .venv/bin/python scripts/shipped_table.py > docs/results/shipped_runs.md
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    print("| run | model | −ELBO, σ frozen at training value | −ELBO as trained (optimistic for fitted σ) | "
          "train σ | MSE / pixel | rate R | classifier-FID | class coverage | weights | size |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|")
    # the runs of train_shipped.sh (mnist_*); the MNIST-LT, morpho-mnist and mnist-binary runs have their own tables
    for run in sorted(p for p in (REPO / "checkpoints").glob("mnist_*") if (p / "config.json").is_file()):
        m = json.loads((run / "metrics.json").read_text())
        model = json.loads((run / "config.json").read_text())["model"]
        if "mode_coverage" in m:
            recall = m["per_class_recall"]
            cover = f"mode coverage {m['mode_coverage']:.1f}; recall {min(recall):.3f} to {max(recall):.3f}"
        else:
            f = m["sample_class_freq"]
            cover = f"TV from uniform {m['class_freq_tv']:.3f}; class freq {min(f):.3f} to {max(f):.3f}"
        sigma = f"{m['train_sigma']:.4f}" if "train_sigma" in m else "fixed"
        change = m.get("float16_max_rel_change")
        weights = m.get("weights_dtype", "float32") + (f" (max change {change:.1e})" if change is not None else "")
        size = (run / "model.safetensors").stat().st_size / 2**20
        print(f"| {run.name} | {model} | {m['neg_elbo_train_sigma']:.1f} | {m['neg_elbo']:.1f} | {sigma} | "
              f"{m['mse']:.4f} | {m['rate']:.2f} | {m['classifier_fid']:.2f} | {cover} | {weights} | "
              f"{size:.1f} MB |")


if __name__ == "__main__":
    main()
