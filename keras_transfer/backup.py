"""Backups of a training run, so a killed or preempted run resumes where it stopped.

A backup is a TensorFlow checkpoint of the model and the optimizer (weights, momentum and the
step counter) and of the model's random state (dropout's seed generators, which Keras leaves
out of a model's checkpoint), written every --eval_every steps. With the data stream replayed
from the backup's step (data.build_dataset), a resumed run trains as an uninterrupted one.
TensorFlow writes the checkpoint files first and then the index that names the latest one, so
a crash mid-save leaves the previous backup in force. SIGTERM (what SLURM and most schedulers
send before killing) or SIGINT (Ctrl-C) makes the run save a backup at the current step and
exit with status 128 + the signal (143, 130; see stopping.py); SIGKILL loses at most
--eval_every steps. A damaged backup (a truncated or missing file) is skipped for the next
older one.
"""
from __future__ import annotations

import sys
from pathlib import Path

import tensorflow as tf

from keras_transfer import models, run_records
# How a run stops on SIGTERM or SIGINT lives in `stopping`; train imports it from here.
from keras_transfer.stopping import Preempted, SigtermFlag  # noqa: F401


class Backup:
    """The checkpoint of one run's model and optimizer in `directory` (the last two are kept),
    restored from `restore_from` if given (a non-chief worker saves to its own folder but
    resumes from the chief's backup)."""

    def __init__(self, directory, model, optimizer, restore_from=None):
        self.directory = Path(directory)
        self.restore_from = Path(restore_from or directory)
        self.model = model
        self.optimizer = optimizer
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                              random_state=models.random_states(model))
        # Restored in two parts, so that a backup written before the random state was kept
        # still restores (its dropout states stay as built) while the weights must match whole.
        self._trained = tf.train.Checkpoint(model=model, optimizer=optimizer)
        self._random = tf.train.Checkpoint(random_state=models.random_states(model))
        _drop_damaged_index(self.directory)  # restore() does not need it; the manager would fail
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(directory), max_to_keep=2)

    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def restore(self) -> int:
        """Loads the newest backup that reads back whole and returns the step it was taken at.

        Backups are found on disk (ckpt-<step>.index), not only through the index file. A
        damaged one is skipped with a warning for the next older; if none reads back, the
        variables are put back as they were and the run starts afresh (0)."""
        candidates = [path for _, path in sorted(run_records.backups(self.restore_from).items(),
                                                 reverse=True)]
        if not candidates:
            return 0
        variables = list(self.model.variables) + list(self.optimizer.variables)
        initial = [v.numpy() for v in variables]
        for path in map(str, candidates):
            try:
                self._trained.restore(path).assert_existing_objects_matched().expect_partial()
                self._random.restore(path).expect_partial()
                return self.step()
            except (tf.errors.OpError, IndexError, ValueError, AssertionError, OSError) as e:
                _warn(f"backup {path} is damaged ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else 'unreadable'}); trying an older one")
        for variable, value in zip(variables, initial):  # a failed restore may have written some
            variable.assign(value)
        _warn(f"no backup in {self.restore_from} reads back whole: training starts afresh")
        return 0

    def save(self) -> None:
        try:
            self.manager.save(checkpoint_number=self.step())
        except tf.errors.OpError as e:  # TF reports a full disk as ResourceExhausted
            raise OSError(f"cannot write a backup to {self.manager.directory}: "
                          f"{e.message.split('; ')[-1]}") from e


def _drop_damaged_index(directory: Path) -> None:
    """Removes the `checkpoint` file (TensorFlow's list of the backups, rewritten at every save)
    if it cannot be read: an empty or garbled one stops tf.train.CheckpointManager."""
    try:
        tf.train.get_checkpoint_state(str(directory))
    except (ValueError, UnicodeDecodeError, tf.errors.OpError) as e:
        index = directory / "checkpoint"
        _warn(f"{index} is damaged ({type(e).__name__}); it is rewritten at the next backup")
        index.unlink(missing_ok=True)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)
