"""The filters of the first convolution (conv1 of CaffeNet) of finished runs: an upscaled PNG per
net and a TensorBoard image (the grid of keras_transfer.filter_images), written into
WORKDIR/analysis/<dataset>/<split_dir>/seed<k>/filters/ (`python -m keras_transfer.analyze
filters`).

`write_filters` imports TensorFlow and the trained nets itself, so importing this module is cheap.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path


from data_prep.atomic import write_bytes_atomic
from keras_transfer import models
from keras_transfer.filter_images import filter_image
from keras_transfer.outputs import pyplot


def write_filters(run_dirs, out=None, data_dir=None) -> list[Path]:
    """The first convolution of each run as `<out>/<run>.png` and a TensorBoard image in
    `<out>/tb`."""
    import tensorflow as tf

    from keras_transfer import data
    from keras_transfer.analyze.trained_nets import (AnalysisError, analysis_dir, load_model,
                                                     open_run, training_half_dir)

    nets = [open_run(r) for r in run_dirs]  # every input checked before anything is written
    images = []
    for net in nets:
        half = training_half_dir(net, net.config.get("target", "B"), data_dir)
        try:
            image_shape = data.load_half(half)["image_shape"]
        except data.DataError as e:
            raise AnalysisError(str(e)) from e
        model = load_model(net, image_shape)
        conv = models.first_conv(model)
        kernel = conv.get_weights()[0]
        images.append((net, conv.name, kernel.shape, filter_image(kernel)))
    written = []
    for net, conv_name, shape, image in images:
        target_dir = Path(out) if out is not None else analysis_dir(net.run_dir) / "filters"
        target_dir.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        pyplot().imsave(buffer, image, format="png")
        write_bytes_atomic(target_dir / f"{net.name}.png", buffer.getvalue())
        with tempfile.TemporaryDirectory(dir=target_dir, prefix=".tb-") as staging:
            writer = tf.summary.create_file_writer(staging)
            with writer.as_default():
                tf.summary.image(f"{conv_name}_filters/{net.name}", image[None], step=0,
                                 description=f"{conv_name} kernel {tuple(shape)}, one tile per "
                                             "filter")
            writer.close()
            (target_dir / "tb").mkdir(exist_ok=True)
            for event in Path(staging).iterdir():
                os.replace(event, target_dir / "tb" / f"{event.name}.{net.name}")
        written.append(target_dir / f"{net.name}.png")
    return written
