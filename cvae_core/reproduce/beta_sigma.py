"""``reproduce beta-sigma``: the Beta-Sigma VAE's β sweep (Kim & Lee 2024, arXiv:2409.09361) against its
constant-variance baselines, on MNIST.

Three families at each β, everything else equal (an MLP encoder and decoder of width 64, m = 16, batch 128, Adam
1e-3): ``bs`` (``bs_vae``, an optimal decoder variance per image), ``sse`` (``vae`` at σ² = 1/2: the paper's baseline,
whose reconstruction term is the plain sum of squared errors) and ``sigma1`` (``vae`` at σ = 1: this lab's default,
the sse baseline at 2β). Each trial trains one run and measures on the 10k test images: −ELBO with the decoder
variance frozen at its training value, rate, distortion under one yardstick (a Gaussian decoder whose variance is the
run's training-set MSE), MSE, active units, classifier-FID of 5,000 samples, and, on a fixed subset of trials (seed
0, β ∈ {3, 10, 30}, bs and sse), the Inception FID of 500 samples (about 4 minutes on one core each). The test
−ELBO of the first 1,000 test images after every epoch shows whether the budget is long enough.

The claims read: the best FID at β = 10 (classifier-FID, mean over seeds, and the Inception subset), the best
likelihood at β = 1, bs_vae better than its baseline at equal β, and a better rate-distortion curve, read at matched
rate (the baseline's distortion interpolated at bs_vae's rate).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from cvae_core.data import load_dataset
from cvae_core.eval import full_evaluation
from cvae_core.eval.likelihood import evaluate
from cvae_core.reproduce import stats as S
from cvae_core.reproduce.engine import Paper, load_trials
from cvae_core.runs.setup import build_run
from cvae_core.train import TrainConfig, fit

BETAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
FAMILIES = {  # tag -> (model, options, description)
    "bs": ("bs_vae", {}, "bs_vae (optimal variance per image)"),
    "sse": ("vae", {"sigma": 1 / math.sqrt(2)}, "vae, σ² = 1/2 (sum of squared errors: the paper's baseline)"),
    "sigma1": ("vae", {"sigma": 1.0}, "vae, σ = 1 (the sse baseline at 2β)"),
}
FULL = dict(epochs=10, hidden=64, latent_dim=16, n_samples=5000)
QUICK = dict(epochs=1, hidden=64, latent_dim=16, n_samples=1000)
QUICK_BETAS = (0.1, 1.0, 10.0)
INCEPTION = dict(samples=500, betas=(3.0, 10.0, 30.0), families=("bs", "sse"), seed=0)
CURVE_IMAGES = 1000
# the committed full grid (`reproduce beta-sigma --out docs/results/beta-sigma`): the Compare page draws its means
RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results" / "beta-sigma" / "trials.jsonl"


def grid(quick: bool, seeds: tuple[int, ...]) -> list[dict]:
    base, betas = (QUICK, QUICK_BETAS) if quick else (FULL, BETAS)
    out = []
    for fam in FAMILIES:
        for beta in betas:
            for seed in seeds:
                inc = (not quick and seed == INCEPTION["seed"] and beta in INCEPTION["betas"]
                       and fam in INCEPTION["families"])
                out.append(dict(base, family=fam, beta=beta, seed=seed, inception=INCEPTION["samples"] if inc else 0))
    return out


@functools.lru_cache(maxsize=1)
def _mnist():
    return load_dataset("mnist")


class _Curve:
    """A fit callback: the test −ELBO (frozen σ where it is fitted) of the first CURVE_IMAGES test images at each
    log tick (one per epoch)."""

    def __init__(self, data):
        self.x, self.points = data.x_test[:CURVE_IMAGES], []

    def on_log(self, model, record, history):
        m = evaluate(model, self.x, train_x=self.x)
        self.points.append([int(record["step"]), float(m.get("neg_elbo_train_sigma", m["neg_elbo"]))])


def run(s: dict) -> dict:
    data = _mnist()
    name, opts, _ = FAMILIES[s["family"]]
    per_epoch = math.ceil(len(data.x_train) / 128)
    setup = build_run(name, data, dict(opts, arch="mlp", hidden=s["hidden"], latent_dim=s["latent_dim"],
                                       beta=s["beta"]),
                      TrainConfig(epochs=s["epochs"], batch_size=128, seed=s["seed"], device="cpu",
                                  log_every=per_epoch))
    curve = _Curve(data)
    fit(setup.model, data, setup.train, callbacks=[curve])
    m = full_evaluation(setup.model, data, n_samples=s["n_samples"], certificate=False, seed=s["seed"],
                        fid="inception" if s["inception"] else None, fid_samples=s["inception"] or 1000)
    keep = ("neg_elbo", "neg_elbo_train_sigma", "rate", "distortion", "distortion_train_sigma", "mse", "au",
            "classifier_fid", "inception_fid", "train_sigma")
    out = {k: m[k] for k in keep if k in m}
    out["curve"] = curve.points
    return out


# ------------------------------------------------------------------ the report
def _fam(trials):
    return S.group(trials, lambda s: (s["family"], s["beta"]))


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    """ys at x, linear in log-rate between the two nearest points; NaN outside the range."""
    pts = sorted((a, b) for a, b in zip(xs, ys, strict=True) if a > 0)
    if len(pts) < 2 or not (pts[0][0] <= x <= pts[-1][0]) or x <= 0:
        return math.nan
    lx = np.log([p[0] for p in pts])
    return float(np.interp(math.log(x), lx, [p[1] for p in pts]))


def report(trials: list[dict], out: Path) -> str:
    g = _fam(trials)
    betas = sorted({s for _, s in g})
    seeds = sorted({t["settings"]["seed"] for t in trials})
    budget = trials[0]["settings"] if trials else FULL
    lines = [
        "# Beta-Sigma VAE: the β sweep against its constant-variance baselines",
        "",
        "Paper: Kim & Lee 2024, arXiv:2409.09361 (and σ-VAE, arXiv:2006.13202). Made by `python -m cvae_core "
        "reproduce beta-sigma` from `trials.jsonl` alone.",
        "",
        f"MNIST, MLP width {budget['hidden']}, m = {budget['latent_dim']}, {budget['epochs']:g} epochs of batch 128, "
        f"seeds {', '.join(map(str, seeds))}; {len(trials)} trials. Metrics on the 10k test images, mean ± standard "
        "deviation over seeds. D_t is the distortion under one yardstick for every family (a Gaussian decoder at "
        "the run's training-set MSE), so rates and distortions compare across families. −ELBO has the decoder "
        "variance frozen at its training value.",
        "",
        "Families: " + "; ".join(f"**{k}**: {v[2]}" for k, v in FAMILIES.items()) + ".",
        "",
        "## The sweep",
        "",
    ]
    rows = []
    for fam in FAMILIES:
        for b in betas:
            ts = g.get((fam, b), [])
            if not ts:
                continue
            rows.append([f"{b:g}", fam, S.pm(S.values(ts, "neg_elbo_train_sigma"), 1), S.pm(S.values(ts, "rate"), 2),
                         S.pm(S.values(ts, "distortion_train_sigma"), 1), S.pm(S.values(ts, "mse"), 4),
                         S.pm(S.values(ts, "au"), 1), S.pm(S.values(ts, "classifier_fid"), 1),
                         S.pm(S.values(ts, "inception_fid"), 1), len(ts)])
    lines += [S.table(["β", "family", "−ELBO (nats)", "rate R", "D_t", "MSE / pixel", "active units",
                       "classifier-FID", "Inception FID", "seeds"], rows), ""]
    lines += _claims(g, betas, out)
    return "\n".join(lines) + "\n"


def _best(g, fam, betas, metric):
    means = {b: S.mean_std(S.values(g.get((fam, b), []), metric))[0] for b in betas}
    means = {b: m for b, m in means.items() if math.isfinite(m)}
    return (min(means, key=means.get), means) if means else (None, {})


def _best_reading(g, fam, betas, metric: str, claimed: float, digits: int) -> str | None:
    """ "β = b (m ± s): the claim ..." for a claim that `fam`'s `metric` (lower is better) is best at β = `claimed`:
    held where the lowest mean is at `claimed`, and then tested (Welch, over seeds) against the next best β; not
    held where another β is lower, tested against `claimed`. None where no trial has the metric."""
    b_best, means = _best(g, fam, betas, metric)
    if b_best is None:
        return None
    best = S.values(g[(fam, b_best)], metric)
    at_claim = S.values(g.get((fam, claimed), []), metric)
    head = f"β = {b_best:g} ({S.pm(best, digits)}): the claim "
    if b_best != claimed:
        p = S.welch_p(best, at_claim)
        return head + f"does not hold: β = {b_best:g} is lower" + (
            f" ({S.pm(best, digits)} against {S.pm(at_claim, digits)} at β = {claimed:g}; Welch {S.p_is(p)}, "
            f"{S.verdict(p)})" if at_claim else "")
    runner = sorted((m, b) for b, m in means.items() if b != b_best)
    if not runner:
        return head + "holds"
    nxt = S.values(g[(fam, runner[0][1])], metric)
    p = S.welch_p(best, nxt)
    said = "holds in the mean, but not significantly" if math.isfinite(p) and p >= 0.05 else "holds"
    return head + f"{said} (the next best, β = {runner[0][1]:g}: {S.pm(nxt, digits)}; Welch {S.p_is(p)})"


def _claims(g, betas, out: Path) -> list[str]:
    lines = ["## The claims", ""]
    # 1. best FID at beta = 10
    reading = _best_reading(g, "bs", betas, "classifier_fid", 10.0, 1)
    if reading is not None:
        lines.append(f"- **Best FID at β = 10?** bs_vae's classifier-FID is lowest at {reading}.")
        inc = {b: S.values(g.get(("bs", b), []), "inception_fid") for b in betas}
        inc = {b: v for b, v in inc.items() if v}
        if inc:
            lo = min(inc, key=lambda b: np.mean(inc[b]))
            lines.append("  Inception FID (500 samples, seed 0): " + ", ".join(
                f"β = {b:g}: {S.pm(v, 1)}" for b, v in sorted(inc.items())) + f"; lowest at β = {lo:g}.")
    # 2. best likelihood at beta = 1 (the paper's claim for bs_vae)
    reading = _best_reading(g, "bs", betas, "neg_elbo_train_sigma", 1.0, 1)
    if reading is not None:
        lines.append(f"- **Best likelihood at β = 1?** bs_vae's test −ELBO (at the frozen σ, nats) is lowest at "
                     f"{reading}.")
    for fam in (f for f in FAMILIES if f != "bs"):  # the baselines' best beta, for reference
        b_ll, lls = _best(g, fam, betas, "neg_elbo_train_sigma")
        if b_ll is not None:
            lines.append(f"- **Best likelihood ({fam})**: the test −ELBO is lowest at β = {b_ll:g} "
                         f"({S.fmt(lls[b_ll], 1)} nats).")
    # 3. equal beta: bs against sse on MSE
    wins, rows = 0, []
    for b in betas:
        a, c = S.values(g.get(("bs", b), []), "mse"), S.values(g.get(("sse", b), []), "mse")
        if a and c:
            p = S.paired_p(a, c)
            wins += np.mean(a) < np.mean(c)
            rows.append([f"{b:g}", S.pm(a, 4), S.pm(c, 4), S.fmt_p(p)])
    if rows:
        lines += [f"- **At equal β** bs_vae has the lower MSE at {wins} of {len(rows)} β (paired t-test over "
                  "seeds):", "", S.table(["β", "bs MSE", "sse MSE", "p"], rows), ""]
    # 4. matched rate
    lines += _matched_rate(g, betas, out)
    lines += _curves(g, betas, out)
    return lines


def _matched_rate(g, betas, out: Path) -> list[str]:
    pts = {}
    for fam in FAMILIES:
        r = [S.mean_std(S.values(g.get((fam, b), []), "rate"))[0] for b in betas]
        d = [S.mean_std(S.values(g.get((fam, b), []), "distortion_train_sigma"))[0] for b in betas]
        mse = [S.mean_std(S.values(g.get((fam, b), []), "mse"))[0] for b in betas]
        pts[fam] = [(a, b, c) for a, b, c in zip(r, d, mse, strict=True) if math.isfinite(a) and math.isfinite(b)]
    rows, gaps, better, n = [], [], 0, 0
    for rate, dist, mse in pts.get("bs", []):
        if rate < 0.5:  # a collapsed code: no rate to match
            continue
        sse = pts.get("sse", [])
        d_sse = _interp(rate, [p[0] for p in sse], [p[1] for p in sse])
        m_sse = _interp(rate, [p[0] for p in sse], [p[2] for p in sse])
        if math.isfinite(d_sse):
            n += 1
            better += dist < d_sse
            gaps.append(dist - d_sse)
            rows.append([S.fmt(rate, 1), S.fmt(dist, 1), S.fmt(d_sse, 1), S.fmt(dist - d_sse, 1), S.fmt(mse, 4),
                         S.fmt(m_sse, 4)])
    lines = ["", "## Rate against distortion, at matched rate", ""]
    if rows:
        lines += [f"At each bs_vae rate inside the sse curve's range, the sse distortion interpolated (linear in log "
                  f"R between its two nearest β; means over seeds). bs_vae distorts less at {better} of {n} rates: "
                  + ("**a better RD curve**." if better == n else
                     f"**not a better RD curve**: the baseline distorts less at every matched rate (by "
                     f"{S.fmt(min(gaps), 1)} to {S.fmt(max(gaps), 1)} nats), so bs_vae's gain at equal β is "
                     "where β puts it on the curve." if better == 0 else
                     "**not a better RD curve**: the gain at equal β is where β puts bs_vae on the curve."
                     if better <= n / 2 else "better at most rates."), "",
                  S.table(["rate R", "bs D_t", "sse D_t at R", "bs − sse", "bs MSE", "sse MSE at R"], rows), ""]
    fig, ax = S.figure()
    for fam, p in pts.items():
        p = [q for q in p if q[0] > 0]
        if p:
            ax.plot([q[0] for q in p], [q[1] for q in p], "o-", label=fam)
    ax.set_xscale("log")
    ax.set_xlabel("rate R (nats)")
    ax.set_ylabel("D_t (nats, one yardstick)")
    ax.set_title("rate-distortion, mean over seeds")
    if ax.lines:
        ax.legend()
    lines += [f"![rate against distortion]({S.save_plot(fig, out / 'beta_sigma_rd.png')})", ""]
    return lines


def _curves(g, betas, out: Path) -> list[str]:
    """The test −ELBO during training at β = 1 (and its last change), to show whether the budget is converged."""
    lines = ["## Is the budget long enough?", ""]
    fig, ax = S.figure()
    rows = []
    for fam in FAMILIES:
        for b in betas:
            for t in g.get((fam, b), []):
                c = t["metrics"].get("curve") or []
                if len(c) >= 2 and t["settings"]["seed"] == min(x["settings"]["seed"] for x in g[(fam, b)]):
                    if b == 1.0:
                        ax.plot([p[0] for p in c], [p[1] for p in c], "o-", label=fam)
                    last = c[-1][1] - c[-2][1]
                    rows.append([fam, f"{b:g}", S.fmt(c[-2][1], 1), S.fmt(c[-1][1], 1), S.fmt(last, 2),
                                 S.fmt(100 * abs(last) / max(abs(c[-1][1]), 1e-9), 2)])
    ax.set_xlabel("step")
    ax.set_ylabel("test −ELBO, first 1,000 images")
    ax.set_title("β = 1, lowest seed")
    if ax.lines:
        ax.legend()
    if not rows:
        S.save_plot(fig, out / "beta_sigma_curves.png")  # closes it; the folder keeps the same files either way
        return lines + ["One log tick per run: too few epochs to show a curve.", ""]
    worst = max(rows, key=lambda r: float(r[5]))
    lines += [f"The test −ELBO of the first 1,000 test images after the last two epochs (lowest seed). The last "
              f"epoch moved it by at most {worst[5]}% ({worst[0]}, β = {worst[1]}): "
              + ("the budget is long enough for these readings." if float(worst[5]) < 1 else
                 "**still moving**: read the sweep with that in mind."), "",
              S.table(["family", "β", "before last", "last", "change", "change, %"], rows), "",
              f"![training curves]({S.save_plot(fig, out / 'beta_sigma_curves.png')})", ""]
    return lines


def seed_means(path: Path = RESULTS) -> dict[str, list[dict]]:
    """The full grid's means over seeds, for the Compare page: family -> one dict per β (``beta``, ``n`` seeds,
    ``epochs``, and the mean and standard deviation of ``rate``, ``distortion_train_sigma`` and ``mse``, as ``KEY``
    and ``KEY_sd``), sorted by β; empty when the file does not exist. Quick-budget trials are left out."""
    trials = [t for t in load_trials(Path(path)) if t["settings"].get("epochs") == FULL["epochs"]]
    out: dict[str, list[dict]] = {}
    for (fam, beta), ts in sorted(_fam(trials).items(), key=lambda kv: (kv[0][0], kv[0][1])):
        row = {"beta": beta, "n": len(ts), "epochs": FULL["epochs"]}
        for k in ("rate", "distortion_train_sigma", "mse"):
            m, sd, _ = S.mean_std(S.values(ts, k))
            row[k], row[f"{k}_sd"] = m, (0.0 if math.isnan(sd) else sd)
        out.setdefault(fam, []).append(row)
    return out


def label(s: dict) -> str:
    return f"{s['family']} β={s['beta']:g} seed={s['seed']}" + (" +Inception" if s["inception"] else "")


PAPER = Paper("beta-sigma", "Beta-Sigma VAE: the β sweep against σ² = 1/2 and σ = 1", grid, run, report, label=label)
