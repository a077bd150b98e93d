"""``reproduce t3``: the grid, one real tiny trial (its budget points against a shorter run, its sample metrics
against ``generative_metrics``), the report's determinism and readings on synthetic trials whose answers are known,
and the legacy trials (scripts/lt_experiment.py's runs, converted) rebuilding docs/results/t3-legacy byte for byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cvae_core.reproduce import engine
from cvae_core.reproduce import t3 as T

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")  # scipy, near-equal pairs
LEGACY = REPO / "docs" / "results" / "t3-legacy"


# ------------------------------------------------------------------ the grid
def test_full_grid():
    g = T.grid(False, (0, 1, 2))
    keys = {engine.key(s) for s in g}
    assert len(keys) == len(g) == 5 * 5 * 3 + 2 * 6 * 3  # main grid (5 models incl. ct3vae ν=1e4), β sweep
    main = [s for s in g if s["beta"] == 1.0]
    assert {(T.tag(s), s["rho"]) for s in main} == {(t, float(r)) for t in T.TAGS for r in T.RHOS}
    assert all(s["taus"] == list(T.TAU_RATIOS) for s in main)
    sweep = [s for s in g if s["beta"] != 1.0]
    assert {(s["model"], s["nu"]) for s in sweep} == {("cgvae", None), ("ct3vae", 10.0)}
    assert {s["beta"] for s in sweep} == set(T.BETAS) and {s["rho"] for s in sweep} == {float(T.BETA_RHO)}
    assert all(s["taus"] == [] for s in sweep)
    assert {(s["model"], s["nu"]) for s in main} == set(T.MODELS)
    for s in g:
        assert s["steps"] == 9600 and s["budgets"] == [1200, 2400, 4800, 9600] and s["seed"] in (0, 1, 2)
        assert (s["arch"], s["hidden"], s["latent_dim"], s["batch_size"], s["lr"]) == ("mlp", 256, 16, 128, 1e-3)
        assert (s["n_per_class"], s["n_samples"], s["n_test"]) == (500, 5000, None)
        assert (s["nu"] is None) == (s["model"] in ("vae", "cgvae"))


def test_quick_grid_and_seeds():
    q = T.grid(True, (0,))
    assert len(q) == 5 * 2 + 2 * 1
    assert {s["rho"] for s in q} == {1.0, 50.0} and all(s["steps"] == 120 and s["budgets"] == [60, 120] for s in q)
    assert {s["seed"] for s in T.grid(True, (4, 7))} == {4, 7} and len(T.grid(True, (4, 7))) == 24
    assert engine.paper("t3") is T.PAPER


# ------------------------------------------------------------------ one real trial
TINY = dict(T.NETS, hidden=32, steps=20, budgets=[10, 20], n_per_class=5, n_samples=50, n_test=200, rho=100.0,
            beta=1.0, seed=3, taus=[0.5, 1.0])


@pytest.fixture(scope="module")
def tiny_runs():
    torch.set_num_threads(1)
    ct = T.run(dict(TINY, model="ct3vae", nu=10.0))
    short = T.run(dict(TINY, model="ct3vae", nu=10.0, steps=10, budgets=[10], taus=[]))
    cg = T.run(dict(TINY, model="cgvae", nu=None, taus=[]))
    return ct, short, cg


def test_run_budget_point_is_the_shorter_run(tiny_runs):
    """The 10-step point of a 20-step trial is what a 10-step trial measures: the budget callback leaves the training
    run's random stream alone."""
    ct, short, _ = tiny_runs
    assert [p["step"] for p in ct["budgets"]] == [10] and short["budgets"] == []
    p = ct["budgets"][0]
    for k in ("per_class_recall", "per_class_f1", "classifier_fid", "tail_f1", "tail_recall", "mode_coverage"):
        assert p[k] == pytest.approx(short[k], rel=1e-9, abs=1e-12), k
    assert ct["classifier_fid"] != short["classifier_fid"]  # ten more steps do change the model


def test_run_metrics_and_tau_scan(tiny_runs):
    ct, _, cg = tiny_runs
    assert ct["status"] == "finished" and ct["tau0"] == pytest.approx(T.T3_TAU) and cg["tau0"] == 1.0
    assert ct["tail_f1"] == pytest.approx(np.mean(ct["per_class_f1"][7:]))
    assert ct["tail_recall"] == pytest.approx(np.mean(ct["per_class_recall"][7:]))
    assert sum(ct["class_counts"]) == ct["n_train"] and ct["class_counts"][9] == 54
    refs = [(p["ref"], p["noise"], round(p["ratio"], 6)) for p in ct["tau_scan"]]
    assert refs == [("own", "prior", 0.5), ("own", "prior", 1.0), ("t3", "prior", 1.0), ("one", "prior",
                                                                                        round(1 / T.T3_TAU, 6)),
                    ("own", "gaussian", 1.0)]
    at_tau0 = ct["tau_scan"][1]
    for k in ("tail_f1", "classifier_fid", "per_class_recall"):
        assert at_tau0[k] == ct[k]  # the final evaluation is the scan's point at τ0
    assert ct["tau_scan"][2]["classifier_fid"] == pytest.approx(ct["classifier_fid"])  # T3_TAU is its τ0
    assert cg["tau_scan"] == [] and "per_class_precision" not in at_tau0


def test_sample_metrics_agree_with_generative_metrics():
    """sample_metrics at the model's own τ is generative_metrics (an independent implementation); τ and Gaussian noise
    change what they should."""
    from cvae_core.eval.classifier import load_classifier
    from cvae_core.eval.samples import feature_stats, generative_metrics
    from cvae_core.runs.setup import build_run
    from cvae_core.train import TrainConfig

    data = T._data(10.0, 0)
    clf = load_classifier()
    x = data.x_test[:300]
    stats = feature_stats(clf.features_and_predictions(x)[0])
    for name, opts in (("ct3vae", {"nu": 10.0}), ("cgvae", {}), ("t3vae", {"nu": 10.0})):
        model = build_run(name, data, dict(arch="mlp", hidden=32, latent_dim=16, **opts),
                          TrainConfig(steps=1, seed=1, device="cpu")).model.eval()
        ref = generative_metrics(model, x, None, n_per_class=8, n_samples=80, seed=5)
        got = T.sample_metrics(model, clf, stats, n_per_class=8, n_samples=80, seed=5)
        assert got["classifier_fid"] == pytest.approx(ref["classifier_fid"], rel=1e-6)
        key = "per_class_recall" if model.conditional else "sample_class_freq"
        assert got[key] == ref[key]
        explicit = T.sample_metrics(model, clf, stats, n_per_class=8, n_samples=80, seed=5, tau=model.default_tau)
        assert explicit["classifier_fid"] == pytest.approx(got["classifier_fid"], rel=1e-9)
        other = T.sample_metrics(model, clf, stats, n_per_class=8, n_samples=80, seed=5, tau=3 * model.default_tau)
        assert other["classifier_fid"] != got["classifier_fid"]
        g = T.sample_metrics(model, clf, stats, n_per_class=8, n_samples=80, seed=5, gaussian_noise=True)
        if name == "cgvae":
            assert g["classifier_fid"] == got["classifier_fid"]  # no mixing variable to switch off
        else:
            assert g["classifier_fid"] != got["classifier_fid"]


# ------------------------------------------------------------------ synthetic trials
def _cond(f1: float, rec: float, fid: float) -> dict:
    return dict(per_class_recall=[0.9] * 7 + [rec] * 3, per_class_f1=[0.9] * 7 + [f1] * 3, mode_coverage=1.0,
                classifier_fid=fid, tail_f1=f1, tail_recall=rec, mean_recall=(6.3 + 3 * rec) / 10,
                mean_f1=(6.3 + 3 * f1) / 10)


def _uncond(tv: float, fid: float) -> dict:
    freq = [0.1] * 10
    return dict(sample_class_freq=freq, class_freq_tv=tv, classifier_fid=fid, tail_share=0.3, coverage=1.0)


NOISE = (0.01, -0.012, 0.003)  # per seed: a paired difference with this spread is not significant around 0
BUMP = {0.25: -0.1, 0.5: -0.05, 1.0: 0.0, 2.0: 0.03, 3.0: -0.02}


def synthetic(gap=lambda rho: 0.1 if rho >= 10 else 0.0, flip=False, scale_explains=True, budgets=(1200, 9600)):
    """Trials of the full schema: ct3vae's tail F1 leads cgvae's by gap(rho) (+ per-seed noise); with `flip`, cgvae
    leads at the largest budget; with `scale_explains`, cgvae sampled at ct3vae's τ matches ct3vae."""
    trials = []
    for (model, nu), tg in zip(T.MODELS, T.TAGS, strict=True):
        for rho in (1.0, 3.0, 10.0, 100.0):
            for seed in (0, 1, 2):
                e = NOISE[seed]
                base = 0.6 + 0.02 * seed  # the seed's subset: shared by every model (pairing)
                if tg == "ct3vae":
                    f1 = base + gap(rho) + e
                elif tg == CT3_G:
                    f1 = base + e / 2
                else:
                    f1 = base
                if model in T.CONDITIONAL:
                    m = _cond(f1, f1, 100 - 50 * (f1 - base))
                else:
                    m = _uncond(0.3 - (0.1 if model == "t3vae" else 0) + e * (model == "t3vae"), 200 + 10 * seed)
                pts = []
                for b in budgets[:-1]:
                    p = dict(m, step=b)
                    if flip and model in T.CONDITIONAL:
                        p = dict(p, **_cond(base + (0.2 + e if tg == "ct3vae" else 0), base, 120))
                    pts.append(p)
                if flip and tg == "cgvae":
                    m = dict(m, **_cond(base + 0.3 + e, base + 0.3 + e, 60))
                scan = []
                tau0 = T.T3_TAU if model in T.STUDENT_T and nu == T.NU else (0.9 if model in T.STUDENT_T else 1.0)
                for r in T.TAU_RATIOS:  # ct3vae's tail F1 peaks at 2 τ0, the others' at τ0
                    bump = BUMP[r] if tg == "ct3vae" else -0.05 * abs(np.log2(r))
                    scan.append(dict(m, tau=r * tau0, ratio=r, ref="own", noise="prior",
                                     tail_f1=m.get("tail_f1", 0) + bump + e * (r != 1)))
                at_t3 = (dict(m, **_cond(f1 if not scale_explains else trials_ct_f1(base, gap(rho), e), 0.5, 90))
                         if tg == "cgvae" else m)
                scan += [dict(at_t3, tau=T.T3_TAU, ratio=T.T3_TAU / tau0, ref="t3", noise="prior"),
                         dict(m, tau=1.0, ratio=1 / tau0, ref="one", noise="prior")]
                if model in T.STUDENT_T:
                    scan.append(dict(m, tau=tau0, ratio=1.0, ref="own", noise="gaussian"))
                s = dict(T.FULL, model=model, nu=nu, rho=rho, beta=1.0, seed=seed, taus=list(T.TAU_RATIOS),
                         steps=budgets[-1], budgets=list(budgets))
                trials.append({"settings": s, "metrics": dict(m, budgets=pts, tau_scan=scan, tau0=tau0,
                                                             class_counts=[100] * 10)})
    for model, nu in (("cgvae", None), ("ct3vae", 10.0)):
        for beta in (0.02, 0.05, 0.2, 0.4, 0.6):
            for seed in (0, 1, 2):
                f1 = (0.8 - 0.01 * beta if model == "ct3vae" else 0.5 + (0.2 if beta == 0.05 else 0)) + NOISE[seed]
                s = dict(T.FULL, model=model, nu=nu, rho=float(T.BETA_RHO), beta=beta, seed=seed, taus=[],
                         steps=budgets[-1], budgets=list(budgets))
                trials.append({"settings": s, "metrics": dict(_cond(f1, f1, 100), budgets=[], tau_scan=[])})
    trials.sort(key=lambda r: engine.key(r["settings"]))
    return trials


CT3_G = T.CT3_G


def trials_ct_f1(base, gap, e):
    return base + gap + e


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """The reports of the synthetic variants, each built once (their plots in a folder of their own)."""
    variants = dict(default={}, flat=dict(gap=lambda rho: 0.0), every=dict(gap=lambda rho: 0.1), flip=dict(flip=True),
                    noscale=dict(scale_explains=False))
    out = {k: T.report(synthetic(**kw), tmp_path_factory.mktemp(k)) for k, kw in variants.items()}
    one = [t for t in synthetic() if t["settings"]["seed"] == 0]
    out["oneseed"] = T.report(one, tmp_path_factory.mktemp("oneseed"))
    return out


def test_report_is_deterministic(tmp_path):
    trials = synthetic()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    ta, tb = T.report(trials, a), T.report(json.loads(json.dumps(trials)), b)
    assert ta == tb
    pngs = sorted(p.name for p in a.glob("*.png"))
    assert pngs == ["t3_beta.png", "t3_budget.png", "t3_rho.png", "t3_tau.png"]
    for name in pngs:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def _line(text: str, start: str) -> str:
    hits = [ln for ln in text.splitlines() if ln.startswith(start)]
    assert hits, f"no line starts with {start!r}"
    return hits[0]


def test_crossover_and_claim_a(reports):
    text = reports["default"]
    assert "ct3vae leads significantly from ρ = 10 on; below (ρ = 1, 3) the differences are not significant" in \
        _line(text, "- **(b) crossover (paper: ρ ≈ 3, v2: 5), tail F1**")
    assert _line(text, "- **(a) ct3vae ahead of cgvae under strong imbalance (ρ ≥ 10), tail F1**").endswith(
        "significantly ahead at ρ = 10, 100 of 10, 100: holds.")
    # no lead anywhere: no crossover, claim (a) does not hold
    flat = reports["flat"]
    assert "no crossover to ct3vae" in _line(flat, "- **(b) crossover (paper: ρ ≈ 3, v2: 5), tail F1**")
    assert _line(flat, "- **(a) ct3vae ahead of cgvae under strong imbalance (ρ ≥ 10), tail F1**").endswith(
        "does not hold.")
    # a lead at every rho: no crossover either
    every = reports["every"]
    assert "ct3vae leads significantly at every ρ (from ρ = 1): no crossover" in every


def test_one_seed_is_not_tested(reports):
    text = reports["oneseed"]
    assert _line(text, "- **(a) ct3vae ahead of cgvae under strong imbalance (ρ ≥ 10), tail F1**").endswith(
        "not testable with one seed.")
    assert ("not testable with one seed; by the means alone ct3vae is ahead at ρ = 1, 3, 10, 100 and behind at none"
            in _line(text, "- **(b) crossover (paper: ρ ≈ 3, v2: 5), tail F1**"))


def test_budget_readings(reports):
    text = reports["default"]
    assert "the same in 12 of 12 (ρ, metric) pairs." in text
    assert "nothing: the readings are flat at the largest budget." in text
    flipped = reports["flip"]
    line = _line(flipped, "- **Ranking of ct3vae and cgvae, smallest against largest budget**")
    assert "ρ = 100 tail F1: **ct3vae** at 1200 → **cgvae** at 9600" in line
    assert "cgvae ρ = 100 tail F1" in _line(flipped, "- **Still moving over the last doubling**")


def test_beta_readings(reports):
    text = reports["default"]
    assert _line(text, "- **(c) cgvae needs β ∈ [0.02, 0.07]** (9600 steps)").endswith("holds.")
    assert "(spread 0.004; stable = within 0.050): holds; its best β is 0.02." in text


def test_tau_and_isolation_readings(reports):
    text = reports["default"]
    ct = _line(text, "- **ct3vae**:")
    assert "ρ = 100 tail F1: best at 2·τ0" in ct and "ρ = 100 classifier-FID: τ0 is best" in ct
    assert "ρ = 100 tail F1: τ0 is best" in _line(text, "- **cgvae**:")
    iso = _line(text, "- **tail F1**:")
    # the gap at rho = 100 is 0.1; cgvae sampled at ct3vae's tau closes it (scale), tails at sampling do nothing
    assert "ρ = 100: gap +0.1 (significant); significant parts: scale +0.1, ν +0.1" in iso
    assert "at equal τ the gap is +0 (n.s.)" in iso.split("ρ = 100:")[1]
    other = _line(reports["noscale"], "- **tail F1**:")
    assert "at equal τ the gap is +0.1 (significant)" in other.split("ρ = 100:")[1]


# ------------------------------------------------------------------ the legacy trials
@pytest.mark.skipif(not (LEGACY / "trials.jsonl").is_file(), reason="no legacy trials")
def test_legacy_report_rebuilds(tmp_path):
    """scripts/lt_experiment.py's 114 runs, converted: --report-only rewrites the committed REPORT.md and plots byte
    for byte, and they hold the old tables' numbers."""
    out = tmp_path / "legacy"
    out.mkdir()
    for name in ("trials.jsonl", "grid.json"):
        shutil.copy(LEGACY / name, out / name)
    assert engine.reproduce("t3", out, report_only=True, say=lambda s: None) == 0
    assert (out / "REPORT.md").read_text() == (LEGACY / "REPORT.md").read_text()
    for png in LEGACY.glob("*.png"):
        assert (out / png.name).read_bytes() == png.read_bytes(), png.name
    text = (out / "REPORT.md").read_text()
    trials = engine.load_trials(out / "trials.jsonl")
    assert len(trials) == 114 and all(t["trial_id"] is None and "lt_experiment.py" in t["source"] for t in trials)
    # the old table.md / steps_check.md / beta_sweep.md numbers
    assert "| 100 | cgvae | 0.38 ± 0.02 | 0.24 ± 0.03 | 0.67 ± 0.01 | 0.70 ± 0.00 |" in text
    assert "| 100 | cgvae | tail F1 | 0.24 ± 0.03 | 0.67 ± 0.03 | 0.88 ± 0.02 |" in text
    assert "| 0.2 | 0.51 ± 0.01 | 0.86 ± 0.02 | 0.54 ± 0.02 | 0.87 ± 0.01 |" in text
    assert "| conv | 100 | 1 | 1200 | cgvae | 0.65 ± 0.03 | 0.62 ± 0.03 | 134 ± 4 |" in text
