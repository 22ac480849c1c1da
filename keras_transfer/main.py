"""Trains one net of the transfer grid, or a pack of nets of one target half.

    python -m keras_transfer.main --source=A --n=5 --finetune          # A5B+ on Fashion-MNIST
    python -m keras_transfer.main --flagfile=flags/imagenet.flags --source=none --target=A
    python -m keras_transfer.main --nets=B3B,B3B+,A3B,A3B+,R3B          # five nets, one process

Parses the flags, builds the configs and the distribution strategy, and calls `train.run` (one
net) or `train.run_pack` (several).
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
import time

STARTED = time.perf_counter()  # before TensorFlow's import, which the timing counts as start-up

from absl import app, flags, logging  # noqa: E402

from data_prep import flag_errors, process_exit, quiet_tensorflow  # noqa: E402
from keras_transfer import config as config_lib  # noqa: E402
from keras_transfer import exit_status, stopping  # noqa: E402

config_lib.define_flags()
FLAGS = flags.FLAGS


def tf_config_problem(text: str) -> str | None:
    """Why TF_CONFIG (the cluster this worker belongs to, as JSON) cannot be used, or None.
    TensorFlow reads it for the mirrored strategies too, and fails with a traceback."""
    try:
        spec = json.loads(text)
    except ValueError as e:
        return f"is not JSON ({e})"
    if not isinstance(spec, dict):
        return "is not a JSON object"
    cluster, task = spec.get("cluster", {}), spec.get("task", {})
    if not (isinstance(cluster, dict)
            and all(isinstance(a, list) and a for a in cluster.values())):
        return 'has a "cluster" that is not {"worker": ["host:port", ...], ...}'
    if not isinstance(task, dict):
        return 'has a "task" that is not {"type": "worker", "index": N}'
    if not task:
        return None if not cluster else 'has a "cluster" but no "task" saying which one this is'
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster:
        return f'names task type {kind!r}, which its "cluster" does not list ({", ".join(cluster)})'
    if not (isinstance(index, int) and 0 <= index < len(cluster[kind])):
        return (f'names {kind} {index!r}, but its "cluster" lists {len(cluster[kind])} '
                f"{kind} address(es): the index is 0 to {len(cluster[kind]) - 1}")
    return None


def make_strategy(name: str):
    """MirroredStrategy over local devices, MultiWorkerMirroredStrategy across machines
    (TF_CONFIG, or a SLURM allocation), or one device."""
    import tensorflow as tf

    if os.environ.get("TF_CONFIG") and (problem := tf_config_problem(os.environ["TF_CONFIG"])):
        raise config_lib.ConfigError(f"TF_CONFIG {problem}. Fix it, or unset TF_CONFIG to train "
                                     "on this machine alone.")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if os.environ.get("SLURM_JOB_ID"):
        # One worker per SLURM task (`srun -n N`), the node's GPUs shared out among its tasks.
        # GPUs are counted by TensorFlow, not nvidia-smi; on nodes without any, the resolver
        # (which cannot count 0 GPUs per task) is given one per task and sets no devices.
        gpus = len(tf.config.list_physical_devices("GPU"))
        tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or 1)
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
            port_base=int(os.environ.get("KT_PORT_BASE", "8888")),
            gpus_per_node=gpus or tasks, gpus_per_task=None if gpus else 1, auto_set_gpu=gpus > 0)
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    raise config_lib.ConfigError(
        "--strategy=multi_worker needs a cluster: set TF_CONFIG, or run inside a SLURM "
        "allocation (srun). On one machine use --strategy=mirrored.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    stopping.catch_interrupts()  # before TensorFlow's import, the longest part of start-up
    try:
        _train_from_flags()
    except KeyboardInterrupt:  # Ctrl-C outside the training loop, which catches it itself
        print(interrupted_message(), file=sys.stderr)
        sys.exit(exit_status.INTERRUPTED)
    except Exception:
        # A Ctrl-C while TensorFlow loads can surface as another error from its import: the
        # recorded SIGINT says what happened.
        if stopping.received() == signal.SIGINT:
            print(interrupted_message(), file=sys.stderr)
            sys.exit(exit_status.INTERRUPTED)
        raise


def _train_from_flags():
    quiet_tensorflow.import_tensorflow()  # first: a flag's check may import a user's network
    try:
        configs = config_lib.pack_from_flags(FLAGS)
    except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    outcomes, stopped = train_configs(configs, time.perf_counter() - STARTED)
    if stopped is not None:
        status, line = stopped
        print(line, file=sys.stderr)
        sys.exit(status)
    failed = [(c, o) for c, o in zip(configs, outcomes) if isinstance(o, BaseException)]
    codes = set()
    for c, error in failed:
        found = failure(error, [c], in_pack=len(configs) > 1)
        if found is None:
            raise error
        print(found[1], file=sys.stderr)
        codes.add(found[0])
    if failed:
        if len(configs) > 1:
            print(f"{len(failed)} of {len(configs)} nets failed: "
                  f"{', '.join(c.run for c, _ in failed)}", file=sys.stderr)
        sys.exit(min(codes))  # 1 (files) before 2 (bad input) before 3 (diverged)


def train_configs(configs, startup_seconds: float = 0.0):
    """Trains the nets (one, or a pack) under the strategy their config names, in this process:
    (per config its result dict or the exception that stopped it, None) or, when an error
    stopped them all, (None, main's exit status and one line for it). An error main does not
    expect (a bug) is raised with its traceback."""
    from keras_transfer import train

    try:
        set_threads(configs[0].threads)
        strategy = make_strategy(configs[0].strategy)
        return train.run_pack(configs, strategy, startup_seconds), None
    except Exception as e:
        stopped = failure(e, configs)
        if stopped is None:
            raise
        return None, stopped


def set_threads(threads: int) -> None:
    """TensorFlow's intra- and inter-op threads (--threads; 0 leaves its default). Raises
    ConfigError if TensorFlow already runs with others in this process (it fixes them at start)."""
    tf = quiet_tensorflow.import_tensorflow()

    if not threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        raise config_lib.ConfigError(
            f"--threads={threads}: TensorFlow already runs in this process with other thread "
            "counts, which it fixes when it starts; start a new process, or leave out "
            "--threads") from None


def failure(error: BaseException, configs, *, in_pack: bool = False) -> tuple[int, str] | None:
    """main's exit status and one line for an error that stopped `configs` (one net, or a pack
    that it stopped whole), or None for an error main does not expect (a bug). `in_pack`: it
    stopped configs[0] alone, one net of a pack, which the line names."""
    from keras_transfer import data, divergence, train, transfer

    label = configs[0].run if len(configs) == 1 else "pack " + ",".join(c.run for c in configs)
    bad_input = (train.RunError, config_lib.ConfigError, data.DataError, transfer.TransferError)
    if isinstance(error, stopping.Preempted):  # SIGTERM or SIGINT while training: a backup saved
        return 128 + error.signum, f"{label}: {error}"
    if isinstance(error, divergence.Diverged):
        return exit_status.DIVERGED, f"error: {label + ': ' if in_pack else ''}{error}"
    if isinstance(error, bad_input):
        return 2, f"error: {label + ': ' if in_pack else ''}{error}"
    if isinstance(error, lost_worker_errors()) and configs[0].strategy == "multi_worker":
        return (exit_status.LOST_WORKER,
                f"error: {label} stopped: {lost_worker_message(error, configs)}")
    if isinstance(error, OSError):  # e.g. the disk filled up; result.json is written last
        return 1, f"error: {label} stopped: {error}. {_OSERROR_FIX}"
    return None


_OSERROR_FIX = ("Free space or fix the path, then run the same command again to resume from the "
                "last backup.")


def interrupted_message() -> str:
    """The one line for a Ctrl-C outside the training loop (while the run starts or finishes),
    where no backup can be saved at the current step: how the same command goes on."""
    from keras_transfer.run_records import RunDir

    try:
        configs = config_lib.pack_from_flags(FLAGS)
    except config_lib.ConfigError:
        return "stopped by SIGINT before training started"
    label = configs[0].run if len(configs) == 1 else "pack " + ",".join(c.run for c in configs)
    steps = [RunDir(c.run_dir).backup_step() for c in configs]
    resume = ("resume from its last backup (step " + ", ".join(str(s) for s in steps) + ")"
              if any(steps) else "train it (there was no backup yet)")
    return (f"{label}: stopped by SIGINT outside the training loop; run the same command again "
            f"to {resume}")


def lost_worker_errors() -> tuple:
    """What a multi-worker step raises when a peer has died or cannot be reached."""
    import tensorflow as tf

    return (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
            tf.errors.DeadlineExceededError)


def lost_worker_message(error, configs) -> str:
    """Names the lost worker's error and how to resume: every worker again, same command."""
    from keras_transfer.run_records import RunDir

    text = getattr(error, "message", "") or str(error)
    grpc = re.search(r'grpc_message:"([^"]+)"', text)
    lines = [line for line in text.splitlines() if line.strip()]
    first_line = grpc.group(1) if grpc else (lines[-1] if lines else "no message")
    steps = [RunDir(c.run_dir).backup_step() for c in configs]
    resume = ("from its last backup (step " + ", ".join(str(s) for s in steps) + ")"
              if all(steps) else "from scratch (no backup yet)")
    return (f"a worker of this multi-worker run died or cannot be reached "
            f"({type(error).__name__}: {first_line}). Start every worker again with the same "
            f"command; training resumes {resume}.")


def run():
    """Console entry point (`keras-transfer`)."""
    logging.set_verbosity(logging.WARNING)
    config_lib.list_in_help()
    try:
        app.run(main, flags_parser=flag_errors.parser("", 2))
    except SystemExit as done:
        if FLAGS.is_parsed() and FLAGS.strategy == "multi_worker":
            raise  # the workers leave TensorFlow's coordination service together, at teardown
        process_exit.exit_now(done.code)  # every file of the run is written and closed


if __name__ == "__main__":
    run()
