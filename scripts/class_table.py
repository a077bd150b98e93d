"""Reproduce the per-class table of a conditional VAE (docs/results/class_table.md) by running the CLI, as a user would.

    .venv/bin/python scripts/class_table.py [--model cvae] [--epochs 2] [--out runs/class] > docs/results/class_table.md

It trains `MODEL` on MNIST for 2 epochs and prints the per-class precision, recall and F1 that the in-project
classifier finds in 1000 samples asked of each digit, with the classifier's own per-class test accuracy beside them
(a recall cannot be trusted beyond the accuracy of the judge).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="cvae")
    p.add_argument("--epochs", type=float, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/class"))
    a = p.parse_args()
    out = a.out / f"{a.model}_{a.epochs:g}ep"
    cmd = ["python", "-m", "cvae_core", "train", "--model", a.model, "--dataset", "mnist", "--epochs", f"{a.epochs:g}",
           "--seed", str(a.seed), "--out", str(out), "--json"]
    res = subprocess.run([sys.executable, *cmd[1:]], capture_output=True, text=True, check=True, cwd=REPO)
    m = json.loads(res.stdout.strip().splitlines()[-1])
    clf = json.loads((REPO / "checkpoints" / "classifier-mnist" / "classifier.json").read_text())
    print(f"Command: `{' '.join(cmd)}`\n")
    print(f"Classifier (`checkpoints/classifier-mnist`, made by `{clf['command']}`): "
          f"{100 * clf['test_accuracy']:.2f}% MNIST test accuracy.\n")
    print("| digit | precision | recall | F1 | classifier's test accuracy on real digits |")
    print("|---:|---:|---:|---:|---:|")
    for k in range(10):
        print(f"| {k} | {m['per_class_precision'][k]:.3f} | {m['per_class_recall'][k]:.3f} | "
              f"{m['per_class_f1'][k]:.3f} | {clf['test_per_class_accuracy'][k]:.3f} |")
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    print(f"| mean | {mean(m['per_class_precision']):.3f} | {mean(m['per_class_recall']):.3f} | "
          f"{mean(m['per_class_f1']):.3f} | {clf['test_accuracy']:.3f} |\n")
    print(f"Mode coverage {m['mode_coverage']:.2f}; classifier-FID {m['classifier_fid']:.2f}; "
          f"test -ELBO {m['neg_elbo']:.1f} nats; rate {m['rate']:.2f} nats; MSE {m['mse']:.4f}; "
          f"{m['steps']} steps.")


if __name__ == "__main__":
    main()
