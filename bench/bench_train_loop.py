"""Training loop: cvae_core.train.fit (uint8 data resident on the device, index batches, metrics read every
log_every steps) vs the textbook reference loop (float TensorDataset + DataLoader(shuffle=True), loss.item()
every step). Same model, data, batch size and step count, in one process."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from cvae_core.data import load_dataset, to_float
from cvae_core.registry import build_model
from cvae_core.train import TrainConfig, fit, resolve_device

try:
    from _common import compare, table
except ImportError:  # run as a module
    from bench._common import compare, table


def main(steps: int = 60, batch_size: int = 128, n_train: int = 20000) -> str:
    data = load_dataset("mnist").subset(n_train, 1000)
    device = resolve_device("auto")

    def ours():
        model = build_model("bs_vae", seed=0)
        fit(model, data, TrainConfig(steps=steps, batch_size=batch_size, log_every=50, device=device.type))

    def reference():
        model = build_model("bs_vae", seed=0).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        ds = TensorDataset(to_float(data.x_train), data.y_train)
        it = iter(DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True))
        for _ in range(steps):
            x, y = next(it)
            x, y = x.to(device), y.to(device)
            loss = model.loss(x, y)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()  # the per-step host sync a progress print does

    med = compare({"reference DataLoader loop": reference, "cvae_core.fit": ours}, repeats=3)
    return table(f"Training loop, bs_vae conv, {steps} steps x batch {batch_size} on {device.type}", med,
                 "reference DataLoader loop", steps * batch_size, "images/s")


if __name__ == "__main__":
    print(main())
