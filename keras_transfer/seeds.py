"""The seeds of a net's random draws, fixed by its config: its initialisation (its own) and its
data order and augmentation (its split's and seed's, shared by the nets of a pack). CRC32 of a
text, so every process and every rerun draws the same."""
from __future__ import annotations

import zlib

from keras_transfer.config import Config


def init_seed(config: Config) -> int:
    """Each net draws its own initialisation (the paper's nets were independent), so a
    random-features control or a re-initialised upper layer is never a base net's start, and
    nets of different splits or seeds are independent repeats."""
    return _seed_of(f"{config.split_dir}/{config.seed}/{config.run}")


def data_seed(config: Config) -> int:
    """The data order and augmentation of a split and seed (shared by the nets of a pack); a
    resumed run replays the same stream from its step (data.InputSettings.start_step)."""
    return _seed_of(f"{config.split_dir}/{config.seed}")


def _seed_of(text: str) -> int:
    return zlib.crc32(text.encode()) & 0x3FFFFFFF
