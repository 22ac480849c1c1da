"""Where prepared data lives: DATA_DIR/<dataset>/<split_dir>/<half>/, each half a folder of
TFRecord shards with its manifest.json.

data_prep writes this layout and every reader of it (main, the grid's checks and estimates,
the analysis tools) finds a half here, so the layout is spelled once.
"""
from pathlib import Path

MANIFEST = "manifest.json"  # written last into a half: its presence means the half is complete


def split_root(data_dir, dataset: str, split_dir: str) -> Path:
    """The folder holding the halves of one split of one dataset (A and B; A alone for the
    whole-dataset split)."""
    return Path(data_dir) / dataset / split_dir


def half_dir(data_dir, dataset: str, split_dir: str, half: str) -> Path:
    """The folder of one half (A or B) of one split."""
    return split_root(data_dir, dataset, split_dir) / half


def manifest_path(data_dir, dataset: str, split_dir: str, half: str) -> Path:
    return half_dir(data_dir, dataset, split_dir, half) / MANIFEST
