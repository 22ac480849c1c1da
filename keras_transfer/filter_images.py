"""First-layer filters as one image grid, the picture the paper's Gabor/colour-blob argument
rests on.

Training writes the grid to TensorBoard during every run (progress.py) and the analysis tools
write it for finished runs (filters.py); it is numpy only and sits below both.
"""
from __future__ import annotations

import math

import numpy as np

FILTER_TILE_PIXELS = 48  # conv1 tiles are upscaled to about this size so a person can see them


def filter_grid(kernel: np.ndarray, pad: int = 1) -> np.ndarray:
    """Tiles a conv kernel (kh, kw, in_channels, filters) into one float image in [0, 1].

    Each filter is scaled by its own min and max so weak filters stay visible. RGB kernels give
    an RGB grid; any other channel count is averaged to grayscale (shape (H, W, 1)).
    """
    kernel = np.asarray(kernel, np.float32)
    if kernel.ndim != 4:
        raise ValueError(f"expected a conv kernel (kh, kw, in, out), got shape {kernel.shape}")
    kh, kw, cin, count = kernel.shape
    if cin != 3:
        kernel = kernel.mean(axis=2, keepdims=True)
    channels = kernel.shape[2]
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    grid = np.ones((rows * (kh + pad) + pad, cols * (kw + pad) + pad, channels), np.float32)
    for i in range(count):
        f = kernel[..., i]
        lo, hi = f.min(), f.max()
        f = (f - lo) / (hi - lo) if hi > lo else np.full_like(f, 0.5)
        r, c = divmod(i, cols)
        top, left = pad + r * (kh + pad), pad + c * (kw + pad)
        grid[top:top + kh, left:left + kw, :] = f
    return grid


def filter_image(kernel, tile_pixels: int = FILTER_TILE_PIXELS) -> np.ndarray:
    """`filter_grid` upscaled by a whole factor (pixels stay sharp), as uint8 (H, W, 3)."""
    grid = filter_grid(kernel)
    factor = max(1, tile_pixels // max(np.shape(kernel)[:2]))
    grid = np.repeat(np.repeat(grid, factor, axis=0), factor, axis=1)
    if grid.shape[2] == 1:
        grid = np.repeat(grid, 3, axis=2)
    return np.round(grid * 255).astype(np.uint8)
