"""Trains one net of the grid: `run(config, strategy) -> result dict`.

Order matters and is the point of this module: check every input before writing anything;
build the model, copy and freeze layers (before compile, which is when Keras 3 fixes the set of
trainable variables), compile inside the strategy scope; train with a backup after every
evaluation; write the weights and then result.json, which marks the run done.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import zlib
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from data_prep.manifest import verify as verify_shards
from data_prep.manifest import write_json_atomic
from keras_transfer import callbacks, data, models, naming, solver, transfer
from keras_transfer.backup import Backup, BackupCallback, SigtermFlag
from keras_transfer.config import Config
from keras_transfer.locking import RunLock

log = logging.getLogger(__name__)


class RunError(Exception):
    """A run cannot start: the message says what is wrong and how to fix it."""


# ---------------------------------------------------------------- checks before anything is written

def check_config(config: Config) -> None:
    if not 0 <= config.n <= naming.MAX_N:
        raise RunError(f"--n={config.n} is out of range: n counts copied layers, 0 (a base net) "
                       f"to {naming.MAX_N} (conv1..fc7; fc8 is always new).")
    if config.source == "none" and config.n != 0:
        raise RunError(f"--source=none trains a base net, which copies nothing; drop --n={config.n} "
                       "or choose --source=A, B or random.")
    if config.n == 0 and config.source != "none":
        raise RunError(f"--source={config.source} needs --n between 1 and {naming.MAX_N} "
                       "(the number of layers to copy).")
    if config.finetune and config.n == 0:
        raise RunError("--finetune needs copied layers to fine-tune: give --n between 1 and 7 "
                       "(a base net with --n=0 is always trained from scratch).")
    if config.finetune and config.source == "random":
        raise RunError("--finetune with --source=random is not one of the paper's conditions: the "
                       "random-features control keeps its random layers frozen. Drop --finetune.")
    for name in ("batch_size", "eval_every"):
        if getattr(config, name) <= 0:
            raise RunError(f"--{name} must be positive, got {getattr(config, name)}.")
    if config.steps < 0 or (config.steps == 0 and config.epochs <= 0):
        raise RunError("give a positive --steps, or --steps=0 with a positive --epochs.")
    if config.lr <= 0:
        raise RunError(f"--lr must be positive, got {config.lr}.")


def base_command(config: Config, half: str) -> str:
    """The command that trains the base net a transfer run needs (quoted in error messages)."""
    parts = ["python -m keras_transfer.main", "--source=none", f"--target={half}",
             f"--model={config.model}", f"--data_dir={config.data_dir}",
             f"--dataset={config.dataset}", f"--split={config.split}", f"--seed={config.seed}",
             f"--workdir={config.workdir}"]
    if config.examples_per_class:
        parts.append(f"--examples_per_class={config.examples_per_class}")
    return " ".join(parts)


def check_base(config: Config, target_manifest: dict, base_manifest: dict) -> Path | None:
    """The weights file of the base net to copy from, after checking it fits the target and
    was trained on the classes `base_manifest` (its half, as prepared now) lists."""
    if config.source not in naming.HALVES:
        return None
    base_dir = config.base_run_dir(config.source)
    weights = base_dir / "model.weights.h5"
    if not (base_dir / "result.json").exists() or not weights.exists():
        raise RunError(f"{config.run} copies layers from base{config.source}, which has not been "
                       f"trained: {base_dir} holds no finished run. Train it first:\n  "
                       + base_command(config, config.source))
    base_config = json.loads((base_dir / "config.json").read_text())
    base_data = json.loads((base_dir / "result.json").read_text()).get("data", {})
    expected = {"dataset": target_manifest["dataset"], "split": target_manifest["split"]["spec"],
                "model": config.model}
    found = {"dataset": base_data.get("dataset", base_config.get("dataset")),
             "split": base_data.get("split", base_config.get("split")),
             "model": base_config.get("model")}
    if "classes" in base_data:  # the same split name prepared from other data or options
        expected["classes"] = [c["original_index"] for c in base_manifest["classes"]]
        found["classes"] = base_data["classes"]
        expected["image shape"] = list(base_manifest["image_shape"])
        found["image shape"] = base_data.get("image_shape", expected["image shape"])
    for key in expected:
        if found[key] != expected[key]:
            raise RunError(f"base{config.source} in {base_dir} was trained with {key} "
                           f"{found[key]!r}, but this run's data has {expected[key]!r}; its "
                           "layers do not transfer here. Retrain it:\n  "
                           + base_command(config, config.source))
    return weights


def input_shape_of(config: Config, manifest: dict) -> tuple[int, int, int]:
    height, width, channels = manifest["image_shape"]
    crop = config.crop or data.default_crop(config.model, min(height, width))
    return (crop, crop, channels)


def check_inputs(config: Config) -> tuple[dict, dict | None]:
    """Everything that can be checked before a file is written: config, data, the base net,
    whose weights are read here. Returns the target's manifest and the base's layer weights."""
    check_config(config)
    try:
        config.split_dir  # parses --split
    except ValueError as e:
        raise RunError(f"--split={config.split!r}: {e}") from e
    try:
        target_manifest = data.load_half(config.half_dir(config.target),
                                         verify_data=config.verify_data)
    except data.DataError as e:
        raise RunError(str(e)) from e
    source_manifest = None
    if config.source in naming.HALVES and config.source != config.target:
        try:
            source_manifest = data.load_half(config.half_dir(config.source))
        except data.DataError as e:
            raise RunError(str(e)) from e
    if 0 < config.fc8_outputs < target_manifest["num_classes"]:
        raise RunError(f"--fc8_outputs={config.fc8_outputs} is smaller than the "
                       f"{target_manifest['num_classes']} classes of half {config.target}.")
    weights_path = check_base(config, target_manifest, source_manifest or target_manifest)
    if weights_path is None:
        return target_manifest, None
    base_result = json.loads((weights_path.parent / "result.json").read_text())
    try:
        base_weights = transfer.read_base_weights(
            weights_path, config.model, input_shape_of(config, target_manifest),
            base_result["num_outputs"])
    except transfer.TransferError as e:
        raise RunError(f"{e}\nRetrain base{config.source}:\n  "
                       + base_command(config, config.source)) from e
    return target_manifest, base_weights


# ---------------------------------------------------------------- training

def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def _set_precision(name: str) -> None:
    policy = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[name]
    keras.mixed_precision.set_global_policy(policy)


def _total_steps(config: Config, train_count: int) -> int:
    if config.steps:
        return config.steps
    return max(1, math.ceil(config.epochs * train_count / config.batch_size))


def _digests(model) -> dict[str, str]:
    return {name: transfer.layer_sha256(model.get_layer(name)) for name in models.LAYER_NAMES}


def _save_weights_atomically(model, path: Path) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")  # Keras needs the .weights.h5 ending.
    model.save_weights(str(tmp))
    os.replace(tmp, path)


def init_seed(config: Config) -> int:
    """Each net of a seed draws its own initialisation (the paper's nets were independent), so a
    random-features control or a re-initialised upper layer is never a base net's start."""
    return zlib.crc32(f"{config.seed}/{config.run}".encode()) & 0x7FFFFFFF


def eval_segments(start: int, total: int, every: int) -> list[tuple[int, int]]:
    """(steps per interval, intervals) for the fit calls that train from `start` to `total` with
    an evaluation every `every` steps and at the end, e.g. (130, 450, 100) ->
    [(70, 1), (100, 2), (50, 1)]: a resumed run first finishes its interrupted interval."""
    segments, step = [], start
    while step < total:
        boundary = min((step // every + 1) * every, total)
        length = boundary - step
        if segments and segments[-1][0] == length and step % every == 0:
            segments[-1] = (length, segments[-1][1] + 1)
        else:
            segments.append((length, 1))
        step = boundary
    return segments


def best_mean(values, k: int = 10) -> float:
    """The paper's metric: the mean of the k best validation values (optimistic, as reported)."""
    best = sorted((v for v in values if not math.isnan(v)), reverse=True)[:k]
    return float(np.mean(best)) if best else float("nan")


def run(config: Config, strategy: tf.distribute.Strategy) -> dict:
    """Trains the net `config` describes and returns (and writes) its result.json contents."""
    started = time.time()
    target_manifest, base_weights = check_inputs(config)
    chief = _is_chief(strategy)
    run_dir = config.run_dir
    if (run_dir / "result.json").exists():
        log.info("%s is already done (%s exists)", config.run, run_dir / "result.json")
        return json.loads((run_dir / "result.json").read_text())
    # Non-chief workers of a multi-worker job train too, but keep their files to themselves.
    out_dir = run_dir if chief else run_dir / f".worker-{strategy.cluster_resolver.task_id}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(out_dir / ".lock")
        locked = lock.acquire()
    except OSError as e:
        raise RunError(f"cannot write the run directory {out_dir}: {e.strerror}. "
                       "Choose a writable --workdir.") from e
    if not locked:
        raise RunError(f"another process is training {config.run} in {out_dir} right now "
                       f"(see {out_dir / '.lock'}); wait for it, or stop it first.")
    try:
        if (run_dir / "result.json").exists():  # finished while we waited for the lock
            return json.loads((run_dir / "result.json").read_text())
        write_json_atomic(out_dir / "config.json", config.to_json())
        return _train(config, strategy, target_manifest, base_weights, chief, out_dir,
                      started)
    finally:
        lock.release()


def _train(config: Config, strategy, target_manifest: dict, base_weights: dict | None,
           chief: bool, out_dir: Path, started: float) -> dict:
    """Trains with a lock held on the run directory; see `run`."""
    run_dir = config.run_dir
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    jit_compile = bool(config.xla) and not config.deterministic
    if config.xla and not jit_compile:
        log.warning("--deterministic disables XLA: training without jit_compile")
    _set_precision(config.mixed_precision)

    input_shape = input_shape_of(config, target_manifest)
    crop = input_shape[0]
    num_classes = config.fc8_outputs or target_manifest["num_classes"]

    with strategy.scope():
        model = models.build(config.model, num_classes, input_shape, dropout=config.dropout,
                             seed=init_seed(config))
        plan = transfer.apply_transfer(
            model, n=config.n, source=config.source, base_weights=base_weights,
            finetune=config.finetune,
            origin_label=f"base{config.source}" if config.source in naming.HALVES else None)
        model.compile(
            optimizer=solver.make_optimizer(config.lr, config.lr_step, config.momentum,
                                            config.weight_decay),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1"),
                     keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, num_classes), name="top5")],
            jit_compile=jit_compile)
    print(f"{config.run} ({config.condition}) on {config.dataset}/{config.split_dir}/"
          f"{config.target}: {num_classes}-way fc8, input {input_shape}, "
          f"{models.multiply_adds(model) / 1e6:.1f} M multiply-adds/image, "
          f"strategy {type(strategy).__name__} x{strategy.num_replicas_in_sync}, "
          f"jit_compile={jit_compile}, precision {config.mixed_precision}", flush=True)
    print(transfer.format_layer_table(plan), flush=True)

    total_steps = _total_steps(config, target_manifest["counts"]["train"])
    backup = Backup(out_dir / "backup", model)
    with strategy.scope():
        start_step = backup.restore()
    digests_path = out_dir / "backup" / "layers_start.json"
    history_path = out_dir / "history.json"
    if start_step:
        print(f"resuming {config.run} from its backup at step {start_step}", flush=True)
        start_digests = json.loads(digests_path.read_text())
    else:
        start_digests = _digests(model)
        digests_path.parent.mkdir(exist_ok=True)
        write_json_atomic(digests_path, start_digests)
        history_path.unlink(missing_ok=True)  # left by a run killed before its first backup
    history = callbacks.EvalHistory(history_path, images_per_step=config.batch_size,
                                    up_to_step=start_step)

    half_dir = config.half_dir(config.target)
    # A resumed run draws a fresh data order rather than replaying the batches it has seen.
    data_seed = config.seed + start_step
    train_ds = strategy.distribute_datasets_from_function(
        lambda ctx: data.build_dataset(half_dir, "train", batch_size=config.batch_size,
                                       training=True, seed=data_seed, input_context=ctx,
                                       crop=crop, model_name=config.model,
                                       manifest=target_manifest))
    val_ds = strategy.distribute_datasets_from_function(
        lambda ctx: data.build_dataset(half_dir, "validation", batch_size=config.batch_size,
                                       training=False, input_context=ctx, crop=crop,
                                       model_name=config.model, manifest=target_manifest))
    with SigtermFlag() as sigterm:
        fit_callbacks = [
            history,
            callbacks.Summaries(out_dir / "tb", history, histogram_every=config.histogram_every),
            BackupCallback(backup, sigterm),
        ]
        try:
            for steps, intervals in eval_segments(start_step, total_steps, config.eval_every):
                model.fit(train_ds, epochs=intervals, steps_per_epoch=steps,
                          validation_data=val_ds, validation_steps=config.eval_steps or None,
                          callbacks=fit_callbacks, shuffle=False, verbose=0)
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            # tf.data's error does not say which file failed; the full check against the
            # manifest's hashes does (slow, but something has already gone wrong).
            problems = verify_shards(half_dir, full_hash=True)
            if not problems:
                raise
            raise RunError(f"the data could not be read while training ({type(e).__name__}): "
                           + "; ".join(problems) + f". Check it with `python -m data_prep verify "
                           f"{half_dir}` and prepare it again with --overwrite.") from e

    end_digests = _digests(model)
    entries = history.entries
    final = entries[-1]
    result = {
        "run": config.run, "condition": config.condition, "dataset": config.dataset,
        "split": config.split, "split_dir": config.split_dir, "seed": config.seed,
        "examples_per_class": config.examples_per_class or None,
        "source": config.source, "target": config.target, "n": config.n,
        "finetune": config.finetune, "model": config.model, "num_outputs": num_classes,
        "top1_final": final["top1"], "top5_final": final["top5"], "loss_final": final["loss"],
        "top1_best10_mean": best_mean([e["top1"] for e in entries]),
        "top5_best10_mean": best_mean([e["top5"] for e in entries]),
        "history": [{k: e[k] for k in ("step", "top1", "top5", "loss")} for e in entries],
        "steps": final["step"],
        "images_per_sec": final["step"] * config.batch_size / max(history.train_seconds, 1e-9),
        "wall_time_sec": time.time() - started,
        "jit_compile": jit_compile,
        "replicas": strategy.num_replicas_in_sync,
        "data": {"dataset": target_manifest["dataset"], "split": target_manifest["split"]["spec"],
                 "classes": [c["original_index"] for c in target_manifest["classes"]],
                 "image_shape": list(target_manifest["image_shape"])},
        "layers": [{"name": row.name, "origin": row.origin, "trainable": row.trainable,
                    "sha256_start": start_digests[row.name], "sha256_end": end_digests[row.name]}
                   for row in plan],
    }
    if chief:
        _save_weights_atomically(model, run_dir / "model.weights.h5")
        write_json_atomic(run_dir / "result.json", result)
        shutil.rmtree(out_dir / "backup", ignore_errors=True)
    print(f"{config.run} done: top-1 {result['top1_final']:.4f} final, "
          f"{result['top1_best10_mean']:.4f} best-10 mean; {result['steps']} steps, "
          f"{result['images_per_sec']:.0f} images/s, {result['wall_time_sec']:.0f} s -> "
          f"{run_dir / 'result.json'}", flush=True)
    return result
