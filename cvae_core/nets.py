"""Encoder and decoder bodies. Heads live in the models so that conditioning (later issues) only widens a
Linear layer's input: ``Encoder(x) -> features (B, F)``, ``Decoder(h) -> logits (B, C, H, W)``."""

from __future__ import annotations

import math

import torch
from torch import nn


def _down_steps(side: int) -> int:
    """Stride-2 steps until the side is <= 8: 28 -> 14 -> 7, 32 -> 16 -> 8, 64 -> 32 -> 16 -> 8."""
    steps = 0
    while side > 8:
        if side % 2:
            raise ValueError(f"image side {side} cannot be halved evenly down to <= 8")
        side //= 2
        steps += 1
    return steps


class ConvEncoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], hidden: int = 256, width: int = 32):
        super().__init__()
        c, h, w = image_shape
        steps = _down_steps(h)
        layers, ch = [], c
        for i in range(steps):
            out = width * 2**i
            layers += [nn.Conv2d(ch, out, 4, stride=2, padding=1), nn.SiLU()]
            ch = out
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(ch * (h >> steps) * (w >> steps), hidden), nn.SiLU())
        self.out_features = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, hidden)
        return self.body(x)


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder; the last transposed conv writes the C image channels directly. On 2 CPU cores
    this was 3x faster than ending in `width` channels plus a 3x3 conv (bench/bench_decoder_head.py)."""

    def __init__(self, in_features: int, image_shape: tuple[int, int, int], width: int = 32):
        super().__init__()
        c, h, w = image_shape
        steps = _down_steps(h)
        self.ch0, self.h0, self.w0 = width * 2 ** (steps - 1), h >> steps, w >> steps
        layers: list[nn.Module] = []
        ch = self.ch0
        for i in reversed(range(steps)):
            out = c if i == 0 else width * 2 ** (i - 1)
            layers += [nn.ConvTranspose2d(ch, out, 4, stride=2, padding=1)] + ([nn.SiLU()] if i else [])
            ch = out
        self.fc = nn.Sequential(nn.Linear(in_features, self.ch0 * self.h0 * self.w0), nn.SiLU())
        self.body = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, in) -> logits (B, C, H, W)
        return self.body(self.fc(h).view(-1, self.ch0, self.h0, self.w0))


class MLPEncoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], hidden: int = 256):
        super().__init__()
        n = math.prod(image_shape)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(n, 2 * hidden), nn.SiLU(),
                                  nn.Linear(2 * hidden, hidden), nn.SiLU())
        self.out_features = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MLPDecoder(nn.Module):
    def __init__(self, in_features: int, image_shape: tuple[int, int, int], hidden: int = 256):
        super().__init__()
        self.image_shape = tuple(image_shape)
        n = math.prod(image_shape)
        self.body = nn.Sequential(nn.Linear(in_features, hidden), nn.SiLU(), nn.Linear(hidden, 2 * hidden), nn.SiLU(),
                                  nn.Linear(2 * hidden, n))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.body(h).view(-1, *self.image_shape)


def make_encoder(arch: str, image_shape: tuple[int, int, int], hidden: int) -> nn.Module:
    if arch == "conv":
        return ConvEncoder(image_shape, hidden)
    if arch == "mlp":
        return MLPEncoder(image_shape, hidden)
    raise ValueError(f"unknown architecture {arch!r} (conv or mlp)")


def make_decoder(arch: str, in_features: int, image_shape: tuple[int, int, int], hidden: int) -> nn.Module:
    if arch == "conv":
        return ConvDecoder(in_features, image_shape)
    if arch == "mlp":
        return MLPDecoder(in_features, image_shape, hidden)
    raise ValueError(f"unknown architecture {arch!r} (conv or mlp)")
