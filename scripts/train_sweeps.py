"""Train the shipped beta sweeps of the Beta-Sigma VAE paper on MNIST, one CLI command per run, as a user would.

    .venv/bin/python scripts/train_sweeps.py                # all 27 runs into checkpoints/sweeps/ (~20 min, 2 cores)
    .venv/bin/python scripts/train_sweeps.py --only bs_vae  # one family
    .venv/bin/python scripts/train_sweeps.py --table        # print the table of docs/results/rd_sweep.md

Three families at beta in BETAS, everything else equal (MLP encoder/decoder of width 64, m = 16, 6 epochs of batch
128, seed 0, float16 weights where the test metrics move by < 1%):

- ``bs``: ``bs_vae``, the Beta-Sigma VAE (an optimal decoder variance per image);
- ``sse``: ``vae`` with sigma^2 = 1/2, the paper's constant-variance baseline: its reconstruction term is the plain
  sum of squared errors, sum (x - xhat)^2 = ||x - xhat||^2 / (2 sigma^2) at sigma^2 = 1/2;
- ``sigma1``: ``vae`` with sigma = 1, this lab's default fixed variance (at beta = b it is the sse baseline at 2b).

Each run folder records its command in config.json (``command``); the run catalog reads a run's family from its
config (``cvae_core.runs.catalog.beta_family``).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "checkpoints" / "sweeps"
BETAS = (0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100)
FAMILIES = {  # tag -> (model, extra options, what it is)
    "bs": ("bs_vae", [], "bs_vae (optimal variance per image)"),
    "sse": ("vae", ["--option", f"sigma={1 / math.sqrt(2)!r}"], "vae, sigma^2 = 1/2 (sum of squared errors)"),
    "sigma1": ("vae", ["--option", "sigma=1.0"], "vae, sigma = 1"),
}
COMMON = ["--dataset", "mnist", "--latent-dim", "16", "--option", "arch=mlp", "--option", "hidden=64", "--epochs",
          "6", "--seed", "0", "--log-every", "250", "--n-per-class", "100", "--weights-dtype", "float16"]


def run_name(tag: str, beta: float) -> str:
    return f"{tag}_beta{beta:g}"


def command(tag: str, beta: float) -> list[str]:
    model, extra, _ = FAMILIES[tag]
    return ["python", "-m", "cvae_core", "train", "--model", model, "--beta", f"{beta:g}", *extra, *COMMON,
            "--out", f"checkpoints/sweeps/{run_name(tag, beta)}", "--json"]


def train(tag: str, beta: float) -> dict:
    cmd = command(tag, beta)
    res = subprocess.run([sys.executable, *cmd[1:]], cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed: {shlex.join(cmd)}\n{res.stderr[-2000:]}")
    print(f"done: {shlex.join(cmd)}", file=sys.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


def table() -> str:
    """The sweep's table (markdown) from the runs' metrics.json."""
    rows = ["| β | family | rate R (nats) | MSE / pixel | D at the training σ (nats) | D + R (nats) | σ_t "
            "| active units | classifier-FID |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for b in BETAS:
        for t in FAMILIES:
            m = json.loads((OUT / run_name(t, b) / "metrics.json").read_text())
            d = m["distortion_train_sigma"]
            rows.append(f"| {b:g} | {t} | {m['rate']:.2f} | {m['mse']:.4f} | {d:.1f} | {d + m['rate']:.1f} "
                        f"| {m['train_mse_sigma']:.3f} | {m['au']} | {m.get('classifier_fid', float('nan')):.1f} |")
    return "\n".join(rows)


def equal_rate_tables() -> str:
    """bs_vae against each baseline at equal rate (``eval.rd.equal_rate``), for both distortions."""
    sys.path.insert(0, str(REPO))
    from cvae_core.eval.rd import curve, equal_rate

    def load(tag: str, key: str) -> list[tuple[float, float]]:
        ms = [json.loads((OUT / run_name(tag, b) / "metrics.json").read_text()) for b in BETAS]
        return curve((m["rate"], m[key]) for m in ms)

    out = []
    for key, label, fmt in (("distortion_train_sigma", "D at the training σ (nats)", ".1f"), ("mse", "MSE", ".4f")):
        for base in ("sse", "sigma1"):
            rows = equal_rate(load("bs", key), load(base, key))
            better = sum(r["a_minus_b"] < 0 for r in rows)
            out.append(f"\n**{label}: bs against {base} at bs's rates** (bs lower at {better} of {len(rows)} rates "
                       "inside the baseline's range)\n")
            out.append(f"| rate R | bs | {base} at that rate | bs − {base} |\n|---:|---:|---:|---:|")
            out += [f"| {r['rate']:.2f} | {r['a']:{fmt}} | {r['b']:{fmt}} | {r['a_minus_b']:+{fmt}} |" for r in rows]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=list(FAMILIES), action="append", help="train only these families")
    p.add_argument("--table", action="store_true", help="print the table from the trained runs and exit")
    a = p.parse_args()
    if a.table:
        print(table())
        print(equal_rate_tables())
        return
    OUT.mkdir(parents=True, exist_ok=True)
    for tag in a.only or list(FAMILIES):
        for beta in BETAS:
            train(tag, beta)


if __name__ == "__main__":
    main()
