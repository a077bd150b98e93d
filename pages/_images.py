"""Image grids for the pages: a batch of images as one upscaled uint8 picture, a titled grid, and the class rows
of a conditional model's preview."""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from cvae_core.eval.generate import grid_array


def image_grid(x: torch.Tensor, nrow: int = 8, scale: int = 3) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> a uint8 grid, (H', W') for one channel and (H', W', 3) otherwise, upscaled
    by `scale` without blurring (``cvae_core.eval.generate.grid_array``)."""
    return grid_array(x, nrow, scale)


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
