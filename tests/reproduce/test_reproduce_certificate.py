"""``reproduce certificate``: the grid, one real tiny trial, a report that depends on the trials only, each reading on
synthetic trials whose answer is known, and the legacy trials (the old scripts/certificate_experiment.py table)
rebuilding the committed report."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from cvae_core.reproduce import certificate as C
from cvae_core.reproduce.engine import GRID, REPORT, TRIALS, reproduce

REPO = Path(__file__).resolve().parents[2]
LEGACY = REPO / "docs" / "results" / "certificate-legacy"


def test_grid_full_and_quick():
    full = C.grid(False, (0, 1, 2))
    assert len(full) == 3 * 7 * 3 == 63
    assert {(s["variant"], s["alpha"], s["seed"]) for s in full} == {
        (v, a, s) for v in C.VARIANTS for a in (1, 2, 4, 8, 16, 32, 64) for s in (0, 1, 2)}
    assert all(s["epochs"] == 8 and s["hidden"] == 256 and s["latent_dim"] == 16 and s["is_samples"] == 100
               and s["is_images"] == 1000 and s["lambda_ts"] == 1.0 and s["prefit_fraction"] == 0.1 for s in full)
    quick = C.grid(True, (0,))
    assert len(quick) == 6 and {s["alpha"] for s in quick} == {1.0, 64.0} and {s["seed"] for s in quick} == {0}
    assert all(s["epochs"] < 1 for s in quick)
    assert len(C.grid(False, (5,))) == 21


def test_one_tiny_trial():
    s = dict(C.QUICK, epochs=0.03, is_samples=8, is_images=40, variant="RST-VAE", alpha=4.0, seed=0)
    m = C.run(s)
    assert m["status"] == "finished" and m["steps"] == math.ceil(0.03 * 60_000 / 128)
    assert m["GT"] == pytest.approx(m["IT"] - m["LTS"], abs=1e-9)
    assert m["neg_elbo"] == pytest.approx(m["distortion"] + m["rate"], rel=1e-6)  # the α_KL = 1 bound
    assert m["is_nll"] <= m["is_neg_elbo"] + 1e-6  # Jensen, on the same samples
    assert m["au"] == m["au_witness"] + m["au_free"] and 0 <= m["au_free"] <= 16 - 9
    assert m["curve"] and all(len(p) == 3 for p in m["curve"])


# ------------------------------------------------------------------ synthetic trials
def _trial(v, a, seed, **metrics) -> dict:
    base = dict(IT=2.0, LTS=1.0 if v != "VAE" else 4.0, distortion=80.0 + a, rate=20.0 / a, mu_sq=5.0, energy=0.45,
                au=10, au_free=1, au_witness=9, mse=0.02, curve=[[100 * i, 1.0, 10] for i in range(1, 9)])
    base["GT"] = base["IT"] - base["LTS"]
    base.update(metrics)
    base["neg_elbo"] = base["distortion"] + base["rate"]
    return {"paper": "certificate", "trial_id": f"t{v}{a}{seed}", "seconds": 1.0, "metrics": base,
            "settings": dict(C.FULL, variant=v, alpha=a, seed=seed)}


def _sorted(trials):
    from cvae_core.reproduce.engine import key

    return sorted(trials, key=lambda r: key(r["settings"]))


def _collapsing(rst_cost: float = 2.0) -> list[dict]:
    """The VAE's AU fall to 0 at α_KL 32 and 64; RST-VAE keeps 9 (+ seed-dependent free units) and pays
    `rst_cost` nats of IS-NLL (plus a little seed noise); RST-prefit keeps its units at no cost."""
    out = []
    for a in (1.0, 8.0, 32.0, 64.0):
        for seed in (0, 1, 2):
            vae_au = 0 if a >= 32 else 10 - seed
            out.append(_trial("VAE", a, seed, au=vae_au, au_free=0 if a >= 32 else 1, is_nll=100.0 + a + seed))
            out.append(_trial("RST-VAE", a, seed, au=9 + seed % 2, au_free=seed % 2,
                              is_nll=100.0 + a + seed + rst_cost + 0.1 * seed))
            out.append(_trial("RST-prefit", a, seed, au=9, au_free=0, is_nll=100.0 + a + seed + 0.1 * (seed - 1)))
    return _sorted(out)


def test_report_is_byte_identical(tmp_path):
    t = _collapsing()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert C.report(t, a) == C.report(list(t), b)
    for png in ("certificate_alpha.png", "certificate_curves.png"):
        assert (a / png).read_bytes() == (b / png).read_bytes()


def test_reading_when_the_vae_collapses(tmp_path):
    text = C.report(_collapsing(), tmp_path)
    assert "**Does the plain VAE collapse?** Yes: its mean active units reach ≤ 1 at α_KL = 32, 64" in text
    assert "**RST-VAE at α_KL = 32**: AU 9.3 ± 0.6 against the VAE's 0.0 ± 0.0 (paired p = 0.001): it keeps " \
           "more units" in text
    # RST-VAE's IS-NLL is 2.1 nats worse, every seed: significant; RST-prefit's differences are noise
    assert "likelihood: IS-NLL +2.10 nats per image against the VAE's (a cost; significant, paired p < 0.001)" \
        in text
    assert "RST-prefit at α_KL = 64**: AU 9.0 ± 0.0 against the VAE's 0.0 ± 0.0" in text
    assert "likelihood: IS-NLL +0.00 nats per image against the VAE's (no cost; not significant, paired p = 1.000)" \
        in text
    assert "**The plain VAE is certified** in 0 of its 12 trials" in text
    assert "**RST-VAE is certified** in 12 of its 12 trials" in text
    assert C.collapse_alphas(C._by(_collapsing()), [1.0, 8.0, 32.0, 64.0]) == ([32.0, 64.0], True)


def test_reading_when_rst_gains_likelihood(tmp_path):
    """RST-VAE 2 nats *below* the VAE on every seed (+0.1 per seed): a gain, said as one, not a negative cost."""
    text = C.report(_collapsing(rst_cost=-2.0), tmp_path)
    assert "**RST-VAE at α_KL = 32**" in text
    # differences -2.0, -1.9, -1.8: t = -1.9 / (0.1 / sqrt(3)) = -32.9 with 2 df
    assert "likelihood: IS-NLL −1.90 nats per image against the VAE's (lower: a gain, not a cost; significant, " \
           "paired p < 0.001)" in text


def test_reading_when_the_vae_never_collapses(tmp_path):
    t = [x for x in _collapsing() if x["settings"]["alpha"] <= 8.0]
    text = C.report(t, tmp_path)
    assert "**Does the plain VAE collapse?** No, not by α_KL = 8: its fewest active units are 9.0 ± 1.0" in text
    assert "the most stressed setting, α_KL = 8, which is not collapse" in text
    # RST-VAE 9, 10, 9 against the VAE 10, 9, 8: d = -1, 1, 1, t = (1/3) / (sqrt(4/3) / sqrt(3)) = 0.5, 2 df
    assert "**RST-VAE at α_KL = 8**: AU 9.3 ± 0.6 against the VAE's 9.0 ± 1.0 (paired p = 0.667): it does not " \
           "keep significantly more units" in text


def test_reading_when_rst_collapses_too_but_is_certified(tmp_path):
    t = _collapsing()
    for x in t:
        if x["settings"]["alpha"] == 64.0 and x["settings"]["variant"] == "RST-VAE":
            x["metrics"].update(au=0, au_free=0, au_witness=0, mu_sq=0.005, LTS=1.7, GT=0.3)
    text = C.report(t, tmp_path)
    assert "**RST-VAE at α_KL = 64**: AU 0.0 ± 0.0 against the VAE's 0.0 ± 0.0 (paired p = 1.000): it does not " \
           "keep significantly more units" in text
    assert "Its units are collapsed too, yet it is certified in 3/3" in text
    assert text.count("Its units are collapsed too") == 1


def test_report_without_is_nll_or_vae(tmp_path):
    t = _collapsing()
    for x in t:
        x["metrics"].pop("is_nll")
    assert "likelihood: not measured (no IS-NLL)" in C.report(t, tmp_path)
    assert "No VAE trials" in C.report([x for x in t if x["settings"]["variant"] != "VAE"], tmp_path)


# ------------------------------------------------------------------ the legacy trials (the old script's)
def test_legacy_trials_rebuild_the_committed_report(tmp_path):
    for name in (TRIALS, GRID):
        shutil.copy(LEGACY / name, tmp_path / name)
    assert reproduce("certificate", tmp_path, report_only=True, say=lambda s: None) == 0
    text = (tmp_path / REPORT).read_text()
    assert text == (LEGACY / REPORT).read_text()
    # the old table's numbers (docs/results/certificate.md before the port)
    assert "| VAE | 1 | 1.958 ± 0.000 | 7.454 ± 0.877 | -5.496 ± 0.877 | 66.27 ± 0.57 | 20.97 ± 0.21 |" in text
    assert "| RST-VAE | 8 | 1.958 ± 0.000 | 0.936 ± 0.086 | 1.022 ± 0.086 | 126.53 ± 0.98 | 5.17 ± 0.14 |" in text
    assert "| RST-prefit | 4 |" in text
    assert "Energy bound (1/2) E‖μ*‖² of the analytic code on the test set: 0.4521" in text
    assert "**Does the plain VAE collapse?** No, not by α_KL = 8: its fewest active units are 6.7 ± 1.2" in text
