"""Trains one net of the grid, `run(config, strategy) -> result dict`, or a pack of nets of one
target half together, `run_pack(configs, strategy)` (one input stream and one compiled step for
all, see steps.py; each net keeps its own run directory, lock, backups and result.json).

Order matters and is the point of this module: check every input before writing anything;
build each model, copy and freeze layers (before the train step is traced, which is when the set
of trainable variables is fixed), inside the strategy scope; train with a backup after every
evaluation; write the weights and then result.json, which marks the run done.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import keras
import tensorflow as tf

from data_prep.manifest import verify as verify_shards
from keras_transfer import data, metrics, models, naming, progress, solver, transfer
from keras_transfer import steps as steps_lib
from keras_transfer.backup import Backup, Preempted, SigtermFlag
from keras_transfer import config as config_lib
from keras_transfer.config import Config
from keras_transfer.locking import RunLock
from keras_transfer.run_records import RecordError, RunDir, load_record

log = logging.getLogger(__name__)


class RunError(Exception):
    """A run cannot start: the message says what is wrong and how to fix it."""


class Diverged(Exception):
    """A net's loss or weights became NaN or infinite. It is recorded in the run's
    diverged.json and never counts as done."""

    def __init__(self, run: str, step: int, quantity: str, value, path: Path):
        super().__init__(f"{run} diverged by step {step}: {quantity} is {value}. Recorded in "
                         f"{path}, not as a result. Train it again with other settings (e.g. a "
                         "lower --lr) and --overwrite.")


# ---------------------------------------------------------------- checks before anything is written

def check_config(config: Config) -> None:
    arch = models.get(config.model)
    problem = naming.net_problem(config.source, config.n, config.finetune, model=arch.name,
                                 cut_names=arch.cut_names, flag="--")
    if problem:
        raise RunError(problem + ".")
    try:
        config_lib.check_values(config)
    except config_lib.ConfigError as e:
        raise RunError(str(e)) from None


def base_command(config: Config, half: str) -> str:
    """The command that trains (or, if it is finished, retrains) the base net a transfer run
    needs, with this run's data and solver (quoted in error messages)."""
    base = dataclasses.replace(config, source="none", target=half, n=0, finetune=False)
    return config_lib.command(base, overwrite=RunDir(base.run_dir).is_done())


def check_base(config: Config, target_manifest: dict, base_manifest: dict) -> Path | None:
    """The weights file of the base net to copy from, after checking it fits the target and
    was trained on the classes `base_manifest` (its half, as prepared now) lists."""
    if config.source not in naming.HALVES:
        return None
    base = RunDir(config.base_run_dir(config.source))
    if not base.is_done() or not base.weights_path.exists():
        raise RunError(f"{config.run} copies layers from base{config.source}, which has not been "
                       f"trained: {base.path} holds no finished run. Train it first:\n  "
                       + base_command(config, config.source))
    base_config = _read_base_record(config, base.config_path)
    base_data = _read_base_record(config, base.result_path).get("data", {})
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
            raise RunError(f"base{config.source} in {base.path} was trained with {key} "
                           f"{found[key]!r}, but this run's data has {expected[key]!r}; its "
                           "layers do not transfer here. Retrain it:\n  "
                           + base_command(config, config.source))
    return base.weights_path


def _read_base_record(config: Config, path: Path) -> dict:
    """A base net's config.json or result.json, or a RunError that says how to retrain it."""
    try:
        return load_record(path)
    except RecordError as e:
        raise RunError(f"base{config.source}'s {path.name} in {path.parent} is unreadable ({e}); "
                       "its layers cannot be trusted. Retrain it:\n  "
                       + base_command(config, config.source)) from e


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
    if (source_manifest and config.mean_half == config.source
            and source_manifest["image_shape"] != target_manifest["image_shape"]):
        raise RunError(f"--mean_image=base subtracts half {config.source}'s mean image, but its "
                       f"images are {source_manifest['image_shape']} and half {config.target}'s "
                       f"{target_manifest['image_shape']}; use --mean_image=target.")
    height, width, _ = target_manifest["image_shape"]
    if config.crop > min(height, width):
        raise RunError(f"--crop={config.crop} is larger than the {height}x{width} images of half "
                       f"{config.target}: give at most {min(height, width)}, or 0 for the model's "
                       "own crop.")
    train_count = target_manifest["counts"]["train"]
    if config.batch_size > train_count:
        raise RunError(f"--batch_size={config.batch_size} is larger than the {train_count} "
                       f"training images of half {config.target}: give at most {train_count}.")
    if 0 < config.fc8_outputs < target_manifest["num_classes"]:
        raise RunError(f"--fc8_outputs={config.fc8_outputs} is smaller than the "
                       f"{target_manifest['num_classes']} classes of half {config.target}.")
    weights_path = check_base(config, target_manifest, source_manifest or target_manifest)
    if weights_path is None:
        return target_manifest, None
    base_result = _read_base_record(config, RunDir(config.base_run_dir(config.source)).result_path)
    try:
        base_weights = transfer.read_base_weights(
            weights_path, config.model, input_shape_of(config, target_manifest),
            int(base_result["num_outputs"]))
    except (transfer.TransferError, KeyError, TypeError, ValueError) as e:
        raise RunError(f"{e}\nRetrain base{config.source}:\n  "
                       + base_command(config, config.source)) from e
    return target_manifest, base_weights


# ---------------------------------------------------------------- training

# ---------------------------------------------------------------- training

# A call of the compiled train loop runs as many steps as take about this long, so Python is
# entered rarely for small nets while SIGTERM is still honoured within about a second.
SECONDS_PER_CALL = 1.0


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
        return config.stretched(config.steps)
    return max(1, math.ceil(config.stretched(config.epochs) * train_count / config.batch_size))


def _digests(model, model_name: str) -> dict[str, str]:
    return transfer.block_sha256(model, model_name)


def init_seed(config: Config) -> int:
    """Each net draws its own initialisation (the paper's nets were independent), so a
    random-features control or a re-initialised upper layer is never a base net's start, and
    nets of different splits or seeds are independent repeats."""
    return _seed_of(f"{config.split_dir}/{config.seed}/{config.run}")


def data_seed(config: Config) -> int:
    """The data order and augmentation of a split and seed (shared by the nets of a pack); a
    resumed run replays the same stream from its step (data.build_dataset's start_step)."""
    return _seed_of(f"{config.split_dir}/{config.seed}")


def _seed_of(text: str) -> int:
    return zlib.crc32(text.encode()) & 0x3FFFFFFF


def eval_points(start: int, total: int, every: int) -> list[int]:
    """The steps after `start` at which a run evaluates: every `every` steps and at the end,
    e.g. (130, 450, 100) -> [200, 300, 400, 450]: a resumed run first finishes its interval."""
    points = list(range((start // every + 1) * every, total, every))
    return points + [total] if start < total else []


def evaluation_steps(total: int, every: int, last: int) -> list[int]:
    """The steps at which a run evaluates: the last `last` of its backup points (every `every`
    steps and at the end), all of them if `last` is 0; e.g. (480, 80, 3) -> [320, 400, 480].
    The report needs only the final value and the convergence control's last evaluations;
    the other points only write a backup."""
    points = eval_points(0, total, every)
    return points[-last:] if last else points


def top_k(manifest: dict) -> int | None:
    """5 for top-5 accuracy, or None where it means nothing: a half of 5 classes or fewer
    always has its label among the 5 highest outputs."""
    return 5 if manifest["num_classes"] > 5 else None


def pack_key(config: Config) -> Config:
    """What the nets of one pack share: everything but which layers come from where."""
    return dataclasses.replace(config, source="none", n=0, finetune=False)


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


@dataclasses.dataclass
class _NetInTraining:
    """One net while its pack trains: config, files, model, optimizer and progress."""
    config: Config
    target_manifest: dict
    base_weights: dict | None
    out: RunDir  # where this process writes: the run directory, or a non-chief's scratch
    lock: RunLock | None  # None on non-chief workers: the chief holds the run's lock
    label: str = ""  # the run's name on its console lines, when it shares them with packmates
    model: object = None
    optimizer: object = None
    plan: list = None
    backup: Backup = None
    history: progress.EvalHistory = None
    summaries: progress.Summaries = None
    start_step: int = 0
    start_digests: dict = None
    result: dict | None = None
    error: Exception | None = None


def run(config: Config, strategy: tf.distribute.Strategy, startup_seconds: float = 0.0) -> dict:
    """Trains the net `config` describes and returns (and writes) its result.json contents.
    Raises RunError (or OSError, backup.Preempted) if it cannot."""
    outcome = run_pack([config], strategy, startup_seconds)[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def run_pack(configs: list[Config], strategy: tf.distribute.Strategy,
             startup_seconds: float = 0.0) -> list:
    """Trains several nets of one target half together (see steps.py): per config, in order,
    its result dict, or the exception that stopped it (RunError, OSError). A net that fails
    leaves the others training. Raises RunError if the configs cannot form a pack, and
    backup.Preempted on SIGTERM, after every unfinished net saved a backup."""
    timing = Timing(startup_seconds)
    started = time.time() - startup_seconds
    names = [c.run for c in configs]
    if len({pack_key(c) for c in configs}) > 1:
        targets = " and ".join(sorted({c.target for c in configs}))
        raise RunError(f"{', '.join(names)} cannot train together: the nets of a pack share "
                       f"their input stream, so they must differ only in --source, --n and "
                       f"--finetune (same target half, data, seed and solver; targets here: "
                       f"{targets})")
    if len(set(names)) < len(names):
        raise RunError(f"a net is listed twice: {', '.join(names)}")
    replicas = strategy.num_replicas_in_sync
    if configs[0].batch_size % replicas:
        raise RunError(f"--batch_size={configs[0].batch_size} does not split evenly over the "
                       f"{replicas} replicas of {type(strategy).__name__}: give a multiple of "
                       f"{replicas}.")
    outcomes: dict[str, object] = {}
    nets: list[_NetInTraining] = []
    chief = _is_chief(strategy)
    try:
        with timing.phase("setup"):
            for config in configs:
                try:
                    net = _claim(config, strategy, chief)
                except (RunError, OSError) as e:
                    outcomes[config.run] = e
                    continue
                if isinstance(net, dict):  # already done
                    outcomes[config.run] = net
                else:
                    nets.append(net)
        if nets:
            _train(nets, strategy, chief, timing, started)
        for net in nets:
            outcomes[net.config.run] = net.error or net.result
    finally:
        for net in nets:
            if net.lock is not None:
                net.lock.release()
            else:
                shutil.rmtree(net.out.path, ignore_errors=True)
    return [outcomes[c.run] for c in configs]


def _claim(config: Config, strategy, chief: bool):
    """Checks one net's inputs and takes its lock: its _NetInTraining, or its result if it is
    already done with these settings and data."""
    target_manifest, base_weights = check_inputs(config)
    run = RunDir(config.run_dir)
    if run.is_done() and not config.overwrite:
        return _finished(config, run, target_manifest)
    if not chief:
        # Non-chief workers of a multi-worker job train too (their saves are collective), but
        # only the chief writes the run directory: theirs go to a scratch folder, deleted after.
        scratch = tempfile.mkdtemp(
            prefix=f"keras_transfer-{config.run}-worker{strategy.cluster_resolver.task_id}-")
        return _NetInTraining(config, target_manifest, base_weights, RunDir(scratch), None)
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        lock = run.lock()
        locked = lock.acquire()
    except OSError as e:
        raise RunError(f"cannot write the run directory {run.path}: {e.strerror}. "
                       "Choose a writable --workdir.") from e
    if not locked:
        raise RunError(f"another process is training {config.run} in {run.path} right now "
                       f"(see {run.lock_path}); wait for it, or stop it first.")
    try:
        if run.is_done() and not config.overwrite:
            lock.release()  # finished while we waited for the lock
            return _finished(config, run, target_manifest)
        if config.overwrite:
            aside = run.set_aside()
            if aside is not None:
                print(f"--overwrite: the earlier run of {run.path.name} is set aside in {aside} "
                      "until the new one is done", flush=True)
        elif problem := run.resume_problem(config):
            raise RunError(problem)
        run.write_config(config.to_json())
    except BaseException:
        lock.release()
        raise
    return _NetInTraining(config, target_manifest, base_weights, run, lock)


def _finished(config: Config, run: RunDir, target_manifest: dict) -> dict:
    """The result of a finished run, if it still answers for `config`; else a RunError."""
    reasons = run.why_stale(config, target_manifest)
    if reasons:
        other_settings = any(r.startswith("it was trained with") for r in reasons)
        raise RunError(f"{config.run} is finished, but {'; '.join(reasons)}: its result does not "
                       "answer for this run. Retrain it with --overwrite (the old run is kept "
                       "until the new one is done)"
                       + (", or give the settings it was trained with." if other_settings else "."))
    print(f"{config.run} is already done: {run.result_path} (--overwrite trains it again)",
          flush=True)
    return run.result()


def _fail(net: _NetInTraining, error: Exception) -> None:
    """Takes a net out of its pack: it trains on in the compiled step, but writes nothing more."""
    net.error = error
    if net.label:  # alone, the caller reports it
        print(f"error: {net.config.run} stopped: {error}", file=sys.stderr, flush=True)


def _per_net(nets, action) -> None:
    """Runs `action(net)` for each live net; an OSError fails that net alone."""
    for net in nets:
        if net.error is None:
            try:
                action(net)
            except OSError as e:
                _fail(net, e)


def _train(nets: list[_NetInTraining], strategy, chief: bool, timing: Timing, started: float) -> None:
    config = nets[0].config  # what the pack shares (pack_key)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    jit_compile = bool(config.xla) and not config.deterministic
    if config.xla and not jit_compile:
        log.warning("--deterministic disables XLA: training without jit_compile")
    _set_precision(config.mixed_precision)
    target_manifest = nets[0].target_manifest
    input_shape = input_shape_of(config, target_manifest)
    num_classes = config.fc8_outputs or target_manifest["num_classes"]
    total_steps = _total_steps(config, target_manifest["counts"]["train"])
    packed = len(nets) > 1

    with timing.phase("setup"):
        for net in nets:
            net.label = net.config.run if packed else ""
            try:
                _build(net, strategy, input_shape, num_classes)
            except OSError as e:
                _fail(net, e)
        nets = [net for net in nets if net.error is None]
        if not nets:
            return
        print(f"{'pack of ' + str(len(nets)) + ': ' if packed else ''}"
              f"{', '.join(f'{n.config.run} ({n.config.condition})' for n in nets)} on "
              f"{config.dataset}/{config.split_dir}/{config.target}: {num_classes}-way fc8, "
              f"input {input_shape}, {models.multiply_adds(nets[0].model) / 1e6:.1f} M "
              f"multiply-adds/image, strategy {type(strategy).__name__} "
              f"x{strategy.num_replicas_in_sync}, jit_compile={jit_compile}, "
              f"precision {config.mixed_precision}", flush=True)
        for net in nets:
            if packed:
                print(f"{net.config.run}:", flush=True)
            print(transfer.format_layer_table(net.plan), flush=True)
            if net.start_step:
                print(f"resuming {net.config.run} from its backup at step {net.start_step}",
                      flush=True)

    # Nets resumed from backups of different steps train one after the other, each group from
    # its own step (the learning rate schedule and the data order follow the step).
    by_start = {}
    for net in nets:
        by_start.setdefault(net.start_step, []).append(net)
    with SigtermFlag() as sigterm:
        for start_step, group in sorted(by_start.items()):
            _train_group(group, strategy, config, start_step, total_steps, input_shape,
                         num_classes, jit_compile, sigterm, timing)

    with timing.phase("finish"):
        _per_net(nets, lambda net: _finish(net, strategy, chief, jit_compile, num_classes,
                                           timing, started, [n.config.run for n in nets]))


def _build(net: _NetInTraining, strategy, input_shape, num_classes: int) -> None:
    config = net.config
    with strategy.scope():
        net.model = models.build(config.model, num_classes, input_shape, dropout=config.dropout,
                                 seed=init_seed(config))
        net.plan = transfer.apply_transfer(
            net.model, n=config.n, source=config.source, base_weights=net.base_weights,
            finetune=config.finetune, model_name=config.model,
            origin_label=f"base{config.source}" if config.source in naming.HALVES else None)
        net.optimizer = solver.make_optimizer(config.lr, config.stretched(config.lr_step),
                                              config.momentum, config.weight_decay)
        if config.mixed_precision == "float16":
            net.optimizer = keras.optimizers.LossScaleOptimizer(net.optimizer)
        # Momentum slots exist once built; restoring a backup needs them to exist.
        net.optimizer.build(net.model.trainable_variables)
        # Every worker resumes from the chief's backup (on a filesystem they share); under
        # --overwrite the chief sets that aside and all start afresh.
        resume_from = net.out if config.overwrite else RunDir(config.run_dir)
        net.backup = Backup(net.out.backup_dir, net.model, net.optimizer,
                            restore_from=resume_from.backup_dir)
        net.start_step = net.backup.restore()
    if net.start_step:
        net.start_digests = resume_from.read_start_digests()
    else:
        net.start_digests = _digests(net.model, config.model)
        net.out.write_start_digests(net.start_digests)
        net.out.history_path.unlink(missing_ok=True)  # left by a run killed before its first backup
    net.history = progress.EvalHistory(net.out.history_path, images_per_step=config.batch_size,
                                       up_to_step=net.start_step, label=net.label)
    net.summaries = progress.Summaries(net.out.summaries_dir, net.model,
                                       histogram_every=config.histogram_every)


def _train_group(nets, strategy, config: Config, start_step: int, total_steps: int, input_shape,
                 num_classes: int, jit_compile: bool, sigterm: SigtermFlag, timing: Timing):
    half_dir = config.half_dir(config.target)
    crop = input_shape[0]
    val_limit = config.eval_steps * config.batch_size if config.eval_steps else None
    manifest = nets[0].target_manifest
    stream_seed = data_seed(config)
    # One input stream for the pack, centred on each mean image a net of it needs.
    mean_halves = sorted({net.config.mean_half for net in nets})
    means = [data.mean_image(config.half_dir(half)) for half in mean_halves]
    input_options = data.input_options(strategy)
    train_ds = strategy.distribute_datasets_from_function(
        lambda ctx: data.build_dataset(half_dir, "train", batch_size=config.batch_size,
                                       training=True, seed=stream_seed, input_context=ctx,
                                       crop=crop, model_name=config.model, manifest=manifest,
                                       means=means, deterministic=config.deterministic,
                                       start_step=start_step),
        options=input_options)
    val_ds = strategy.distribute_datasets_from_function(
        lambda ctx: data.build_dataset(half_dir, "validation", batch_size=config.batch_size,
                                       training=False, input_context=ctx, crop=crop,
                                       model_name=config.model, manifest=manifest,
                                       limit=val_limit, means=means),
        options=input_options)
    pack = steps_lib.PackSteps(strategy, [n.model for n in nets], [n.optimizer for n in nets],
                               global_batch=config.batch_size, top_k=top_k(manifest),
                               jit_compile=jit_compile,
                               inputs=[mean_halves.index(n.config.mean_half) for n in nets],
                               frozen=[_frozen_prefix(net) for net in nets])
    for top, users in pack.shared_work():
        print(f"frozen layers up to {top} computed once for "
              f"{', '.join(nets[i].config.run for i in users)}", flush=True)
    iterator = iter(train_ds)
    with timing.phase("trace"):
        pack.trace(iterator, val_ds)
    step, steps_per_call = start_step, 1
    multi_worker = getattr(strategy, "cluster_resolver", None) is not None
    eval_every = config.stretched(config.eval_every)
    evaluated = set(evaluation_steps(total_steps, eval_every, config.eval_last))
    interval = _Interval(step, nets)
    try:
        for point in eval_points(start_step, total_steps, eval_every):
            while step < point:
                n = min(steps_per_call, point - step)
                with timing.phase("train"):
                    call_started = time.perf_counter()
                    call_sums = pack.train(iterator, n)
                    call_seconds = time.perf_counter() - call_started
                interval.seconds += call_seconds
                step += n
                for net, total, add in zip(nets, interval.sums, call_sums):
                    for key in total:
                        total[key] += add[key]
                    if net.error is None and not math.isfinite(add["loss"]):
                        _diverged(net, step, "the training loss", add["loss"])
                if all(net.error is not None for net in nets):
                    return  # every net of the group diverged or failed: nothing left to train
                if not multi_worker:  # workers must agree on every call's length
                    steps_per_call = max(1, int(SECONDS_PER_CALL * n / max(call_seconds, 1e-6)))
                if sigterm.received and step < point:  # at `point`, evaluate first
                    _preempt(nets, step, timing)
            if point in evaluated:
                _evaluate(nets, pack, val_ds, step, interval, timing)
                interval = _Interval(step, nets)
            else:
                for net in nets:
                    if net.error is None and not _weights_finite(net.model):
                        _diverged(net, step, "a weight", "not finite")
            if all(net.error is not None for net in nets):
                return
            with timing.phase("backup"):
                _per_net(nets, lambda net: net.backup.save())
            if sigterm.received and step < total_steps:
                raise Preempted(step)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        # tf.data's error does not say which file failed; the full check against the
        # manifest's hashes does (slow, but something has already gone wrong).
        problems = verify_shards(half_dir, full_hash=True)
        if not problems:
            raise
        raise RunError(f"the data could not be read while training ({type(e).__name__}): "
                       + "; ".join(problems) + f". Check it with `python -m data_prep verify "
                       f"{half_dir}` and prepare it again with --overwrite.") from e
    finally:
        with timing.phase("teardown"):
            del iterator


def _frozen_prefix(net: _NetInTraining) -> steps_lib.FrozenPrefix:
    """The net's frozen bottom blocks, named by their weights' hashes at the start, so that
    packmates with the same blocks share their forward pass."""
    cuts = transfer.frozen_prefix(net.model, net.config.model, net.plan)
    return steps_lib.FrozenPrefix(outputs=tuple(cut.output for cut in cuts),
                                  digests=tuple(net.start_digests[cut.name] for cut in cuts))


class _Interval:
    """The training since a pack's last evaluation: its first step, seconds and, per net, the
    summed training loss and correct top-1 (steps.TRAIN_SUMS)."""

    def __init__(self, start: int, nets):
        self.start, self.seconds = start, 0.0
        self.sums = [dict.fromkeys(steps_lib.TRAIN_SUMS, 0.0) for _ in nets]


def _evaluate(nets, pack, val_ds, step: int, interval: _Interval, timing: Timing) -> None:
    """All nets of the pack in one pass over the validation set: each net's history entry and
    summaries, or the net recorded as diverged."""
    with timing.phase("evaluate"):
        evaluations = pack.evaluate(val_ds)
    for net, evaluation in zip(nets, evaluations):
        if net.error is None:
            if not math.isfinite(evaluation["loss"]):
                _diverged(net, step, "the validation loss", evaluation["loss"])
            elif not _weights_finite(net.model):
                _diverged(net, step, "a weight", "not finite")
    lr = solver.current_learning_rate(nets[0].optimizer)

    def record(net, evaluation, train_sums):
        entry = net.history.add(step=step, evaluation=evaluation, train_sums=train_sums,
                                steps_done=step - interval.start, seconds=interval.seconds,
                                learning_rate=lr)
        with timing.phase("summaries"):
            net.summaries.add(entry)
    for net, evaluation, train_sums in zip(nets, evaluations, interval.sums):
        _per_net([net], lambda net: record(net, evaluation, train_sums))


def _weights_finite(model) -> bool:
    return all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in model.trainable_variables)


def _diverged(net: _NetInTraining, step: int, quantity: str, value) -> None:
    """Records a diverged net in its diverged.json and takes it out of its pack."""
    record = {"run": net.config.run, "condition": net.config.condition, "step": step,
              "quantity": quantity, "value": str(value)}
    try:
        path = net.out.write_diverged(record)
    except OSError as e:
        _fail(net, e)
        return
    _fail(net, Diverged(net.config.run, step, quantity, value, path))


def _preempt(nets, step: int, timing: Timing):
    """SIGTERM: every net saves a backup at this step, then the process stops."""
    with timing.phase("backup"):
        _per_net(nets, lambda net: net.backup.save())
    raise Preempted(step)


def _finish(net: _NetInTraining, strategy, chief: bool, jit_compile: bool, num_classes: int,
            timing: Timing, started: float, pack: list[str]) -> None:
    config, run = net.config, RunDir(net.config.run_dir)
    net.summaries.close(net.backup.step())
    end_digests = _digests(net.model, config.model)
    entries = net.history.entries
    final = entries[-1]
    result = {
        "run": config.run, "condition": config.condition, "dataset": config.dataset,
        "split": config.split, "split_dir": config.split_dir, "seed": config.seed,
        "examples_per_class": config.examples_per_class or None,
        "source": config.source, "target": config.target, "n": config.n,
        "finetune": config.finetune, "model": config.model,
        # What n counts, for readers without the model registry (the report): `layers` names the
        # cut points, this says whether they are the paper's layers.
        "paper_layers": models.get(config.model).paper_layers, "num_outputs": num_classes,
        **metrics.top1_metrics(entries),
        "top5_final": final["top5"], "loss_final": final["loss"],
        "history": [{k: e[k] for k in ("step", "top1", "top5", "loss")} for e in entries],
        "steps": final["step"],
        "images_per_sec": final["step"] * config.batch_size / max(net.history.train_seconds, 1e-9),
        "wall_time_sec": time.time() - started,
        "jit_compile": jit_compile,
        "replicas": strategy.num_replicas_in_sync,
        "pack": pack,
        "timing": timing.as_dict(),
        "data": {"dataset": net.target_manifest["dataset"],
                 "split": net.target_manifest["split"]["spec"],
                 "classes": [c["original_index"] for c in net.target_manifest["classes"]],
                 "image_shape": list(net.target_manifest["image_shape"]),
                 "mean_half": config.mean_half},
        "layers": [{"name": row.name, "origin": row.origin, "trainable": row.trainable,
                    "sha256_start": net.start_digests[row.name],
                    "sha256_end": end_digests[row.name]}
                   for row in net.plan],
    }
    if chief:
        run.finish(net.model, result)
    net.result = result
    written = (f"-> {run.result_path}" if chief else
               f"(worker {strategy.cluster_resolver.task_id}: the chief writes the result)")
    print(f"{config.run} done: top-1 {result['top1_final']:.4f} final, "
          f"{result['top1_best_fraction']:.4f} best {metrics.best_count(result['evaluations'])} "
          f"of {result['evaluations']} evaluations; {result['steps']} steps, "
          f"{result['images_per_sec']:.0f} images/s, {result['wall_time_sec']:.0f} s {written}",
          flush=True)
