"""Run every benchmark and print one markdown report (copy it into docs/benchmarks.md)."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_app_server  # noqa: E402
import bench_app_threads  # noqa: E402
import bench_certificate  # noqa: E402
import bench_class_balance  # noqa: E402
import bench_decoder_head  # noqa: E402
import bench_examples  # noqa: E402
import bench_generate  # noqa: E402
import bench_latent_map  # noqa: E402
import bench_rare_combinations  # noqa: E402
import bench_sequence_and_demo  # noqa: E402
import bench_train_loop  # noqa: E402
from _common import TARGETS  # noqa: E402

from cvae_core.train import cpu_info  # noqa: E402


def cpu_name() -> str:
    """The CPU's model name and its bf16 flags, e.g. "Intel(R) Xeon(R) Processor (amx_bf16, avx512_bf16)": ratios
    depend on the machine, so the report names it."""
    name, bf16 = cpu_info()
    name = name or platform.processor() or "unknown CPU"
    return f"{name} ({', '.join(bf16)})" if bf16 else name


def targets_table(figures: dict) -> str:
    """One row per target: measured, target, met, and measured/target (how far from it)."""
    rows = ["**Targets** (issue 20; measured in this run)", "",
            "| figure | key | measured | target | met | measured / target |", "|---|---|---:|---:|---|---:|"]
    for key, what, target, unit, higher in TARGETS:
        v = figures.get(key)
        if not isinstance(v, (int, float)):
            rows.append(f"| {what} | `{key}` | not measured | {'≥' if higher else '≤'} {target:g}{unit} | – | – |")
            continue
        met = v >= target if higher else v <= target
        rows.append(f"| {what} | `{key}` | {v:.4g}{unit} | {'≥' if higher else '≤'} {target:g}{unit} | "
                    f"{'yes' if met else 'NO'} | {v / target:.2f} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    dev = f"{cpu_name()}; {dev}"
    print(f"Machine: {platform.machine()}, {dev}, torch {torch.__version__}\n")
    print(bench_train_loop.main())
    print(bench_decoder_head.main())
    print(bench_latent_map.main())
    print(bench_app_threads.main())
    print(bench_class_balance.main())
    print(bench_rare_combinations.main())
    print(bench_certificate.main())
    print(bench_generate.main())
    figures: dict = {}
    text, ex = bench_examples.main()
    print(text)
    figures.update(fit_vs_examples_mlp=ex["mlp"]["ratio"], fit_vs_examples_conv=ex["conv"]["ratio"],
                   elbo_rel_gap=ex["elbo"]["rel_gap"], elbo_rel_spread=ex["elbo"].get("rel_spread"))
    for arch in ("mlp", "conv"):
        if "ratio_bf16" in ex[arch]:
            figures[f"fit_vs_examples_{arch}_bf16"] = ex[arch]["ratio_bf16"]
    if ex.get("elbo_conv_bf16"):
        figures["elbo_rel_gap_conv_bf16"] = ex["elbo_conv_bf16"]["rel_gap"]
    figures.update(bench_generate.FIGURES, **bench_latent_map.FIGURES)
    text, app = bench_app_server.main()
    print(text)
    figures.update(app_start_s=app.get("app_start_s"), peak_rss_gib=app.get("peak_rss_gib"))
    text, sd = bench_sequence_and_demo.main()
    print(text)
    figures.update(seq_steps_per_s=sd["seq_steps_per_s"], seq_steps_per_s_masked=sd["seq_steps_per_s_masked"],
                   demo_model_s=sd["demo_model_s"],
                   demo_model_reached=sd["met"])
    print(targets_table(figures))
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in figures.items()}))
