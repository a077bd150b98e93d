"""Decoder head on CPU: the 28x28 conv decoder ending in a single-channel transposed conv (what nets.ConvDecoder
does) vs ending in a 32-channel transposed conv followed by a 3x3 conv to 1 channel (the reference, which
DESIGN.md's note suggested). Forward + backward + Adam step of encoder+decoder, batch 128, one process."""

from __future__ import annotations

import torch
from torch import nn

try:
    from _common import compare, table
except ImportError:
    from bench._common import compare, table


def _decoder(single_channel_last: bool) -> nn.Module:
    layers = [nn.Linear(16, 64 * 49), nn.SiLU(), nn.Unflatten(1, (64, 7, 7)),
              nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.SiLU()]
    if single_channel_last:
        layers += [nn.ConvTranspose2d(32, 1, 4, 2, 1)]
    else:
        layers += [nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.SiLU(), nn.Conv2d(32, 1, 3, padding=1)]
    return nn.Sequential(*layers)


def main(steps: int = 20, batch_size: int = 128) -> str:
    torch.manual_seed(0)
    x = torch.rand(batch_size, 1, 28, 28)

    def make(single):
        enc = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.SiLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.SiLU(),
                            nn.Flatten(), nn.Linear(64 * 49, 16))
        dec = _decoder(single)
        opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], 1e-3)

        def run():
            for _ in range(steps):
                opt.zero_grad()
                ((dec(enc(x)) - x) ** 2).mean().backward()
                opt.step()
        return run

    med = compare({"32 ch + 3x3 conv head": make(False), "1-channel transposed conv": make(True)}, repeats=5)
    return table(f"Conv decoder head, CPU, {steps} steps x batch {batch_size}", med, "32 ch + 3x3 conv head",
                 steps * batch_size, "images/s")


if __name__ == "__main__":
    print(main())
