"""A run directory and everything in it: its files' names, its records (config.json,
result.json, diverged.json), its lock, its state (done, diverged, stale, resumable), the set-aside
of an earlier run for --overwrite and the final write. Nothing else opens a run's files by name
(tests/test_run_records.py checks it), so train, the grid, the report and the analysis agree on
what a run directory holds and when a net is done.

Reading needs no TensorFlow: the report and the grid import this module cheaply.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from data_prep.atomic import write_json_atomic
from data_prep.locking import FileLock
from data_prep.manifest import content_sha256
from keras_transfer import naming

if TYPE_CHECKING:  # config builds --model's help from the model registry: the report needs neither
    from keras_transfer.config import Config

# The flags that change what a trained net is (besides the ones in its run directory's path): a
# finished or half-trained run is only ever continued or reused with the values it started with.
RESULT_FLAGS = ("model", "fc8_outputs", "crop", "batch_size", "steps", "epochs", "lr", "lr_step",
                "stretch", "momentum", "weight_decay", "dropout", "eval_every", "eval_steps",
                "mixed_precision")  # not eval_last: evaluating trains nothing
# The flags of a network trained elsewhere in baseA's role: they change only the nets that copy
# from it (source A), whose file's sha256 why_stale compares as well.
EXTERNAL_BASE_FLAGS = ("base_model", "adapt_input", "adapt_channels")
EXTERNAL_BASE_DEFAULTS = {"base_model": "", "adapt_input": "none", "adapt_channels": "none"}


# A backup is a TensorFlow checkpoint named ckpt-<step> (tf.train.CheckpointManager's prefix),
# found by its .index file; anything else in backup/ (a copy's `ckpt-300 (copy).index`) is not one.
_BACKUP_INDEX = re.compile(r"ckpt-([0-9]+)\.index")


def backups(directory) -> dict[int, Path]:
    """The backups in `directory` by step, each as its checkpoint's path prefix (ckpt-<step>)."""
    found = {}
    for index in Path(directory).glob("ckpt-*.index"):
        if match := _BACKUP_INDEX.fullmatch(index.name):
            found[int(match[1])] = index.with_suffix("")
    return found


class RecordError(ValueError):
    """A run's record cannot be used: `kind` is "unreadable" (missing, not JSON) or "malformed"
    (JSON, but not an object); the message is the problem alone, for callers to place."""

    def __init__(self, path: Path, kind: str, problem: str):
        super().__init__(problem)
        self.path, self.kind = path, kind


def load_record(path: Path) -> dict:
    """A JSON object an earlier run wrote, or RecordError saying why it cannot be used."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RecordError(Path(path), "unreadable", str(e)) from e
    if not isinstance(record, dict):
        raise RecordError(Path(path), "malformed", "not a JSON object")
    return record


def read_record(path: Path) -> dict | None:
    """A JSON object an earlier run wrote, or None if it is missing or unreadable."""
    try:
        return load_record(path)
    except RecordError:
        return None


def settings_changed(config: Config, recorded: dict) -> list[str]:
    """The flags that change a net's result whose value in `recorded` (a run's config.json)
    differs from `config`'s, as `--lr=0.05 (now 0.1)`; and the mean image, by the half it came
    from (what --mean_image means for this net)."""
    now = config.to_json()
    changed = [f"--{name}={recorded[name]} (now {now[name]})" for name in RESULT_FLAGS
               if name in recorded and recorded[name] != now[name]]
    if config.source == "A":  # runs recorded before --base_model copied from baseA
        changed += [f"--{name}={recorded.get(name, default)!r} (now {now[name]!r})"
                    for name, default in EXTERNAL_BASE_DEFAULTS.items()
                    if recorded.get(name, default) != now[name]]
    # Runs recorded before --mean_image existed subtracted their target half's mean.
    mean_then = recorded.get("mean_half", recorded.get("target", now["target"]))
    if mean_then != now["mean_half"]:
        changed.append(f"the mean image of half {mean_then} (now half {now['mean_half']}, "
                       f"--mean_image={config.mean_image})")
    return changed


def _data_changed(half: str, trained_on: dict, manifest: dict) -> list[str]:
    """How the half a run was trained on (its result's "data") differs from the half as prepared
    now: other classes, image shape or content (runs recorded before the content's fingerprint
    are checked by classes and image shape alone)."""
    classes = [c["original_index"] for c in manifest["classes"]]
    if trained_on.get("classes", classes) != classes:
        return [f"half {half} has been prepared again with other classes "
                f"({trained_on['classes']} then, {classes} now)"]
    shape = list(manifest["image_shape"])
    if trained_on.get("image_shape", shape) != shape:
        return [f"half {half} has been prepared again with {'x'.join(map(str, shape))} images "
                f"({'x'.join(map(str, trained_on['image_shape']))} then)"]
    if trained_on.get("content_sha256", content_sha256(manifest)) != content_sha256(manifest):
        return [f"half {half} has been prepared again with other images"]
    return []


def _external_changed(base_model: str, recorded: dict) -> list[str]:
    """How the --base_model file differs from the one a run copied from (its record's sha256);
    imagenet, which Keras checks itself when it downloads it, is not compared."""
    from keras_transfer import external_base  # no TensorFlow, but models: only when asked

    if external_base.kind_of(base_model) == "imagenet":
        return []
    now = external_base.file_sha256(base_model)
    if now is None:
        return [f"the --base_model file {base_model} it copied its layers from is gone"]
    if recorded.get("sha256") != now:
        then = f"sha256 {str(recorded.get('sha256'))[:12]}... then, {now[:12]}... now"
        if recorded.get("path") not in (None, base_model):
            return [f"it copied its layers from --base_model={recorded['path']}, not "
                    f"{base_model} ({then})"]
        return [f"the --base_model file {base_model} has changed since it copied its layers "
                f"({then})"]
    return []


class RunDir:
    """One net's run directory (or a non-chief worker's scratch copy of one).

    config.json is written when a run starts, model.weights.h5 and then result.json when it
    ends: a run is done when result.json exists, and a diverged run leaves diverged.json
    instead. backup/ holds the checkpoints a killed run resumes from, history.json its
    evaluations so far, tb/ its TensorBoard events.
    """
    CONFIG = "config.json"
    RESULT = "result.json"
    WEIGHTS = "model.weights.h5"  # Keras 3 needs the .weights.h5 ending
    DIVERGED = "diverged.json"  # instead of result.json when a net's loss becomes NaN or inf
    HISTORY = "history.json"
    BACKUP = "backup"
    START_DIGESTS = "layers_start.json"  # in backup/: the layers' hashes when training began
    SUMMARIES = "tb"
    LOCK = ".lock"
    REPLACED_PREFIX = ".replaced-"  # --overwrite sets an earlier run aside in .replaced-<time>/
    FINISHED = (CONFIG, RESULT, WEIGHTS)  # what a finished run can be reopened from

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @classmethod
    def find(cls, workdir, record: str = RESULT) -> list[RunDir]:
        """The run directories under `workdir` holding `record` (RESULT: the finished ones),
        sorted, leaving out hidden folders (runs set aside by --overwrite, staging folders)."""
        workdir = Path(workdir)
        return [cls(path.parent) for path in sorted(workdir.rglob(record))
                if not any(part.startswith(".") for part in path.relative_to(workdir).parts)]

    # ------------------------------------------------------------ file names

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def result_path(self) -> Path:
        return self.path / self.RESULT

    @property
    def weights_path(self) -> Path:
        return self.path / self.WEIGHTS

    @property
    def diverged_path(self) -> Path:
        return self.path / self.DIVERGED

    @property
    def history_path(self) -> Path:
        return self.path / self.HISTORY

    @property
    def backup_dir(self) -> Path:
        return self.path / self.BACKUP

    @property
    def start_digests_path(self) -> Path:
        return self.backup_dir / self.START_DIGESTS

    @property
    def summaries_dir(self) -> Path:
        return self.path / self.SUMMARIES

    @property
    def lock_path(self) -> Path:
        return self.path / self.LOCK

    # ------------------------------------------------------------ records

    def config(self) -> dict | None:
        """config.json (the flags the run started with), None if missing or unreadable."""
        return read_record(self.config_path)

    def result(self) -> dict | None:
        """result.json, None while the run has not finished (or if it is unreadable)."""
        return read_record(self.result_path)

    def diverged(self) -> dict | None:
        """diverged.json (where and how the net diverged), None if absent or unreadable."""
        return read_record(self.diverged_path)

    def load_config(self) -> dict:
        """config.json, or RecordError saying why it cannot be used."""
        return load_record(self.config_path)

    def load_result(self) -> dict:
        """result.json, or RecordError saying why it cannot be used."""
        return load_record(self.result_path)

    def missing(self, names=FINISHED) -> list[str]:
        """Which of the files `names` the directory lacks."""
        return [name for name in names if not (self.path / name).is_file()]

    # ------------------------------------------------------------ state

    def is_done(self) -> bool:
        """Whether the run has finished: its result.json exists (whether it still answers for a
        config is why_stale's question)."""
        return self.result_path.exists()

    def result_mtime(self) -> int | None:
        """When result.json was written (ns), None if there is none: tells a result from the one
        that replaces it."""
        try:
            return self.result_path.stat().st_mtime_ns
        except OSError:
            return None

    def is_diverged(self) -> bool:
        """Whether the net diverged: diverged.json exists (readable or not) and it never
        finished. The same settings would diverge again, so it is retrained only on purpose."""
        return self.diverged_path.exists() and not self.is_done()

    def has_backup(self) -> bool:
        return bool(backups(self.backup_dir))

    def backup_step(self) -> int:
        """The step of the newest backup (0: none)."""
        return max(backups(self.backup_dir), default=0)

    def why_stale(self, config: Config, target_manifest: dict | None) -> list[str]:
        """Why this finished run no longer answers for `config`: it was trained with other
        settings, on other classes than `target_manifest` lists (None: not checked), or from a
        base net that has been retrained since. Empty if it still does, or if its records
        cannot tell."""
        result = self.result()
        if result is None:
            return [f"its {self.RESULT} is unreadable"]
        reasons = []
        recorded = self.config()
        if recorded is None and self.config_path.exists():
            reasons.append(f"its {self.CONFIG} is unreadable")
        elif recorded is not None and (changed := settings_changed(config, recorded)):
            reasons.append(f"it was trained with {', '.join(changed)}")
        if not self.weights_path.exists():
            reasons.append(f"its weights file {self.WEIGHTS} is missing")
        if target_manifest is not None:
            reasons += _data_changed(config.target, result.get("data") or {}, target_manifest)
        if config.source in naming.HALVES:
            base = RunDir(config.base_run_dir(config.source)).result() or {}
            base_end = {row.get("name"): row.get("sha256_end") for row in base.get("layers", [])}
            copied = [row for row in result.get("layers", [])
                      if row.get("origin") == f"base{config.source}"]
            if any(base_end.get(row.get("name")) != row.get("sha256_start") for row in copied):
                reasons.append(f"base{config.source} has been retrained since it copied its layers")
        if config.copies_external:
            reasons += _external_changed(config.base_model, result.get("external_base") or {})
        return reasons

    def why_not_resumable(self, config: Config) -> str | None:
        """Why this unfinished run cannot go on as `config`, as "it ...", or None: it diverged
        (the same settings would diverge again), or it has a backup and started with other
        settings (its backup holds the old model and optimizer) or unknown ones. The grid lists
        these nets before it starts; main refuses them (resume_problem)."""
        if self.diverged_path.exists():
            record = self.diverged() or {}
            return (f"it diverged by step {record.get('step', '?')} "
                    f"({record.get('quantity', 'its loss')} was {record.get('value', 'not finite')};"
                    f" see {self.diverged_path})")
        if not self.has_backup():
            return None
        recorded = self.config()
        if recorded is None:
            return (f"it has a backup but its {self.CONFIG} is missing or unreadable: the "
                    "settings it started with are unknown")
        if changed := settings_changed(config, recorded):
            return f"it was started with {', '.join(changed)} and has a backup"
        return None

    def resume_problem(self, config: Config) -> str | None:
        """why_not_resumable as main's refusal, with what to do."""
        reason = self.why_not_resumable(config)
        if reason is None:
            return None
        if self.diverged_path.exists():
            fix = ("The same settings would diverge again: change them (e.g. a lower --lr) and add "
                   "--overwrite to train it from scratch.")
        elif self.config() is None:
            fix = "Start it again with --overwrite."
        else:
            fix = "Give the settings it started with to resume it, or add --overwrite to start it again."
        return f"{config.run}: {reason}. {fix}"

    # ------------------------------------------------------------ writing

    def lock(self) -> FileLock:
        """The run's lock (not yet taken: call acquire)."""
        return FileLock(self.lock_path)

    def write_config(self, record: dict) -> None:
        write_json_atomic(self.config_path, record)

    def write_diverged(self, record: dict) -> Path:
        write_json_atomic(self.diverged_path, record)
        return self.diverged_path

    def read_start_digests(self) -> dict:
        """The layers' hashes when training began; RecordError if missing or unreadable."""
        return load_record(self.start_digests_path)

    def read_history(self, up_to_step: int) -> list[dict]:
        """The evaluations history.json holds, up to `up_to_step` (none if it is missing);
        RecordError if it cannot be read."""
        if not self.history_path.exists():
            return []
        entries = load_record(self.history_path).get("history")
        if not (isinstance(entries, list)
                and all(isinstance(e, dict) and isinstance(e.get("step"), int) for e in entries)):
            raise RecordError(self.history_path, "malformed", "not a list of evaluations")
        return [e for e in entries if e["step"] <= up_to_step]

    def backup_records_problem(self, evaluated: list[int]) -> str | None:
        """Why the newest backup cannot be resumed from although it may read back: what goes
        with it is missing or unreadable, the layers' hashes when training began
        (backup/layers_start.json) or the evaluations up to it (history.json must hold each
        step of `evaluated` up to the backup's). None if it can, or if there is no backup."""
        step = self.backup_step()
        if not step:
            return None
        try:
            self.read_start_digests()
            recorded = {e["step"] for e in self.read_history(step)}
        except RecordError as e:
            return f"{e.path.name} is {e.kind} ({e})"
        missing = [s for s in evaluated if s <= step and s not in recorded]
        if missing:
            return (f"{self.HISTORY} lacks the evaluations at steps "
                    f"{', '.join(map(str, missing[:5]))}{' ...' if len(missing) > 5 else ''}")
        return None

    def discard_backup(self) -> None:
        """Removes the backup (and the evaluations that went with it): the run starts afresh."""
        shutil.rmtree(self.backup_dir, ignore_errors=True)
        self.history_path.unlink(missing_ok=True)

    def discard_summaries(self) -> None:
        """Removes the TensorBoard events of an earlier start that left no backup to resume:
        the run starts afresh, and TensorBoard would show both starts' curves and hparams."""
        shutil.rmtree(self.summaries_dir, ignore_errors=True)

    def write_start_digests(self, digests: dict) -> None:
        self.backup_dir.mkdir(exist_ok=True)
        write_json_atomic(self.start_digests_path, digests)

    def set_aside(self) -> Path | None:
        """--overwrite: moves an earlier run's files into <run>/.replaced-<time>/ (the lock
        stays), where they are kept until the new run is done and ignored by everything else.
        Returns that folder, None if there was nothing to set aside."""
        old = [p for p in self.path.iterdir()
               if p.name != self.LOCK and not p.name.startswith(self.REPLACED_PREFIX)]
        if not old:
            return None
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        aside = self.path / f"{self.REPLACED_PREFIX}{stamp}"
        aside.mkdir()
        for path in old:
            os.replace(path, aside / path.name)
        return aside

    def finish(self, model, result: dict) -> None:
        """The final write: the weights, then result.json, which marks the run done; then the
        backups and any run set aside by --overwrite go."""
        tmp = self.path / f".tmp-{os.getpid()}-{self.WEIGHTS}"  # keeps the .weights.h5 ending
        model.save_weights(str(tmp))
        os.replace(tmp, self.weights_path)
        write_json_atomic(self.result_path, result)
        shutil.rmtree(self.backup_dir, ignore_errors=True)
        # --overwrite: the new run is done, so the one it replaces goes.
        for aside in self.path.glob(self.REPLACED_PREFIX + "*"):
            shutil.rmtree(aside, ignore_errors=True)
