"""Keras callbacks of a training run: the evaluation history and the TensorBoard summaries.

Each Keras "epoch" of a run is one evaluation interval (`--eval_every` steps), so these hooks
run once per evaluation and never per batch (per-batch hooks would stall the device).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from data_prep.manifest import write_json_atomic
from keras_transfer import filters, solver


class EvalHistory(keras.callbacks.Callback):
    """Keeps every evaluation (step, top-1, top-5, loss) and the training throughput.

    The history is also written to `history.json` after each evaluation, so a run resumed from
    its backup still reports the evaluations made before it was killed.
    """

    def __init__(self, path, images_per_step: int, up_to_step: int = 0):
        """Keeps the entries of `path` up to `up_to_step`, the step the run resumes from."""
        super().__init__()
        self.path = Path(path)
        self.images_per_step = images_per_step
        self.entries: list[dict] = []
        if self.path.exists():
            self.entries = [e for e in json.loads(self.path.read_text())["history"]
                            if e["step"] <= up_to_step]
        self._epoch_start = 0.0
        self._start_step = up_to_step
        self._train_end = None

    @property
    def train_seconds(self) -> float:
        """Seconds spent training (not evaluating), over every evaluation interval so far."""
        return sum(e["train_seconds"] for e in self.entries)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._start_step = int(self.model.optimizer.iterations.numpy())
        self._train_end = None

    def on_test_begin(self, logs=None):
        # Validation starts right after the interval's last training step.
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        train_end = self._train_end or time.perf_counter()
        seconds = train_end - self._epoch_start
        step = int(self.model.optimizer.iterations.numpy())
        steps_done = step - self._start_step
        entry = {
            "step": step,
            "top1": float(logs.get("val_top1", float("nan"))),
            "top5": float(logs.get("val_top5", float("nan"))),
            "loss": float(logs.get("val_loss", float("nan"))),
            "train_top1": float(logs.get("top1", float("nan"))),
            "train_loss": float(logs.get("loss", float("nan"))),
            "learning_rate": solver.current_learning_rate(self.model.optimizer),
            "images_per_sec": steps_done * self.images_per_step / max(seconds, 1e-9),
            "train_seconds": seconds,
        }
        self.entries.append(entry)
        write_json_atomic(self.path, {"history": self.entries})
        print(f"step {step}: val top-1 {entry['top1']:.4f} top-5 {entry['top5']:.4f} "
              f"loss {entry['loss']:.4f} | train loss {entry['train_loss']:.4f} "
              f"lr {entry['learning_rate']:.2g} | {entry['images_per_sec']:.0f} images/s",
              flush=True)


class Summaries(keras.callbacks.Callback):
    """TensorBoard: train/eval loss, top-1, top-5, learning rate, images/s at every evaluation;
    weight histograms and the conv1 filters every `histogram_every` evaluations."""

    def __init__(self, log_dir, history: EvalHistory, histogram_every: int = 5):
        super().__init__()
        self.history = history
        self.histogram_every = max(1, histogram_every)
        self.writer = tf.summary.create_file_writer(str(log_dir))
        self._evaluations = 0

    def on_epoch_end(self, epoch, logs=None):
        e = self.history.entries[-1]
        step = e["step"]
        with self.writer.as_default(step=step):
            for name in ("loss", "top1", "top5"):
                tf.summary.scalar(f"eval/{name}", e[name])
            tf.summary.scalar("train/loss", e["train_loss"])
            tf.summary.scalar("train/top1", e["train_top1"])
            tf.summary.scalar("train/learning_rate", e["learning_rate"])
            tf.summary.scalar("train/images_per_sec", e["images_per_sec"])
            if self._evaluations % self.histogram_every == 0:
                self.write_weights()
        self.writer.flush()
        self._evaluations += 1

    def on_train_end(self, logs=None):
        with self.writer.as_default(step=int(self.model.optimizer.iterations.numpy())):
            self.write_weights()
        self.writer.flush()

    def write_weights(self):
        for layer in self.model.layers:
            for weight in layer.weights:
                tf.summary.histogram(f"weights/{weight.path}", np.asarray(weight.numpy(), np.float32))
        conv1 = self.model.get_layer("conv1")
        grid = filters.filter_grid(conv1.get_weights()[0])
        tf.summary.image("conv1_filters", grid[None], max_outputs=1)
