"""Training speed against the loop users really write: the pytorch/examples MNIST VAE loop (``vae/main.py``), run on
the same project model.

The reference, faithful to the example: torchvision ``datasets.MNIST`` over the prepared files (``.data/MNIST/raw``)
with ``transforms.ToTensor()`` per item, ``DataLoader(batch_size=128, shuffle=True)`` (no workers on a CPU, as the
example), Adam 1e-3, ``optimizer.zero_grad(); loss.backward(); train_loss += loss.item(); optimizer.step()`` every
step. The only change: the loss is the project model's own (``model.loss(x)["loss"]``), so both sides train the same
model on the same data with the same batch size and learning rate.

Measured for the MLP and the conv bs_vae: images/s of each loop over the same number of steps (repeats interleaved,
median), and the test -ELBO each reaches after the same number of epochs (relative gap of the means over 3 seeds
for the MLP; one seed for the conv in bf16).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import BUDGET  # noqa: E402  (bench/ is on the path: run as a script, from run_all or a test)

from cvae_core.data import load_dataset  # noqa: E402
from cvae_core.data.mnist import default_data_root  # noqa: E402
from cvae_core.eval.likelihood import evaluate  # noqa: E402
from cvae_core.registry import build_model  # noqa: E402
from cvae_core.train import TrainConfig, bf16_fast, fit  # noqa: E402

BATCH, LR = 128, 1e-3
ARCHS = {"mlp": {"arch": "mlp"}, "conv": {"arch": "conv"}}


def examples_loader(train: bool = True):
    """torchvision's MNIST over the prepared raw files, ToTensor per item, as pytorch/examples builds it."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    ds = datasets.MNIST(str(default_data_root()), train=train, download=False, transform=transforms.ToTensor())
    return DataLoader(ds, batch_size=BATCH, shuffle=train)


def reference(model, steps: int, loader=None) -> float:
    """The example's training loop for `steps` steps (epochs roll over); returns the summed loss like its log."""
    loader = loader or examples_loader()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    train_loss, done = 0.0, 0
    while done < steps:
        for data, _ in loader:
            opt.zero_grad()
            loss = model.loss(data)["loss"]
            loss.backward()
            train_loss += loss.item()
            opt.step()
            done += 1
            if done == steps:
                break
    return train_loss


def ours(model, data, steps: int, **train) -> None:
    fit(model, data, TrainConfig(steps=steps, batch_size=BATCH, lr=LR, log_every=max(50, steps // 4), **train))


def speed(arch: str, steps: int, repeats: int) -> dict[str, float]:
    """images/s of each loop (median over interleaved repeats) and their ratio."""
    data = load_dataset("mnist")
    loader = examples_loader()
    kw = ARCHS[arch]
    runs = {"reference": lambda: reference(build_model("bs_vae", seed=0, **kw), steps, loader),
            "fit": lambda: ours(build_model("bs_vae", seed=0, **kw), data, steps)}
    if bf16_fast(torch.device("cpu")):
        runs["fit_bf16"] = lambda: ours(build_model("bs_vae", seed=0, **kw), data, steps, precision="bf16")
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up
        fn()
    for _ in range(repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"reference_img_s": steps * BATCH / med["reference"], "fit_img_s": steps * BATCH / med["fit"],
           "ratio": med["reference"] / med["fit"]}
    if "fit_bf16" in med:
        out.update(fit_bf16_img_s=steps * BATCH / med["fit_bf16"], ratio_bf16=med["reference"] / med["fit_bf16"])
    return out


def elbo_gap(arch: str, epochs: float, seeds: tuple[int, ...] = (0,), **train) -> dict:
    """Test -ELBO of each loop's model after the same number of epochs, for each seed (the model's initial weights,
    the batch order and the noise: both sides start from the same weights), and the relative gap of the means
    |mean ours - mean ref| / |mean ref|. With several seeds, also the seed-to-seed spread (the std of each side over
    |mean ref|): two batch orders alone move one epoch's -ELBO by about that much. `train`: fit's options, e.g.
    precision="bf16"."""
    data = load_dataset("mnist")
    steps = int(round(epochs * len(data.x_train) / BATCH))
    kw = ARCHS[arch]
    ref, fit_ = [], []
    for seed in seeds:
        a, b = build_model("bs_vae", seed=seed, **kw), build_model("bs_vae", seed=seed, **kw)
        torch.manual_seed(seed)
        reference(a, steps)
        ours(b, data, steps, seed=seed, **train)
        ra, rb = (float(evaluate(m, data.x_test)["neg_elbo"]) for m in (a, b))  # the metric every run records
        ref.append(ra)
        fit_.append(rb)
    ma, mb = statistics.fmean(ref), statistics.fmean(fit_)
    out = {"reference_neg_elbo": ma, "fit_neg_elbo": mb, "rel_gap": abs(mb - ma) / abs(ma), "steps": steps,
           "seeds": list(seeds), "reference_all": ref, "fit_all": fit_}
    if len(seeds) > 1:
        out["rel_spread"] = max(statistics.stdev(ref), statistics.stdev(fit_)) / abs(ma)
    return out


def figures(steps: int = 60, repeats: int = 3, epochs: float = 1.0, seeds: tuple[int, ...] = (0, 1, 2)) -> dict:
    out: dict = {}
    for arch in ARCHS:
        out[arch] = speed(arch, steps, repeats)
    out["elbo"] = elbo_gap("mlp", epochs, seeds) if epochs > 0 else None
    if epochs > 0 and "ratio_bf16" in out["conv"]:
        out["elbo_conv_bf16"] = elbo_gap("conv", epochs, precision="bf16")
    return out


def table(f: dict, steps: int, epochs: float) -> str:
    rows = [f"**Training speed against the pytorch/examples VAE loop** ({torch.get_num_threads()} torch threads, "
            f"{steps} steps x batch {BATCH}, medians of interleaved repeats; the same project model on both sides)",
            "", "| model | fit precision | reference images/s | fit images/s | fit / reference | target |",
            "|---|---|---:|---:|---:|---:|"]
    targets = {arch: BUDGET[f"fit_vs_examples_{arch}"] for arch in ARCHS}
    for arch in ARCHS:
        r = f[arch]
        for prec, img, ratio in (("fp32", "fit_img_s", "ratio"), ("bf16 autocast", "fit_bf16_img_s", "ratio_bf16")):
            if ratio in r:
                met = "met" if r[ratio] >= targets[arch] else "NOT met"
                rows.append(f"| bs_vae {arch} | {prec} | {r['reference_img_s']:,.0f} | {r[img]:,.0f} | "
                            f"{r[ratio]:.2f}x | ≥ {targets[arch]:g}x {met} |")
    for key, what in (("elbo", "MLP, fp32"), ("elbo_conv_bf16", "conv, bf16 autocast")):
        if f.get(key):
            e = f[key]
            n = len(e["seeds"])
            pairs = ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(e["reference_all"], e["fit_all"], strict=True))
            each = "one seed each" if n == 1 else (
                f"means of {n} seeds each; per seed {pairs} "
                f"(reference/fit); seed-to-seed std {100 * e['rel_spread']:.2f}% of the reference's mean")
            rows += ["", f"Test -ELBO after {epochs:g} epoch(s) ({e['steps']} steps), {what}: reference "
                     f"{e['reference_neg_elbo']:.1f}, fit {e['fit_neg_elbo']:.1f} nats: gap {100 * e['rel_gap']:.2f}% "
                     f"(target < 1%: {'met' if e['rel_gap'] < BUDGET['elbo_rel_gap'] else 'NOT met'}; {each})."]
    return "\n".join(rows) + "\n"


def main(steps: int = 60, repeats: int = 3, epochs: float = 1.0,
         seeds: tuple[int, ...] = (0, 1, 2)) -> tuple[str, dict]:
    f = figures(steps, repeats, epochs, seeds)
    return table(f, steps, epochs), f


if __name__ == "__main__":
    print(main()[0])
