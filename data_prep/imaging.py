"""Decoding, resizing and encoding images: the CPU-heavy step, run in worker processes.

This module imports only numpy and Pillow so that spawned workers start in a fraction of a
second; TensorFlow stays in the parent, which writes the records.
"""
import dataclasses
import io
import os

import numpy as np
from PIL import Image

from data_prep.errors import DataPrepError

_MODES = {1: "L", 3: "RGB"}
_FORMATS = {"png": "PNG", "jpeg": "JPEG"}


@dataclasses.dataclass(frozen=True)
class Target:
    """What every stored image becomes: size (height, width), channels and encoding."""
    height: int
    width: int
    channels: int
    encoding: str
    jpeg_quality: int = 95

    @property
    def shape(self):
        return (self.height, self.width, self.channels)


def size_of(path):
    """(height, width) of an image file, read from its header: nothing is decoded, so every
    image of a large folder can be measured in seconds."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError) as e:
        raise DataPrepError(f"cannot decode {path}: {e}; remove or replace that file") from None
    return height, width


def to_image(payload, target, name="image"):
    """Returns (PIL image in the target mode and size, source bytes or None).

    A payload is a uint8 array (H, W) or (H, W, C), encoded image bytes, or a file path.
    """
    raw = None
    try:
        if isinstance(payload, np.ndarray):
            array = np.ascontiguousarray(payload, dtype=np.uint8)
            if array.ndim == 3 and array.shape[2] == 1:
                array = array[:, :, 0]
            image = Image.fromarray(array)  # 2-D -> "L", (H, W, 3) -> "RGB"
        else:
            if isinstance(payload, (str, os.PathLike)):
                name = os.fspath(payload)
                with open(payload, "rb") as f:
                    raw = f.read()
            else:
                raw = bytes(payload)
            image = Image.open(io.BytesIO(raw))
            image.load()
    except (OSError, ValueError, SyntaxError) as e:
        raise DataPrepError(f"cannot decode {name}: {e}; remove or replace that file") from None
    mode = _MODES[target.channels]
    converted = image.convert(mode) if image.mode != mode else image
    if converted.size != (target.width, target.height):
        converted = converted.resize((target.width, target.height), Image.BILINEAR)
    keep_raw = (raw is not None and converted is image
                and image.format == _FORMATS[target.encoding])
    return converted, raw if keep_raw else None


def encode(image, target):
    """Encodes a PIL image deterministically (no timestamps or metadata)."""
    buf = io.BytesIO()
    if target.encoding == "png":
        image.save(buf, format="PNG")
    else:
        image.save(buf, format="JPEG", quality=target.jpeg_quality)
    return buf.getvalue()


def encode_chunk(task):
    """Worker entry point: task = (payloads, groups, names, target, want_sums).

    Returns (encoded bytes per image, {group: int64 pixel sum}) where the sums, over the images
    of each group, give the per-pixel training mean of each half.
    """
    payloads, groups, names, target, want_sums = task
    encoded, sums = [], {}
    for payload, group, name in zip(payloads, groups, names):
        image, raw = to_image(payload, target, name)
        encoded.append(raw if raw is not None else encode(image, target))
        if want_sums:
            pixels = np.asarray(image, dtype=np.int64).reshape(target.shape)
            if group in sums:
                sums[group] += pixels
            else:
                sums[group] = pixels.copy()
    return encoded, sums
