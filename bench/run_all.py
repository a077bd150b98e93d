"""Run every benchmark and print one markdown report (copy it into docs/benchmarks.md)."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_app_threads  # noqa: E402
import bench_certificate  # noqa: E402
import bench_class_balance  # noqa: E402
import bench_decoder_head  # noqa: E402
import bench_generate  # noqa: E402
import bench_latent_map  # noqa: E402
import bench_rare_combinations  # noqa: E402
import bench_train_loop  # noqa: E402

if __name__ == "__main__":
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"Machine: {platform.machine()}, {dev}, torch {torch.__version__}\n")
    print(bench_train_loop.main())
    print(bench_decoder_head.main())
    print(bench_latent_map.main())
    print(bench_app_threads.main())
    print(bench_class_balance.main())
    print(bench_rare_combinations.main())
    print(bench_certificate.main())
    print(bench_generate.main())
