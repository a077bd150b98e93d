"""Reproduce the Conditional-t3VAE paper's comparison (arXiv 2509.02154) on long-tailed MNIST, with a beta sweep.

    .venv/bin/python scripts/lt_experiment.py --out docs/lt_experiment --steps 1200   # what docs/ holds (60 min)
    .venv/bin/python scripts/lt_experiment.py [--out docs/lt_experiment] [--jobs 1] [--steps 1500]
    .venv/bin/python scripts/lt_experiment.py --quick --out /tmp/lt_quick      # a tiny smoke version
    .venv/bin/python scripts/lt_experiment.py --report-only                    # tables and plots from runs.jsonl

Main grid: vae, t3vae, cgvae, ct3vae on mnist-lt at rho in {1, 3, 10, 50, 100}, seeds {0, 1, 2} (the seed picks the
long-tail subset, the initial weights, the batch order and the evaluation noise). Beta sweep: cgvae and ct3vae at
rho = 50, beta in {0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 1.0}, same seeds (beta = 1 is the main grid's run). Two checks
at rho = 100, beta = 1, same seeds: cgvae and ct3vae trained 2x and 4x as long, and with the conv nets.

Every run of the grid and the sweep has the same settings (arch mlp, latent_dim 16, hidden 256, nu 10 for the
Student-t models, a fixed number of Adam steps at lr 1e-3 with batch 128): fixed steps, not epochs, so every rho gets
the same compute (a rho = 100 set is about a quarter of a rho = 1 set, so it is seen about four times as often).
Evaluation: ``full_evaluation`` on the 10k balanced test images with the sample metrics of SPEC section 7
(conditional models are asked for n_per_class samples of each class: the equal-weight mixture; unconditional ones
give n_samples samples).

The planned 1500 steps were measured at 41-58 s per run on the shared 2-core machine (96 runs: about 74 min), too
close to the 75-minute budget, so docs/ holds a 1200-step run: the 96 runs of the grid and the sweep took 40.8 min
(the other core was quieter by then), the 18 check runs 19.2 min.
The plots need matplotlib (in requirements.txt; without it the tables are still written).

Each finished run is appended as one JSON line to <out>/runs.jsonl; a restart skips the runs already there (same
model, rho, seed, beta, steps, nets and settings). <out>/table.md, <out>/beta_sweep.md, <out>/steps_check.md and the
plots
(docs/lt_gap.png, docs/lt_beta.png by default; <out>/lt_*.png with --quick) are rebuilt from runs.jsonl and
<out>/settings.json alone.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODELS = ("vae", "t3vae", "cgvae", "ct3vae")
CONDITIONAL = ("cgvae", "ct3vae")
STUDENT_T = ("t3vae", "ct3vae")
RHOS = (1, 3, 10, 50, 100)
SEEDS = (0, 1, 2)
BETA_RHO = 50
BETAS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 1.0)
STEP_FACTORS = (2, 4)  # training-length check: cgvae and ct3vae at the largest rho with 2x and 4x the steps
CHECK_ARCH = "conv"  # architecture check: cgvae and ct3vae at the largest rho with the conv nets, default steps
K = 10
TAIL = (7, 8, 9)  # the 3 rarest classes: the long-tail order is class-index order (SPEC section 4)

SETTINGS = dict(dataset="mnist-lt", arch="mlp", latent_dim=16, hidden=256, nu=10.0, steps=1500, batch_size=128,
                lr=1e-3, optimizer="Adam", n_per_class=500, n_samples=5000, is_samples=0, n_test=None)
QUICK = dict(steps=60, n_per_class=40, n_samples=400, n_test=1000)
QUICK_GRID = dict(rhos=(1, 50), seeds=(0,), betas=(0.2, 1.0))
# the settings that must match for a runs.jsonl line to count as done (device and timings may differ)
MATCH_KEYS = ("dataset", "arch", "latent_dim", "hidden", "nu", "steps", "batch_size", "lr", "n_per_class",
              "n_samples", "is_samples", "n_test")


# ------------------------------------------------------------------ the runs
def grid(rhos=RHOS, seeds=SEEDS, betas=BETAS, steps: int = SETTINGS["steps"]) -> list[dict]:
    """Main grid first (beta = 1), then the beta sweep's extra betas, then the checks at beta = 1 and the largest
    rho: training length (STEP_FACTORS x the steps) and architecture (CHECK_ARCH nets); one dict per run."""
    runs = [dict(model=m, rho=r, seed=s, beta=1.0) for r in rhos for s in seeds for m in MODELS]
    runs += [dict(model=m, rho=BETA_RHO, seed=s, beta=float(b)) for s in seeds for b in betas for m in CONDITIONAL
             if b != 1.0]  # beta = 1: the main grid's runs
    runs += [dict(model=m, rho=max(rhos), seed=s, beta=1.0, steps=f * steps) for f in STEP_FACTORS for s in seeds
             for m in CONDITIONAL]
    runs += [dict(model=m, rho=max(rhos), seed=s, beta=1.0, arch=CHECK_ARCH) for s in seeds for m in CONDITIONAL]
    return runs


def run_key(r: dict, steps: int, arch: str) -> tuple:
    """(model, rho, seed, beta, steps, arch); `steps` and `arch` are the defaults for a run that names none."""
    return (r["model"], float(r["rho"]), int(r["seed"]), float(r["beta"]), int(r.get("steps", steps)),
            r.get("arch", arch))


_DATA: dict = {}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one core per worker: the other core is someone else's


def _data(rho: float, seed: int):
    from cvae_core.data import load_dataset

    key = (float(rho), int(seed))
    if key not in _DATA:
        _DATA.clear()  # the grid is ordered by (rho, seed): keep one set
        _DATA[key] = load_dataset("mnist-lt", rho=rho, seed=seed)
    return _DATA[key]


def _mean(v) -> float:
    return float(np.mean(v))


def train_and_evaluate(job: tuple[dict, dict]) -> dict:
    """One run: build, fit, full_evaluation; returns the JSON line (metrics and settings)."""
    spec, st = job
    import torch

    from cvae_core.eval import full_evaluation
    from cvae_core.registry import build_model
    from cvae_core.train import TrainConfig, fit

    _init_worker()
    t0 = time.perf_counter()
    model_name, rho, seed, beta = spec["model"], spec["rho"], spec["seed"], spec["beta"]
    steps, arch = spec.get("steps", st["steps"]), spec.get("arch", st["arch"])
    data = _data(rho, seed)
    opts = dict(arch=arch, latent_dim=st["latent_dim"], hidden=st["hidden"], beta=beta,
                image_shape=data.image_shape, num_classes=data.num_classes)
    if model_name in STUDENT_T:
        opts["nu"] = st["nu"]
    model = build_model(model_name, seed=seed, **opts)
    cfg = TrainConfig(steps=steps, batch_size=st["batch_size"], lr=st["lr"], seed=seed, device=st["device"],
                      log_every=max(1, steps // 10))
    hist = fit(model, data, cfg)
    t_train = time.perf_counter() - t0
    ev = full_evaluation(model, data, n_test=st["n_test"], is_samples=st["is_samples"], seed=seed,
                         sample_metrics=True, n_per_class=st["n_per_class"], n_samples=st["n_samples"])
    seconds = time.perf_counter() - t0
    out = dict(model=model_name, rho=float(rho), seed=int(seed), beta=float(beta),
               nu=st["nu"] if model_name in STUDENT_T else None, steps=steps, arch=arch, seconds=round(seconds, 2),
               train_seconds=round(t_train, 2), status=hist.status, message=hist.message,
               n_train=len(data.y_train), class_counts=data.class_counts("train"),
               epochs_seen=steps * st["batch_size"] / len(data.y_train),
               final_train_loss=hist.records[-1]["loss"] if hist.records else None,
               settings={k: st[k] for k in (*MATCH_KEYS, "optimizer", "device")},
               threads=torch.get_num_threads())
    for k in ("loss", "rate", "distortion", "mse", "au", "classifier_fid", "classifier_fid_samples", "tau",
              "centre_min_distance"):
        if k in ev:
            out[k] = ev[k]
    if model_name in CONDITIONAL:
        rec, f1 = ev["per_class_recall"], ev["per_class_f1"]
        out.update(per_class_precision=ev["per_class_precision"], per_class_recall=rec, per_class_f1=f1,
                   mode_coverage=ev["mode_coverage"], mean_recall=_mean(rec), mean_f1=_mean(f1),
                   tail_recall=_mean([rec[k] for k in TAIL]), tail_f1=_mean([f1[k] for k in TAIL]))
    else:
        freq = ev["sample_class_freq"]
        out.update(sample_class_freq=freq, class_freq_tv=ev["class_freq_tv"],
                   tail_share=float(sum(freq[k] for k in TAIL)),
                   coverage=float(np.mean([f >= 0.5 / K for f in freq])))
    return out


# ------------------------------------------------------------------ runs.jsonl
def read_runs(path: Path, settings: dict | None = None) -> list[dict]:
    """The lines of runs.jsonl (a torn last line from a crash is skipped); with `settings`, only the runs made with
    the same MATCH_KEYS (the default steps among them; a run's own "steps" may differ, for the training-length
    check). A later line for the same run replaces an earlier one."""
    if not path.is_file():
        return []
    runs = {}
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if settings is not None and any(r.get("settings", {}).get(k) != settings[k] for k in MATCH_KEYS):
            continue
        runs[run_key(r, r["steps"], r["settings"]["arch"])] = r
    return list(runs.values())


def append_run(path: Path, r: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(r) + "\n")
        f.flush()


# ------------------------------------------------------------------ report
def _agg(runs: list[dict], key: str) -> tuple[float, float, int]:
    v = [r[key] for r in runs if r.get(key) is not None and math.isfinite(r[key])]
    if not v:
        return math.nan, math.nan, 0
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)


def _pm(runs: list[dict], key: str, fmt: str = ".3f") -> str:
    m, s, n = _agg(runs, key)
    if n == 0:
        return "–"
    return f"{m:{fmt}} ± {s:{fmt}}"


def _select(runs, **kw) -> list[dict]:
    return [r for r in runs if all((float(r[k]) if isinstance(v, float) else r[k]) == v for k, v in kw.items())]


def _settings_line(st: dict, n_runs: int, seeds) -> str:
    return (f"Settings (every run; steps_check.md varies the steps or the nets only): arch={st['arch']}, "
            f"latent_dim={st['latent_dim']}, hidden={st['hidden']}, nu={st['nu']:g} (t3vae, ct3vae), {st['steps']} "
            f"Adam steps at lr {st['lr']:g}, batch {st['batch_size']} (fixed steps, not epochs: every rho gets the "
            f"same compute), sigma = 1 decoders, the 1x loss scale of SPEC section 3 (beta keeps the official "
            f"meaning). Evaluation on "
            f"{'the 10k' if st['n_test'] is None else st['n_test']} balanced test images; conditional models are "
            f"asked for {st['n_per_class']} samples of each class (equal class weights), unconditional ones give "
            f"{st['n_samples']} samples; the in-project MNIST classifier labels them. mean ± std (ddof 1) over "
            f"seeds {', '.join(str(s) for s in seeds)}; {n_runs} runs in runs.jsonl.")


def compact_tables(runs: list[dict], rhos, betas) -> tuple[list[str], list[str]]:
    """The two tables of docs/results/t3vae.md: per rho (beta = 1) and per beta (rho = BETA_RHO), mean ± std over
    seeds."""
    main_runs = [r for r in runs if float(r["beta"]) == 1.0]

    def cell(model, key, fmt=".2f", **kw):
        return _pm(_select(runs if "beta" in kw else main_runs, model=model, **kw), key, fmt)

    main = ["| rho | tail recall cgvae | tail recall ct3vae | tail F1 cgvae | tail F1 ct3vae | mode coverage cgvae "
            "| mode coverage ct3vae | tail share vae | tail share t3vae | coverage vae | coverage t3vae "
            "| cFID vae | cFID t3vae | cFID cgvae | cFID ct3vae |", "|---:" * 15 + "|"]
    for rho in rhos:
        r = dict(rho=float(rho))
        main.append(f"| {rho:g} | " + " | ".join(
            [cell(m, k, **r) for k in ("tail_recall", "tail_f1", "mode_coverage") for m in CONDITIONAL]
            + [cell(m, k, **r) for k in ("tail_share", "coverage") for m in ("vae", "t3vae")]
            + [cell(m, "classifier_fid", ".0f", **r) for m in MODELS]) + " |")
    beta = ["| beta | tail recall cgvae | tail recall ct3vae | tail F1 cgvae | tail F1 ct3vae | mode coverage cgvae "
            "| mode coverage ct3vae | cFID cgvae | cFID ct3vae |", "|---:" * 9 + "|"]
    for b in betas:
        r = dict(rho=float(BETA_RHO), beta=float(b))
        beta.append(f"| {b:g} | " + " | ".join(
            [cell(m, k, **r) for k in ("tail_recall", "tail_f1", "mode_coverage") for m in CONDITIONAL]
            + [cell(m, "classifier_fid", ".0f", **r) for m in CONDITIONAL]) + " |")
    return main, beta


def write_tables(runs: list[dict], st: dict, out: Path, rhos, seeds, betas) -> None:
    main_runs = [r for r in runs if float(r["beta"]) == 1.0]
    compact_main, compact_beta = compact_tables(runs, rhos, betas)
    lines = ["# MNIST-LT: Gaussian vs Student-t, unconditional vs conditional", "",
             _settings_line(st, len(runs), seeds), "",
             "## Compact (the README's table; cFID = classifier-FID)", "", *compact_main, "",
             "## Every metric", "",
             "Tail = the 3 rarest classes 7, 8, 9. Conditional models (cgvae, ct3vae): tail recall / tail F1 = "
             "mean per-class recall / F1 of classes 7-9, mode coverage = fraction of classes with recall >= 0.5. "
             "Unconditional models (vae, t3vae): tail share = fraction of samples the classifier puts in classes "
             "7-9 (0.3 if balanced), coverage = fraction of classes with sample frequency >= 0.05, TV = total "
             "variation of the sample class frequencies from uniform. classifier-FID is the Frechet distance of "
             "the in-project classifier's 128-d features, NOT Inception FID. loss / rate / distortion: test set, "
             "the family's own objective on the 1x scale (t3vae/ct3vae: rec + beta*R/2, a gamma-power loss; "
             "vae/cgvae: the negative ELBO), in nats per image.", "",
             "| rho | model | tail recall | tail F1 | mean recall | mean F1 | tail share | TV | mode coverage "
             "| classifier-FID | test loss | rate | distortion | sec/run |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for rho in rhos:
        for m in MODELS:
            rs = _select(main_runs, model=m, rho=float(rho))
            if not rs:
                continue
            cond = m in CONDITIONAL
            cov = "mode_coverage" if cond else "coverage"
            lines.append(
                f"| {rho:g} | {m} | {_pm(rs, 'tail_recall') if cond else '–'} | {_pm(rs, 'tail_f1') if cond else '–'} "
                f"| {_pm(rs, 'mean_recall') if cond else '–'} | {_pm(rs, 'mean_f1') if cond else '–'} "
                f"| {'–' if cond else _pm(rs, 'tail_share')} | {'–' if cond else _pm(rs, 'class_freq_tv')} "
                f"| {_pm(rs, cov, '.2f')} | {_pm(rs, 'classifier_fid', '.1f')} | {_pm(rs, 'loss', '.1f')} "
                f"| {_pm(rs, 'rate', '.2f')} | {_pm(rs, 'distortion', '.1f')} | {_agg(rs, 'seconds')[0]:.0f} |")
    lines += ["", "## Per-class recall of the conditional models (mean over seeds)", "",
              "| rho | model | " + " | ".join(str(k) for k in range(K)) + " |", "|---:|---|" + "---:|" * K]
    for rho in rhos:
        for m in CONDITIONAL:
            rs = _select(main_runs, model=m, rho=float(rho))
            if rs:
                rec = np.mean([r["per_class_recall"] for r in rs], axis=0)
                lines.append(f"| {rho:g} | {m} | " + " | ".join(f"{v:.2f}" for v in rec) + " |")
    lines += ["", "## Sample class frequencies of the unconditional models (mean over seeds)", "",
              "| rho | model | " + " | ".join(str(k) for k in range(K)) + " |", "|---:|---|" + "---:|" * K]
    for rho in rhos:
        for m in MODELS:
            if m in CONDITIONAL:
                continue
            rs = _select(main_runs, model=m, rho=float(rho))
            if rs:
                fr = np.mean([r["sample_class_freq"] for r in rs], axis=0)
                lines.append(f"| {rho:g} | {m} | " + " | ".join(f"{v:.3f}" for v in fr) + " |")
    counts = {float(r["rho"]): r["class_counts"] for r in main_runs if r["seed"] == seeds[0]}
    lines += ["", "## Training-set class counts (n_k = floor(5421 * rho^(-k/9))) and epochs seen", "",
              "| rho | " + " | ".join(str(k) for k in range(K)) + " | total | epochs in the fixed steps |",
              "|---:|" + "---:|" * (K + 2)]
    for rho in rhos:
        if float(rho) in counts:
            c = counts[float(rho)]
            lines.append(f"| {rho:g} | " + " | ".join(str(v) for v in c)
                         + f" | {sum(c)} | {st['steps'] * st['batch_size'] / sum(c):.1f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")

    b_lines = [f"# Beta sweep at rho = {BETA_RHO} (cgvae vs ct3vae)", "", _settings_line(st, len(runs), seeds), "",
               "beta multiplies the rate term on the 1x scale: cgvae minimises rec + beta * KL(q || N(mu_y, I)), "
               "ct3vae rec + beta * R/2 (SPEC section 3); the paper's ranges (C-t3VAE stable for beta in [0.2, 0.6], "
               "Gaussian models needing beta in [0.02, 0.07]) are in the same units.", "",
               "## Compact (the README's table; cFID = classifier-FID)", "", *compact_beta, "", "## Every metric", "",
               "| beta | model | tail recall | tail F1 | mean recall | mean F1 | mode coverage | classifier-FID "
               "| rate | distortion |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b in betas:
        for m in CONDITIONAL:
            rs = _select(runs, model=m, rho=float(BETA_RHO), beta=float(b))
            if rs:
                b_lines.append(f"| {b:g} | {m} | {_pm(rs, 'tail_recall')} | {_pm(rs, 'tail_f1')} "
                               f"| {_pm(rs, 'mean_recall')} | {_pm(rs, 'mean_f1')} "
                               f"| {_pm(rs, 'mode_coverage', '.2f')} | {_pm(rs, 'classifier_fid', '.1f')} "
                               f"| {_pm(rs, 'rate', '.2f')} | {_pm(rs, 'distortion', '.1f')} |")
    (out / "beta_sweep.md").write_text("\n".join(b_lines) + "\n")


COLORS = {"vae": "tab:blue", "t3vae": "tab:orange", "cgvae": "tab:green", "ct3vae": "tab:red"}


def _series(runs, model, key, xs, xkey):
    m, s = [], []
    for x in xs:
        a = _agg(_select(runs, model=model, **{xkey: float(x)}), key)
        m.append(a[0])
        s.append(a[1])
    return np.array(m), np.array(s)


def write_plots(runs: list[dict], st: dict, gap_png: Path, beta_png: Path, rhos, betas) -> None:
    try:
        import matplotlib
    except ImportError:
        print("plots skipped: matplotlib is not installed (.venv/bin/pip install matplotlib, then --report-only)",
              file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main_runs = [r for r in runs if float(r["beta"]) == 1.0]
    fig, ax = plt.subplots(1, 4, figsize=(17, 4))
    panels = [(ax[0], "tail_recall", CONDITIONAL, "tail recall (classes 7-9)"),
              (ax[1], "tail_f1", CONDITIONAL, "tail F1 (classes 7-9)"),
              (ax[2], "tail_share", ("vae", "t3vae"), "tail share of samples (classes 7-9)"),
              (ax[3], "classifier_fid", MODELS, "classifier-FID (not Inception FID)")]
    for a, key, models, title in panels:
        for m in models:
            mu, sd = _series(main_runs, m, key, rhos, "rho")
            if np.isfinite(mu).any():
                a.errorbar(rhos, mu, yerr=sd, marker="o", capsize=3, label=m, color=COLORS[m])
        if key == "tail_share":
            a.axhline(0.3, color="grey", ls=":", lw=1, label="balanced (0.3)")
        if key != "classifier_fid":
            a.set_ylim(-0.02, 1.02)
        a.set_xscale("log")
        a.set_xlim(min(rhos) / 1.3, max(rhos) * 1.3)
        a.set_xticks(rhos, [f"{r:g}" for r in rhos])
        a.set_xlabel("imbalance ratio rho")
        a.set_title(title, fontsize=10)
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(f"MNIST-LT, beta = 1, {st['steps']} steps, mean ± std over seeds", fontsize=11)
    fig.tight_layout()
    gap_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(gap_png, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(1, 4, figsize=(17, 4))
    sweep = _select(runs, rho=float(BETA_RHO))
    for a, key, title in ((ax[0], "tail_recall", "tail recall (classes 7-9)"), (ax[1], "tail_f1", "tail F1"),
                          (ax[2], "mode_coverage", "mode coverage"),
                          (ax[3], "classifier_fid", "classifier-FID (not Inception FID)")):
        a.axvspan(0.2, 0.6, color=COLORS["ct3vae"], alpha=0.08, label="paper: C-t3VAE stable")
        a.axvspan(0.02, 0.07, color=COLORS["cgvae"], alpha=0.08, label="paper: Gaussian needs")
        for m in CONDITIONAL:
            mu, sd = _series(sweep, m, key, betas, "beta")
            if np.isfinite(mu).any():
                a.errorbar(betas, mu, yerr=sd, marker="o", capsize=3, label=m, color=COLORS[m])
        if key != "classifier_fid":
            a.set_ylim(-0.02, 1.02)
        a.set_xscale("log")
        a.set_xlim(min(betas) / 1.3, max(betas) * 1.3)
        a.set_xticks(betas, [f"{b:g}" for b in betas], fontsize=8)
        a.set_xlabel("beta (1x scale, official meaning)")
        a.set_title(title, fontsize=10)
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(f"Beta sweep on MNIST-LT at rho = {BETA_RHO}, {st['steps']} steps, mean ± std over seeds",
                 fontsize=11)
    fig.tight_layout()
    fig.savefig(beta_png, dpi=110)
    plt.close(fig)


def steps_table(runs: list[dict], st: dict, rho: float) -> list[str]:
    """cgvae vs ct3vae at `rho`, beta = 1, for each (arch, steps) run: does the gap close with training or with
    the other nets?"""
    lines = ["| arch | steps | epochs | model | tail recall | tail F1 | mean recall | mode coverage | classifier-FID "
             "| test loss | sec/run |", "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for arch, steps in sorted({(r["arch"], int(r["steps"])) for r in _select(runs, rho=float(rho), beta=1.0)},
                              key=lambda t: (t[0] != st["arch"], t)):
        for m in CONDITIONAL:
            rs = _select(runs, model=m, rho=float(rho), beta=1.0, steps=steps, arch=arch)
            if rs:
                lines.append(f"| {arch} | {steps} | {_agg(rs, 'epochs_seen')[0]:.1f} | {m} "
                             f"| {_pm(rs, 'tail_recall', '.2f')} "
                             f"| {_pm(rs, 'tail_f1', '.2f')} | {_pm(rs, 'mean_recall', '.2f')} "
                             f"| {_pm(rs, 'mode_coverage', '.2f')} | {_pm(rs, 'classifier_fid', '.0f')} "
                             f"| {_pm(rs, 'loss', '.1f')} | {_agg(rs, 'seconds')[0]:.0f} |")
    return lines


def report(out: Path, st: dict, gap_png: Path, beta_png: Path, rhos, seeds, betas) -> list[dict]:
    runs = read_runs(out / "runs.jsonl", st)
    for r in runs:
        r.setdefault("arch", r["settings"]["arch"])
    base = [r for r in runs if int(r["steps"]) == st["steps"] and r["arch"] == st["arch"]]  # main grid, beta sweep
    write_tables(base, st, out, rhos, seeds, betas)
    write_plots(base, st, gap_png, beta_png, rhos, betas)
    (out / "steps_check.md").write_text("\n".join([
        f"# Training length and architecture at rho = {max(rhos):g}: cgvae vs ct3vae, beta = 1", "",
        _settings_line(st, len(runs), seeds), "",
        f"The main grid's runs ({st['arch']} nets, {st['steps']} steps), the same with "
        f"{', '.join(f'{f}x' for f in STEP_FACTORS)} as many steps, and with the {CHECK_ARCH} nets of "
        f"cvae_core/nets.py; all else unchanged; mean ± std over seeds.", "",
        *steps_table(runs, st, max(rhos))]) + "\n")
    return runs


# ------------------------------------------------------------------ main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("docs/lt_experiment"))
    p.add_argument("--jobs", type=int, default=1, help="worker processes, one torch thread each (default 1)")
    p.add_argument("--steps", type=int, default=None, help=f"Adam steps per run (default {SETTINGS['steps']})")
    p.add_argument("--quick", action="store_true", help="tiny smoke version: rho {1, 50}, seed 0, betas {0.2, 1}, "
                   f"{QUICK['steps']} steps, few samples, 1000 test images; plots go to <out>")
    p.add_argument("--report-only", action="store_true", help="rebuild the tables and plots from <out>/runs.jsonl")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--max-runs", type=int, default=None, help="stop after this many new runs (timing probes)")
    a = p.parse_args()
    if a.jobs < 1:
        p.error("--jobs must be >= 1")

    st = dict(SETTINGS, device=a.device)
    rhos, seeds, betas = RHOS, SEEDS, BETAS
    if a.quick:
        st.update(QUICK)
        rhos, seeds, betas = QUICK_GRID["rhos"], QUICK_GRID["seeds"], QUICK_GRID["betas"]
    if a.steps is not None:
        st["steps"] = a.steps
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    docs = REPO / "docs" if out.resolve().is_relative_to(REPO / "docs") else out
    gap_png, beta_png = docs / "lt_gap.png", docs / "lt_beta.png"

    settings_path = out / "settings.json"
    if not a.report_only:
        settings_path.write_text(json.dumps(dict(st, models=MODELS, rhos=rhos, seeds=seeds, beta_rho=BETA_RHO,
                                                 betas=betas, tail_classes=TAIL,
                                                 command=" ".join(["python", *sys.argv])), indent=1) + "\n")
    elif settings_path.is_file():  # rebuild with the settings the runs were made with
        saved = json.loads(settings_path.read_text())
        st = {k: saved.get(k, v) for k, v in st.items()}
        rhos, seeds, betas = tuple(saved["rhos"]), tuple(saved["seeds"]), tuple(saved["betas"])
    if a.report_only:
        runs = report(out, st, gap_png, beta_png, rhos, seeds, betas)
        print(f"{len(runs)} runs -> {out / 'table.md'}, {out / 'beta_sweep.md'}, {gap_png}, {beta_png}")
        return

    jsonl = out / "runs.jsonl"
    done = {run_key(r, st["steps"], st["arch"]) for r in read_runs(jsonl, st)}
    todo = [r for r in grid(rhos, seeds, betas, st["steps"]) if run_key(r, st["steps"], st["arch"]) not in done]
    total = len(grid(rhos, seeds, betas, st["steps"]))
    print(f"{total - len(todo)} of {total} runs already in {jsonl}; {len(todo)} to do with {a.jobs} worker(s), "
          f"{st['steps']} steps each (checks: {', '.join(f'{f}x' for f in STEP_FACTORS)} the steps, {CHECK_ARCH} nets)",
          flush=True)
    if a.max_runs is not None:
        todo = todo[: a.max_runs]
    t0 = time.perf_counter()
    jobs = [(r, st) for r in todo]
    if a.jobs == 1:
        _init_worker()
        results = map(train_and_evaluate, jobs)
        pool = None
    else:
        pool = mp.get_context("spawn").Pool(a.jobs, initializer=_init_worker)
        results = pool.imap_unordered(train_and_evaluate, jobs)
    try:
        for i, r in enumerate(results, 1):
            append_run(jsonl, r)
            elapsed = time.perf_counter() - t0
            tail = (f"tail recall {r['tail_recall']:.3f} F1 {r['tail_f1']:.3f}" if "tail_recall" in r
                    else f"tail share {r['tail_share']:.3f} TV {r['class_freq_tv']:.3f}")
            print(f"[{i}/{len(todo)}] {r['model']} rho={r['rho']:g} seed={r['seed']} beta={r['beta']:g} "
                  f"steps={r['steps']} arch={r['arch']}: "
                  f"{r['status']}, {tail}, cFID {r['classifier_fid']:.1f}, {r['seconds']:.0f} s "
                  f"(train {r['train_seconds']:.0f} s); elapsed {elapsed / 60:.1f} min, "
                  f"eta {elapsed / i * (len(todo) - i) / 60:.1f} min", flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    runs = report(out, st, gap_png, beta_png, rhos, seeds, betas)
    print(f"done in {(time.perf_counter() - t0) / 60:.1f} min; {len(runs)} runs -> {out / 'table.md'}, "
          f"{out / 'beta_sweep.md'}, {gap_png}, {beta_png}", flush=True)


if __name__ == "__main__":
    main()
