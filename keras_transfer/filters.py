"""First-layer filters as one image grid, the picture the paper's Gabor/colour-blob argument rests
on: the grid itself (a TensorBoard image of every training run) and, for finished runs, an
upscaled PNG per net and a TensorBoard image, written into
WORKDIR/analysis/<dataset>/<split_dir>/seed<k>/filters/ (`python -m keras_transfer.analyze
filters`).

`write_filters` imports TensorFlow and the trained nets itself, so the grid needs numpy only.
"""
from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from data_prep.atomic import write_bytes_atomic
from keras_transfer.outputs import pyplot

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


def write_filters(run_dirs, out=None, data_dir=None) -> list[Path]:
    """conv1 of each run as `<out>/<run>.png` and a TensorBoard image in `<out>/tb`."""
    import tensorflow as tf

    from keras_transfer import data
    from keras_transfer.trained_nets import (AnalysisError, analysis_dir, load_model, open_run,
                                             training_half_dir)

    nets = [open_run(r) for r in run_dirs]  # every input checked before anything is written
    images = []
    for net in nets:
        half = training_half_dir(net, net.config.get("target", "B"), data_dir)
        try:
            image_shape = data.load_half(half)["image_shape"]
        except data.DataError as e:
            raise AnalysisError(str(e)) from e
        model = load_model(net, image_shape)
        kernel = model.get_layer("conv1").get_weights()[0]
        images.append((net, kernel.shape, filter_image(kernel)))
    written = []
    for net, shape, image in images:
        target_dir = Path(out) if out is not None else analysis_dir(net.run_dir) / "filters"
        target_dir.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        pyplot().imsave(buffer, image, format="png")
        write_bytes_atomic(target_dir / f"{net.name}.png", buffer.getvalue())
        with tempfile.TemporaryDirectory(dir=target_dir, prefix=".tb-") as staging:
            writer = tf.summary.create_file_writer(staging)
            with writer.as_default():
                tf.summary.image(f"conv1_filters/{net.name}", image[None], step=0,
                                 description=f"conv1 kernel {tuple(shape)}, one tile per filter")
            writer.close()
            (target_dir / "tb").mkdir(exist_ok=True)
            for event in Path(staging).iterdir():
                os.replace(event, target_dir / "tb" / f"{event.name}.{net.name}")
        written.append(target_dir / f"{net.name}.png")
    return written
