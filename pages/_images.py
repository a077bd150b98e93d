"""Image grids for the pages: a batch of images as one upscaled uint8 picture, a titled grid, and the class rows
of a conditional model's preview."""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch
from torchvision.utils import make_grid


def image_grid(x: torch.Tensor, nrow: int = 8, scale: int = 3) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> (H', W', 3) uint8 grid, upscaled by `scale` without blurring."""
    g = make_grid(x.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=2, pad_value=0.35)  # (3, H', W')
    img = (g.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return img.repeat(scale, axis=0).repeat(scale, axis=1)


def show_grid(x: torch.Tensor | None, title: str, caption: str | None = None, nrow: int = 8) -> None:
    st.markdown(f"**{title}**")
    if x is None:
        st.caption("appears after the first log tick")
        return
    st.image(image_grid(x, nrow), width="stretch")
    if caption:
        st.caption(caption)


def class_rows(samples: torch.Tensor, classes: torch.Tensor, keep: list[int]) -> torch.Tensor:
    """The preview rows (one per class, in class order) of the classes in `keep`."""
    mask = torch.isin(classes, torch.as_tensor(keep, dtype=classes.dtype))
    return samples[mask]
