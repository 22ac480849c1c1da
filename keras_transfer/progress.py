"""What a training run reports as it goes: its evaluation history, its TensorBoard summaries and
the seconds it spent per phase.

The history is rewritten to `history.json` after every evaluation, so a run resumed from its
backup still reports the evaluations made before it was killed. The summaries are scalars at
every evaluation and, being costly for many small nets, weight histograms and conv1 filters only
every `histogram_every` evaluations and at the end.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from data_prep.atomic import write_json_atomic
from keras_transfer import filter_images, metrics, models


class EvalHistory:
    """Every evaluation of one run (step, top-1, top-5, loss) and its training throughput."""

    def __init__(self, path, entries: list[dict], images_per_step: int, label: str = ""):
        """Written to `path`, starting from `entries` (a resumed run's evaluations so far,
        RunDir.read_history). `label` prefixes the console lines (the run's name, when several
        nets share a log)."""
        self.path = Path(path)
        self.images_per_step = images_per_step
        self.prefix = f"{label}: " if label else ""
        self.entries: list[dict] = list(entries)

    @property
    def train_seconds(self) -> float:
        """Seconds spent training (not evaluating), over every evaluation interval so far."""
        return sum(e["train_seconds"] for e in self.entries)

    def add(self, *, step: int, evaluation: dict, train_sums: dict, steps_done: int,
            seconds: float, learning_rate: float) -> dict:
        """Records the evaluation at `step` after `steps_done` steps trained in `seconds`;
        `train_sums` are the summed training loss and correct top-1 over those steps."""
        done = self.training(train_sums, steps_done, seconds)
        entry = {
            "step": step,
            "top1": evaluation["top1"],
            "top5": evaluation["top5"],
            "loss": evaluation["loss"],
            "train_top1": done["train_top1"],
            "train_loss": done["train_loss"],
            "learning_rate": learning_rate,
            "images_per_sec": done["images_per_sec"],
            "train_seconds": seconds,
        }
        self.entries.append(entry)
        write_json_atomic(self.path, {"history": self.entries})
        top5 = f"top-5 {entry['top5']:.4f} " if entry["top5"] is not None else ""
        print(f"{self.prefix}step {step}: val top-1 {entry['top1']:.4f} {top5}"
              f"loss {entry['loss']:.4f} | train loss {entry['train_loss']:.4f} "
              f"lr {entry['learning_rate']:.2g} | {entry['images_per_sec']:.0f} images/s",
              flush=True)
        return entry

    def training(self, train_sums: dict, steps_done: int, seconds: float) -> dict:
        """Mean training top-1 and loss of `train_sums` (summed over `steps_done` steps) and
        the images trained per second."""
        images = max(steps_done * self.images_per_step, 1)
        return {"train_top1": train_sums["top1"] / images,
                "train_loss": train_sums["loss"] / images,
                "images_per_sec": steps_done * self.images_per_step / max(seconds, 1e-9)}

    def print_training(self, *, step: int, total_steps: int, train_sums: dict, steps_done: int,
                       seconds: float, learning_rate: float) -> None:
        """The console line at a point of the schedule that is not evaluated (--eval_last):
        how far the net has got, its training loss since the last evaluation and its speed, so
        that a long run is not silent until its last evaluations."""
        done = self.training(train_sums, steps_done, seconds)
        print(f"{self.prefix}step {step} of {total_steps}: train loss "
              f"{done['train_loss']:.4f} lr {learning_rate:.2g} | "
              f"{done['images_per_sec']:.0f} images/s", flush=True)


class Summaries:
    """TensorBoard: the net's hparams when it starts; train/eval loss, top-1, top-5, learning
    rate, images/s at every evaluation; weight histograms and the conv1 filters every
    `histogram_every` evaluations and at the end; its top-1 metrics at the end.

    The hparams go into the net's own log directory, so TensorBoard's HParams dashboard finds
    each net in the one run that holds its curves (the experiment is inferred from the nets)."""

    def __init__(self, log_dir, model, histogram_every: int = 5, hparams: dict | None = None,
                 trial_id: str | None = None):
        """`hparams`: the net's values of naming.HPARAMS, given when it starts from step 0 (a
        resumed run has them in the events of its first start)."""
        self.model = model
        self.histogram_every = max(1, histogram_every)
        self.writer = tf.summary.create_file_writer(str(log_dir))
        self._evaluations = 0
        if hparams is not None:
            from tensorboard.plugins.hparams import api as hp

            with self.writer.as_default():
                hp.hparams(hparams, trial_id=trial_id)
            self.writer.flush()

    def add(self, entry: dict) -> None:
        with self.writer.as_default(step=entry["step"]):
            for name in ("loss", "top1", "top5"):
                if entry[name] is not None:  # no top-5 on halves of 5 classes or fewer
                    tf.summary.scalar(f"eval/{name}", entry[name])
            tf.summary.scalar("train/loss", entry["train_loss"])
            tf.summary.scalar("train/top1", entry["train_top1"])
            tf.summary.scalar("train/learning_rate", entry["learning_rate"])
            tf.summary.scalar("train/images_per_sec", entry["images_per_sec"])
            if self._evaluations % self.histogram_every == 0:
                self.write_weights()
        self.writer.flush()
        self._evaluations += 1

    def close(self, step: int, top1: dict) -> None:
        """The last weights, and `top1` ({metric: value}, metrics.TOP1) under their tags."""
        with self.writer.as_default(step=step):
            self.write_weights()
            for metric, value in top1.items():
                if value is not None:
                    tf.summary.scalar(metrics.summary_tag(metric), value)
        self.writer.close()

    def write_weights(self) -> None:
        for layer in self.model.layers:
            for weight in layer.weights:
                tf.summary.histogram(f"weights/{weight.path}", np.asarray(weight.numpy(), np.float32))
        grid = filter_images.filter_grid(models.first_conv(self.model).get_weights()[0])
        tf.summary.image("conv1_filters", grid[None], max_outputs=1)


class Timing:
    """Seconds spent per phase of a process's training, for result.json and the benchmark."""

    # teardown: deleting the training input, where tf.data joins its threads (data.py).
    PHASES = ("startup", "setup", "trace", "train", "evaluate", "backup", "summaries", "teardown",
              "finish")

    def __init__(self, startup: float = 0.0):
        self.seconds = dict.fromkeys(self.PHASES, 0.0)
        self.seconds["startup"] = startup

    @contextlib.contextmanager
    def phase(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def as_dict(self) -> dict:
        return {k: round(v, 3) for k, v in self.seconds.items()}
