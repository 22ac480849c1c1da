"""Backups of a training run, so a killed or preempted run resumes where it stopped.

A backup is a TensorFlow checkpoint of the model and the optimizer (weights, momentum and the
step counter), written after every evaluation. TensorFlow writes the checkpoint files first
and then the index that names the latest one, so a crash mid-save leaves the previous backup
in force. SIGTERM (what SLURM and most schedulers send before killing) makes the run save a
backup at the current step and exit with status 143; SIGKILL loses at most one evaluation
interval.
"""
from __future__ import annotations

import signal
import threading

import tensorflow as tf

EXIT_PREEMPTED = 128 + signal.SIGTERM


class Preempted(Exception):
    """Training stopped on SIGTERM after saving a backup."""

    def __init__(self, step: int):
        super().__init__(f"stopped by SIGTERM at step {step}; a backup was saved, "
                         "run the same command again to resume")
        self.step = step


class Backup:
    """The checkpoint of one run's model and optimizer in `directory` (the last two are kept)."""

    def __init__(self, directory, model, optimizer):
        self.model = model
        self.optimizer = optimizer
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=2)

    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def restore(self) -> int:
        """Loads the latest backup, if any, and returns the step it was taken at (0 if none)."""
        latest = self.manager.latest_checkpoint
        if latest is None:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        return self.step()

    def save(self) -> None:
        try:
            self.manager.save(checkpoint_number=self.step())
        except tf.errors.OpError as e:  # TF reports a full disk as ResourceExhausted
            raise OSError(f"cannot write a backup to {self.manager.directory}: "
                          f"{e.message.split('; ')[-1]}") from e


class SigtermFlag:
    """Records a SIGTERM instead of dying on it, while training runs (main thread only)."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False
