"""The paper's MNIST table of the simplex-witness certificate (arXiv 2605.18224), rebuilt on our nets.

    .venv/bin/python scripts/certificate_experiment.py --out docs/certificate_experiment     # what docs/ holds
    .venv/bin/python scripts/certificate_experiment.py --quick --out /tmp/cert_quick         # a tiny smoke version
    .venv/bin/python scripts/certificate_experiment.py --report-only                         # the table from runs.jsonl

VAE, RST-VAE (+ lambda_TS LTS) and RST-prefit (the encoder first fitted to the witness alone for 10% of the steps)
on statically binarised MNIST with a Bernoulli decoder, at the paper's alpha_KL = 1 and at the collapse-stress
settings alpha_KL in {2, 4, 8}, seeds 0, 1, 2 (initial weights and batch order; the teacher is the same fixed
PCA-50 / 10-component GMM of the training images, eps 0.05, witness gain 5). Evaluation on the 10k test images:
IT, LTS, GT = IT - LTS, the reconstruction term Rec = -E_q log p(x|z) and KL in nats, E||mu(x)||^2, active units, and
the analytic code's energy bound. Each finished run is one JSON line of <out>/runs.jsonl with its GT curve; a restart
skips the runs already there with the same settings. <out>/table.md is rebuilt from runs.jsonl and settings.json.
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

VARIANTS = {"VAE": "vae", "RST-VAE": "rst_vae", "RST-prefit": "rst_prefit"}  # row name -> registry model
ALPHAS = (1.0, 2.0, 4.0, 8.0)
SEEDS = (0, 1, 2)
SETTINGS = dict(dataset="mnist-binary", arch="mlp", hidden=256, latent_dim=16, likelihood="bernoulli", epochs=8,
                batch_size=128, lr=1e-3, lambda_ts=1.0, prefit_fraction=0.1)
QUICK = dict(epochs=0.1, subset=[6000, 2000])  # a few steps on the first 6,000 training and 2,000 test images
PAPER = {  # the paper's MNIST table (Bernoulli decoder, alpha_KL = 1), SPEC section 5
    "VAE": dict(IT=2.0189, LTS=5.7026, GT=-3.6837, distortion=83.10, rate=19.26, mu_sq=10.98, au=12),
    "RST-VAE": dict(IT=2.0189, LTS=0.7009, GT=1.3180, distortion=81.74, rate=20.21, mu_sq=11.03, au=12),
    "RST-prefit": dict(IT=2.0189, LTS=0.7500, GT=1.2689, distortion=83.17, rate=19.63, au=14),
}
PAPER_ENERGY = 0.4468
COLUMNS = (("IT", "IT", 3), ("LTS", "LTS", 3), ("GT", "GT", 3), ("distortion", "Rec", 2), ("rate", "KL", 2),
           ("mu_sq", "E‖μ‖²", 2), ("au", "AU", 1))


def run_one(variant: str, alpha: float, seed: int, settings: dict, data) -> dict:
    import torch

    from cvae_core.eval import full_evaluation
    from cvae_core.eval.certificate import LiveCertificate
    from cvae_core.eval.likelihood import TickMeans
    from cvae_core.registry import build_model
    from cvae_core.train import TrainConfig, fit
    from cvae_core.witness import config_of

    name = VARIANTS[variant]
    over = dict(arch=settings["arch"], hidden=settings["hidden"], latent_dim=settings["latent_dim"], beta=alpha,
                likelihood=settings["likelihood"])
    if name != "vae":
        over["lambda_ts"] = settings["lambda_ts"]
    if name == "rst_prefit":
        over["prefit_fraction"] = settings["prefit_fraction"]
    model = build_model(name, seed=seed, **over)
    x_tick = data.x_test[:1000]
    live = LiveCertificate(data, x_tick, config_of(model), background=False)
    tick = TickMeans(x_tick, None, data.y_test[:1000], [live])
    t0 = time.perf_counter()
    hist = fit(model, data, TrainConfig(epochs=settings["epochs"], batch_size=settings["batch_size"],
                                        lr=settings["lr"], seed=seed, log_every=100), callbacks=[tick])
    t_train = time.perf_counter() - t0
    with torch.no_grad():
        m = full_evaluation(model, data, seed=seed, sample_metrics=False)
    keep = {k: v for k, v in m.items() if isinstance(v, (int, float))}
    curve = [[r["step"], round(r["GT"], 4)] for r in hist.records if "GT" in r]
    return dict(variant=variant, alpha=alpha, seed=seed, status=hist.status, steps=hist.step,
                train_s=round(t_train, 1), eval_s=round(time.perf_counter() - t0 - t_train, 1), curve=curve, **keep)


def _cell(values: list[float], digits: int) -> str:
    v = np.array(values, dtype=float)
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) if len(v) > 1 else 0:.{digits}f}"


def load_runs(out: Path) -> tuple[dict, list[dict]]:
    settings = json.loads((out / "settings.json").read_text())
    runs = [r for r in (json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines() if line.strip())
            if r.get("settings", settings) == settings]  # only the runs made with these settings
    return settings, runs


def report(out: Path) -> str:
    settings, runs = load_runs(out)
    head = "| model | α_KL | " + " | ".join(c[1] for c in COLUMNS) + " | GT > 0 | seeds |"
    lines = [f"Settings: {json.dumps(settings)}", "",
             "Test set, mean ± standard deviation over seeds; nats. The paper's row (α_KL = 1) follows ours.", "",
             head, "|" + "---|" * (len(COLUMNS) + 4)]
    for alpha in ALPHAS:
        for variant in VARIANTS:
            rs = [r for r in runs if r["variant"] == variant and r["alpha"] == alpha]
            if not rs:
                continue
            cells = [_cell([r.get(k, math.nan) for r in rs], d) for k, _, d in COLUMNS]
            certified = sum(r["GT"] > 0 for r in rs)
            lines.append(f"| {variant} | {alpha:g} | " + " | ".join(cells) + f" | {certified}/{len(rs)} | {len(rs)} |")
            if alpha == 1.0 and variant in PAPER:
                p = PAPER[variant]
                lines.append(f"| *paper: {variant}* | 1 | " + " | ".join(
                    f"*{p[k]:.{d}f}*" if k in p else "–" for k, _, d in COLUMNS) + " | | |")
    energies = [r["energy"] for r in runs if "energy" in r]
    if energies:
        lines += ["", f"Energy bound (1/2) E‖μ*‖² of the analytic code on the test set: {np.mean(energies):.4f} "
                  f"(paper: {PAPER_ENERGY})."]
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    return text


def plot(out: Path, png: Path) -> None:
    """GT over training, one panel per alpha_KL, a line per model (mean over seeds, the seeds' spread shaded)."""
    try:
        import matplotlib
    except ImportError:
        print("plot skipped: matplotlib is not installed", file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, runs = load_runs(out)
    colors = {"VAE": "#F97316", "RST-VAE": "#16A34A", "RST-prefit": "#4F46E5"}
    fig, axes = plt.subplots(1, len(ALPHAS), figsize=(4 * len(ALPHAS), 3.2), sharey=True)
    for ax, alpha in zip(axes, ALPHAS, strict=True):
        for variant in VARIANTS:
            curves = [np.array(r["curve"]) for r in runs if r["variant"] == variant and r["alpha"] == alpha]
            n = min((len(c) for c in curves), default=0)
            if not n:
                continue
            steps, gt = curves[0][:n, 0], np.stack([c[:n, 1] for c in curves])
            ax.plot(steps, gt.mean(0), color=colors[variant], label=variant, lw=2)
            ax.fill_between(steps, gt.min(0), gt.max(0), color=colors[variant], alpha=0.2, lw=0)
        ax.axhline(0, color="#64748B", lw=1)
        ax.set_title(f"α_KL = {alpha:g}")
        ax.set_xlabel("optimiser step")
    axes[0].set_ylabel("GT = IT − LTS (nats, 1,000 test images)")
    axes[0].legend(frameon=False)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "certificate_experiment")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS),
                   help="alpha_KL values to run (e.g. half per process on a 2-core machine; give each process its "
                        "own --out and concatenate runs.jsonl)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.report_only:
        print(report(a.out))
        plot(a.out, a.out / "gt_curves.png")
        return 0
    import torch

    from cvae_core.data import load_dataset

    torch.set_num_threads(1)
    settings = dict(SETTINGS, **(QUICK if a.quick else {}))
    (a.out / "settings.json").write_text(json.dumps(settings, indent=1))
    log = a.out / "runs.jsonl"
    done = set()
    if log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            if r.get("settings", settings) == settings:
                done.add((r["variant"], r["alpha"], r["seed"]))
    data = load_dataset(settings["dataset"])
    if a.quick:
        data = data.subset(*settings["subset"])
    for seed in a.seeds[:1] if a.quick else a.seeds:
        for alpha in a.alphas:
            for variant in VARIANTS:
                if (variant, alpha, seed) in done:
                    continue
                r = run_one(variant, alpha, seed, settings, data)
                r["settings"] = settings
                with log.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                print(f"{variant} alpha {alpha:g} seed {seed}: GT {r['GT']:.3f} LTS {r['LTS']:.3f} Rec "
                      f"{r['distortion']:.2f} KL {r['rate']:.2f} AU {r['au']} ({r['train_s']:.0f} s train, "
                      f"{r['eval_s']:.0f} s eval)", flush=True)
    print(report(a.out))
    plot(a.out, a.out / "gt_curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
