"""Training while the page works: in the app a worker thread trains while the page thread encodes images (the
Latent map of the live run, sample grids). With OpenMP, each of the two Python threads runs its own team of
torch threads, so on 2 cores four threads compete, and threads that spin while they wait can make both crawl.

Measured in fresh processes (the OpenMP settings are read once, when torch loads), interleaved, median of 3:
training steps/s of bs_vae alone, and with a second thread encoding batches of 500 test images the whole time,
for the default OpenMP wait policy and for OMP_WAIT_POLICY=PASSIVE (threads sleep instead of spinning)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, threading, time, torch
sys.path.insert(0, sys.argv[1])
from cvae_core.data import load_dataset, to_float
from cvae_core.registry import build_model
from cvae_core.train import TrainConfig, fit
data = load_dataset("mnist").subset(20000, 1000)
busy = sys.argv[2] == "busy"
stop = threading.Event()
def encode_forever():
    m = build_model("bs_vae", seed=1).eval()
    x = to_float(data.x_test[:500])
    with torch.no_grad():
        while not stop.is_set():
            m.encode(x)
th = threading.Thread(target=encode_forever, daemon=True)
if busy:
    th.start()
model = build_model("bs_vae", seed=0)
fit(model, data, TrainConfig(steps=5, batch_size=128, log_every=50))  # warm-up
t = time.perf_counter()
fit(model, data, TrainConfig(steps=40, batch_size=128, log_every=50))
rate = 40 / (time.perf_counter() - t)
stop.set()
if busy:
    th.join()  # a daemon thread inside torch at interpreter exit aborts the process
print(json.dumps({"steps_per_s": rate}))
"""


def _run(policy: str | None, busy: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", CHILD, str(REPO), "busy" if busy else "alone"], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["steps_per_s"]


def main(repeats: int = 3) -> str:
    cases = {(p, b): [] for p in (None, "PASSIVE") for b in (False, True)}
    for _ in range(repeats):
        for (p, b), v in cases.items():
            v.append(_run(p, b))
    med = {k: statistics.median(v) for k, v in cases.items()}
    ref = med[(None, False)]
    rows = ["**Training while the page thread encodes images** (reference: default OpenMP policy, training alone)",
            "", "| OpenMP wait policy | page thread | training steps/s | speed vs reference |", "|---|---|---:|---:|"]
    for (p, b), v in med.items():
        rows.append(f"| {p or 'default'} | {'encoding 500 images in a loop' if b else 'idle'} | {v:.1f} | "
                    f"{v / ref:.2f}x |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(main())
