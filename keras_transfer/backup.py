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

import keras
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

    def __init__(self, directory, model):
        self.model = model
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=2)

    def step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def restore(self) -> int:
        """Loads the latest backup, if any, and returns the step it was taken at (0 if none)."""
        latest = self.manager.latest_checkpoint
        if latest is None:
            return 0
        # The optimizer's slots (momentum) exist only once built; restore needs them to exist.
        self.model.optimizer.build(self.model.trainable_variables)
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


class BackupCallback(keras.callbacks.Callback):
    """Saves a backup after every evaluation, and at once (then stops) on SIGTERM."""

    def __init__(self, backup: Backup, sigterm: SigtermFlag):
        super().__init__()
        self.backup = backup
        self.sigterm = sigterm

    def on_epoch_end(self, epoch, logs=None):
        self.backup.save()

    def on_train_batch_end(self, batch, logs=None):
        if self.sigterm.received:
            self.backup.save()
            raise Preempted(self.backup.step())
