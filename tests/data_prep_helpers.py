"""Shared pieces of the data_prep tests: tiny image folders, a tiny TFDS dataset, the CLI."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args, module="data_prep", timeout=120):
    """Runs `python -m MODULE ARGS` in a subprocess (data_prep's absl flags stay out of the
    pytest process) and returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def prepare_four_small_classes(out):
    """Prepares the smallest dataset the grid and multi-worker tests train on: `random:0` of 4
    synthetic classes of 16 px, 8 training and 4 validation images each; returns `out`, the
    data_dir (halves at <out>/synthetic/random_0/{A,B})."""
    from data_prep import prepare, sources  # here: the helpers' other users need no TensorFlow
    spec = sources.SyntheticSpec(num_classes=4, image_size=16, train_per_class=8,
                                 validation_per_class=4)
    prepare.prepare(source="synthetic", split="random:0", out=out, synthetic=spec,
                    progress=False)
    return out


def error_lines(stderr):
    """stderr lines that are data_prep's own (TensorFlow start-up chatter removed)."""
    return [line for line in stderr.splitlines() if line.startswith("data_prep")]


def class_image(label, index, size=8):
    """A small RGB image that depends on its class and index; `size` is its side or its
    (height, width)."""
    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng([label, index])
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def make_image_folder(root, classes=("cat", "dog", "owl", "fox"), per_class=12, split_layout=False,
                      size=8):
    """ROOT/<class>/img_NN.png, or ROOT/{train,validation}/<class>/... with split_layout; every
    image of `size` (a side, or (height, width))."""
    root = Path(root)
    groups = {"train": per_class, "validation": 3} if split_layout else {"": per_class}
    for sub, n in groups.items():
        for label, name in enumerate(classes):
            d = root / sub / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                offset = 1000 if sub == "validation" else 0
                Image.fromarray(class_image(label, i + offset, size)).save(
                    d / f"img_{i:02d}.png")
    return root


TINY_TFDS_CLASSES = ("circle", "square", "triangle", "star")


def tiny_tfds_image(split, i):
    rng = np.random.default_rng([0 if split == "train" else 1, i])
    return rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)


def tiny_tfds_label(i):
    return (i * 3) % len(TINY_TFDS_CLASSES)


def build_tiny_tfds(data_dir, name="data_prep_tiny_images"):
    """Stores a tiny image-classification TFDS dataset (train 24, test 8) in data_dir, as if
    prepared elsewhere: no builder class is registered, TFDS reads it from its files."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    def split(which, n):
        return tf.data.Dataset.from_tensor_slices({
            "image": np.stack([tiny_tfds_image(which, i) for i in range(n)]),
            "label": np.array([tiny_tfds_label(i) for i in range(n)], dtype=np.int64)})

    tfds.dataset_builders.store_as_tfds_dataset(
        name=name, version="1.0.0", data_dir=str(data_dir),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(12, 12, 3)),
            "label": tfds.features.ClassLabel(names=list(TINY_TFDS_CLASSES))}),
        split_datasets={"train": split("train", 24), "test": split("test", 8)},
        disable_shuffling=True,
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return name


def start_cli(*args, module="data_prep", env=None):
    """Starts `python -m MODULE ARGS` as the leader of a new process group, as a shell starts a
    command: a signal sent to the group reaches it and its worker processes, as a terminal's
    Ctrl-C does. `env`: the environment (default: this one with TensorFlow's logging off).
    Returns the Popen; its output is read with communicate()."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3") if env is None else dict(env)
    env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=ctrl_c_as_in_a_terminal)


def ctrl_c_as_in_a_terminal():
    """SIGINT back to its default in the child: a process inherits an ignored SIGINT, and
    pytest-xdist's workers ignore it (as a shell does for a command started with `&`)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def loading(pid, library):
    """Whether process `pid` has begun to load a shared library whose path holds `library`
    (past Python's own start-up: see docs/reliability.md)."""
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def wait_until(condition, process, timeout=120, what="the condition"):
    """Polls condition() every millisecond until it holds; fails if process ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the process ended (exit {process.returncode}) before "
                                 f"{what}:\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)
