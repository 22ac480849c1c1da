"""Trains one net of the transfer grid.

    python -m keras_transfer.main --source=A --n=5 --finetune          # A5B+ on Fashion-MNIST
    python -m keras_transfer.main --flagfile=flags/imagenet.flags --source=none --target=A

Parses the flags, builds the config and the distribution strategy, and calls `train.run`.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

from keras_transfer import config as config_lib  # noqa: E402

config_lib.define_flags()
FLAGS = flags.FLAGS


def make_strategy(name: str):
    """MirroredStrategy over local devices, MultiWorkerMirroredStrategy across machines
    (TF_CONFIG, or a SLURM allocation), or one device."""
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if os.environ.get("SLURM_JOB_ID"):
        resolver = tf.distribute.cluster_resolver.SlurmClusterResolver()
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    raise config_lib.ConfigError(
        "--strategy=multi_worker needs a cluster: set TF_CONFIG, or run inside a SLURM "
        "allocation (srun). On one machine use --strategy=mirrored.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import tensorflow as tf

    from keras_transfer import backup, data, train, transfer

    config = config_lib.from_flags(FLAGS)
    if config.threads:
        tf.config.threading.set_intra_op_parallelism_threads(config.threads)
        tf.config.threading.set_inter_op_parallelism_threads(config.threads)
    try:
        strategy = make_strategy(config.strategy)
        train.run(config, strategy)
    except (train.RunError, config_lib.ConfigError, data.DataError, transfer.TransferError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except backup.Preempted as e:
        print(f"{config.run}: {e}", file=sys.stderr)
        sys.exit(backup.EXIT_PREEMPTED)
    except OSError as e:  # e.g. the disk filled up; result.json is written last, so none exists
        print(f"error: {config.run} stopped: {e}. Free space or fix the path, then run the same "
              "command again to resume from the last backup.", file=sys.stderr)
        sys.exit(1)


def run():
    """Console entry point (`keras-transfer`)."""
    logging.set_verbosity(logging.WARNING)
    app.run(main)


if __name__ == "__main__":
    run()
