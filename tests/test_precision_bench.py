"""fit's precision option (bf16 autocast, weights and Adam in float32) and the pytorch/examples bench in a tiny
configuration, so that neither can rot (no timing is asserted)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from cvae_core.errors import ConfigError
from cvae_core.registry import build_model
from cvae_core.train import TrainConfig, bf16_fast, fit

REPO = Path(__file__).resolve().parents[1]


def test_precision_is_checked():
    assert TrainConfig().precision == "fp32"
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, auto"):
        TrainConfig(precision="fp16")


def test_bf16_autocast_trains_float32_weights_and_changes_the_arithmetic(mnist_small):
    runs = {}
    for precision in ("fp32", "bf16"):
        model = build_model("bs_vae", arch="mlp", hidden=64, latent_dim=8, seed=0)
        h = fit(model, mnist_small, TrainConfig(steps=12, batch_size=64, log_every=6, precision=precision))
        assert all(p.dtype == torch.float32 for p in model.parameters())
        runs[precision] = (h.records[0]["loss"], h.records[-1]["loss"], model)
    for first, last, _ in runs.values():
        assert math.isfinite(last) and last < first  # both train
    w32, w16 = (next(m.parameters()).detach() for *_, m in runs.values())
    assert not torch.equal(w32, w16)  # autocast ran: bf16 matmuls round differently
    assert torch.allclose(w32, w16, atol=0.05)  # but it is the same training


def test_bf16_fast_is_a_detection_not_an_assumption():
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert bf16_fast(torch.device("cpu")) == any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def test_the_examples_bench_runs_in_a_tiny_configuration():
    sys.path.insert(0, str(REPO / "bench"))
    import bench_examples

    f = bench_examples.figures(steps=2, repeats=1, epochs=0)
    for arch in ("mlp", "conv"):
        assert f[arch]["reference_img_s"] > 0 and f[arch]["fit_img_s"] > 0 and f[arch]["ratio"] > 0
    text = bench_examples.table(f, 2, 0)
    assert "| bs_vae mlp | fp32 |" in text and "| bs_vae conv | fp32 |" in text


def test_the_sequence_and_demo_bench_runs_in_a_tiny_configuration():
    sys.path.insert(0, str(REPO / "bench"))
    import bench_sequence_and_demo as b

    rates = b.seq_steps_per_s(steps=2, repeats=1)
    assert rates["seq_steps_per_s"] > 0 and rates["seq_steps_per_s_masked"] > 0
    f = b.demo_model_s(max_s=0.01, max_epochs=1, n_train=1280)  # 10 steps, one evaluation, then the cap stops it
    assert f["epochs"] == 1 and f["demo_model_s"] > 0 and math.isfinite(f["neg_elbo"])
    assert f["target"] == pytest.approx(-915.908653125 * 0.95) and f["met"] is False


def test_the_examples_elbo_gap_is_the_gap_of_the_seed_means():
    sys.path.insert(0, str(REPO / "bench"))
    import bench_examples

    e = bench_examples.elbo_gap("mlp", 2 * 128 / 60000, seeds=(0, 1))  # 2 steps on each side, two seeds
    assert e["steps"] == 2 and len(e["reference_all"]) == len(e["fit_all"]) == 2
    ra, rb = sum(e["reference_all"]) / 2, sum(e["fit_all"]) / 2
    assert e["rel_gap"] == pytest.approx(abs(rb - ra) / abs(ra))
    assert e["reference_all"][0] != e["reference_all"][1]  # the seed reaches the weights and the batch order
    spread = max(abs(v[0] - v[1]) / 2 ** 0.5 for v in (e["reference_all"], e["fit_all"])) / abs(ra)
    assert e["rel_spread"] == pytest.approx(spread)
    text = bench_examples.table({"mlp": {}, "conv": {}, "elbo": e}, 2, 2 * 128 / 60000)
    assert "means of 2 seeds each" in text


def test_make_bench_ends_with_every_target_measured_against_its_budget():
    sys.path.insert(0, str(REPO / "bench"))
    import run_all

    figures = {"fit_vs_examples_mlp": 1.5, "fit_vs_examples_conv": 2.5, "app_start_s": 5.1, "grid64_ms": 9.0}
    text = run_all.targets_table(figures)
    rows = {line.split("|")[2].strip(): line for line in text.splitlines() if line.startswith("| ") and "`" in line}
    assert set(rows) == {f"`{t[0]}`" for t in run_all.TARGETS}  # every target has a row
    assert "| 1.5x | ≥ 3x | NO | 0.50 |" in rows["`fit_vs_examples_mlp`"]
    assert "| 2.5x | ≥ 2x | yes | 1.25 |" in rows["`fit_vs_examples_conv`"]
    assert "| 5.1 s | ≤ 5 s | NO | 1.02 |" in rows["`app_start_s`"]
    assert "| 9 ms | ≤ 15 ms | yes | 0.60 |" in rows["`grid64_ms`"]
    assert "not measured" in rows["`peak_rss_gib`"]
