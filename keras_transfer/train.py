"""Trains one net of the grid, `run(config, strategy) -> result dict`, or a pack of nets of one
target half together, `run_pack(configs, strategy)` (one input stream and one compiled step for
all, see steps.py; each net keeps its own run directory, lock, backups and result.json).

It reads as its phases, in the order they run:
  claim   `resolve.resolve` checks every input and returns the run's plan before anything is
          written; then the run directory's lock (run_records.RunDir), or the finished result;
  build   each model with its copied and frozen layers (before the train step is traced, which
          is when the set of trainable variables is fixed), its optimizer and backup, inside
          the strategy scope (`_build`);
  train   the pack's compiled step over one input stream, an evaluation or a backup at each
          point, a stop with a backup on SIGTERM (`_train_group`);
  record  the weights and then result.json, which marks the run done (`_finish`).
"""
from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time

import keras
import tensorflow as tf

from data_prep.manifest import verify as verify_shards
from keras_transfer import data, divergence, metrics, models, naming, progress, runtime, solver
from keras_transfer import steps as steps_lib
from keras_transfer import transfer
from keras_transfer.backup import Backup, Preempted, SigtermFlag
from keras_transfer.config import Config
from keras_transfer.evaluation import Interval, eval_points, evaluate, evaluation_steps
from keras_transfer.pack import NetInTraining, check_pack, fail, per_net
from keras_transfer.progress import Timing
from keras_transfer.resolve import RunError, resolve
from keras_transfer.result import result_of
from keras_transfer.run_records import RunDir
from keras_transfer.seeds import data_seed, init_seed

# A call of the compiled train loop runs as many steps as take about this long, so Python is
# entered rarely for small nets while SIGTERM is still honoured within about a second.
SECONDS_PER_CALL = 1.0


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
    check_pack(configs, strategy)
    outcomes: dict[str, object] = {}
    nets: list[NetInTraining] = []
    chief = runtime.is_chief(strategy)
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
    """Checks one net's inputs and takes its lock: its NetInTraining, or its result if it is
    already done with these settings and data."""
    resolved = resolve(config)
    run = RunDir(config.run_dir)
    if run.is_done() and not config.overwrite:
        return _finished(config, run, resolved.target_manifest)
    if not chief:
        # Non-chief workers of a multi-worker job train too (their saves are collective), but
        # only the chief writes the run directory: theirs go to a scratch folder, deleted after.
        scratch = tempfile.mkdtemp(
            prefix=f"keras_transfer-{config.run}-worker{strategy.cluster_resolver.task_id}-")
        return NetInTraining(resolved, RunDir(scratch), None)
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
            return _finished(config, run, resolved.target_manifest)
        if config.overwrite:
            aside = run.set_aside()
            if aside is not None:
                print(f"--overwrite: the earlier run of {run.path.name} is set aside in {aside} "
                      "until the new one is done", flush=True)
        elif problem := run.resume_problem(config):
            raise RunError(problem)
        run.write_config(config_record(resolved))
    except BaseException:
        lock.release()
        raise
    return NetInTraining(resolved, run, lock)


def config_record(resolved) -> dict:
    """config.json: the flags, and where an external base's copied layers come from."""
    record = resolved.config.to_json()
    if resolved.external is not None:
        record["external_base"] = resolved.external.record(resolved.config.mean_half)
    return record


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


def _train(nets: list[NetInTraining], strategy, chief: bool, timing: Timing,
           started: float) -> None:
    config = nets[0].config  # what the pack shares (pack_key)
    jit_compile = runtime.configure(config)
    shared = nets[0].resolved  # the pack's nets share their data and schedule (pack_key)
    input_shape, num_classes = shared.input_shape, shared.num_classes
    packed = len(nets) > 1

    # From here on a stop signal is only recorded and the loop acts on it at its first step
    # (a backup): raised while TensorFlow builds a model, a KeyboardInterrupt can be
    # swallowed there with a traceback printed.
    with SigtermFlag() as sigterm:
        with timing.phase("setup"):
            for net in nets:
                net.label = net.config.run if packed else ""
                try:
                    _build(net, strategy, chief)
                except OSError as e:
                    fail(net, e)
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
        for start_step, group in sorted(by_start.items()):
            _train_group(group, strategy, start_step, jit_compile, sigterm, timing)

    with timing.phase("finish"):
        per_net(nets, lambda net: _finish(net, strategy, chief, jit_compile, timing, started,
                                           [n.config.run for n in nets]))


def _build(net: NetInTraining, strategy, chief: bool) -> None:
    """The net's model (with its copied and frozen layers), optimizer and backup, inside the
    strategy's scope; restored from its backup if it has one and what goes with it is whole."""
    config, resolved = net.config, net.resolved
    # Every worker resumes from the chief's backup (on a filesystem they share); under
    # --overwrite the chief sets that aside and all start afresh.
    resume_from = net.out if config.overwrite else RunDir(config.run_dir)
    evaluated = evaluation_steps(resolved.total_steps, config.stretched(config.eval_every),
                                 config.eval_last)
    if problem := resume_from.backup_records_problem(evaluated):
        # Each worker decides alike from the same files; only the chief removes them.
        print(f"warning: {config.run}: its backup cannot be resumed from: {problem}; training "
              "starts afresh", file=sys.stderr, flush=True)
        if chief:
            resume_from.discard_backup()
    with strategy.scope():
        net.model = models.build(config.model, resolved.num_classes, resolved.input_shape,
                                 dropout=config.dropout,
                                 seed=init_seed(config))
        net.plan = transfer.apply_transfer(
            net.model, n=config.n, source=config.source, base_weights=resolved.base_weights,
            finetune=config.finetune, model_name=config.model,
            origin_label=resolved.copied_from)
        net.optimizer = solver.optimizer_for(config)
        if config.mixed_precision == "float16":
            net.optimizer = keras.optimizers.LossScaleOptimizer(net.optimizer)
        # Momentum slots exist once built; restoring a backup needs them to exist.
        net.optimizer.build(net.model.trainable_variables)
        net.backup = Backup(net.out.backup_dir, net.model, net.optimizer,
                            restore_from=resume_from.backup_dir)
        net.start_step = 0 if problem else net.backup.restore()
    if net.start_step:
        net.start_digests = resume_from.read_start_digests()
    else:
        net.start_digests = transfer.block_sha256(net.model, config.model)
        net.out.write_start_digests(net.start_digests)
        net.out.history_path.unlink(missing_ok=True)  # left by a run killed before its first backup
        net.out.discard_summaries()  # the same run's events, which would show twice
    net.history = progress.EvalHistory(net.out.history_path, net.out.read_history(net.start_step),
                                       images_per_step=config.batch_size, label=net.label)
    net.summaries = progress.Summaries(
        net.out.summaries_dir, net.model, histogram_every=config.histogram_every,
        hparams=None if net.start_step else {name: getattr(config, name)
                                             for name in naming.HPARAMS},
        trial_id=str(config.run_dir.relative_to(config.workdir)))


def _train_group(nets, strategy, start_step: int, jit_compile: bool, sigterm: SigtermFlag,
                 timing: Timing):
    """Trains the nets resumed at `start_step` together to the end of their schedule: one input
    stream, one compiled step, an evaluation or a backup at each point (or a stop on SIGTERM)."""
    shared = nets[0].resolved  # what the pack's nets share (pack_key)
    config, total_steps = shared.config, shared.total_steps
    half_dir = config.half_dir(config.target)
    crop = shared.crop
    val_limit = config.eval_steps * config.batch_size if config.eval_steps else None
    manifest = shared.target_manifest
    stream_seed = data_seed(config)
    # One input stream for the pack, centred on each mean image a net of it needs and adapted
    # as each external base it copies from needs.
    variants = sorted({_input_variant(net) for net in nets}, key=repr)
    means = [data.mean_image(config.half_dir(half)) for half, _ in variants]
    adaptations = [adaptation for _, adaptation in variants]
    input_options = data.input_options(strategy)
    train_input = data.InputSettings(
        batch_size=config.batch_size, training=True, seed=stream_seed, crop=crop,
        model_name=config.model, means=means, adaptations=adaptations,
        deterministic=config.deterministic, start_step=start_step)
    val_input = data.InputSettings(batch_size=config.batch_size, training=False, crop=crop,
                                   model_name=config.model, means=means,
                                   adaptations=adaptations, limit=val_limit)
    train_ds = strategy.distribute_datasets_from_function(
        lambda ctx: data.build_dataset(half_dir, "train", train_input, input_context=ctx,
                                       manifest=manifest),
        options=input_options)
    val_ds = strategy.distribute_datasets_from_function(
        lambda ctx: data.build_dataset(half_dir, "validation", val_input, input_context=ctx,
                                       manifest=manifest),
        options=input_options)
    pack = steps_lib.PackSteps(strategy, [n.model for n in nets], [n.optimizer for n in nets],
                               global_batch=config.batch_size, top_k=shared.top_k,
                               jit_compile=jit_compile,
                               inputs=[variants.index(_input_variant(n)) for n in nets],
                               frozen=[net.frozen_prefix() for net in nets])
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
    interval = Interval(step, nets)
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
                        divergence.record(net, step, "the training loss", add["loss"])
                if all(net.error is not None for net in nets):
                    return  # every net of the group diverged or failed: nothing left to train
                if not multi_worker:  # workers must agree on every call's length
                    steps_per_call = max(1, int(SECONDS_PER_CALL * n / max(call_seconds, 1e-6)))
                if sigterm.received and step < point:  # at `point`, evaluate first
                    _preempt(nets, step, timing)
            if point in evaluated:
                evaluate(nets, pack, val_ds, step, interval, timing)
                interval = Interval(step, nets)
            else:
                lr = solver.current_learning_rate(nets[0].optimizer)
                for net, train_sums in zip(nets, interval.sums):
                    if net.error is None and not divergence.weights_finite(net.model):
                        divergence.record(net, step, "a weight", "not finite")
                    if net.error is None:
                        net.history.print_training(
                            step=step, total_steps=total_steps,
                            train_sums=train_sums, steps_done=step - interval.start,
                            seconds=interval.seconds, learning_rate=lr)
            if all(net.error is not None for net in nets):
                return
            with timing.phase("backup"):
                per_net(nets, lambda net: net.backup.save())
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


def _input_variant(net: NetInTraining) -> tuple:
    """What a net's inputs are made of: the half whose mean image they subtract, and how an
    external base's inputs are adapted (None: as they are)."""
    external = net.resolved.external
    return net.config.mean_half, external.adaptation if external else None


def _preempt(nets, step: int, timing: Timing):
    """SIGTERM: every net saves a backup at this step, then the process stops."""
    with timing.phase("backup"):
        per_net(nets, lambda net: net.backup.save())
    raise Preempted(step)


def _finish(net: NetInTraining, strategy, chief: bool, jit_compile: bool, timing: Timing,
            started: float, pack: list[str]) -> None:
    """The net's result.json (written last, after its weights: it marks the run done)."""
    config, run = net.config, RunDir(net.config.run_dir)
    end_digests = transfer.block_sha256(net.model, config.model)
    result = result_of(net, end_digests, jit_compile=jit_compile,
                       replicas=strategy.num_replicas_in_sync, pack=pack, timing=timing,
                       started=started)
    net.summaries.close(net.backup.step(), {metric: result[metric] for metric in metrics.TOP1})
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
