"""The process-wide TensorFlow state a run sets before it builds its models (the global random
seed, op determinism, the precision policy, whether the train step is compiled with XLA), and
the process's place in a multi-worker job (only the chief writes run directories)."""
from __future__ import annotations

import logging

import keras
import tensorflow as tf

from keras_transfer.config import Config

log = logging.getLogger(__name__)

PRECISION_POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16",
                      "float16": "mixed_float16"}


def configure(config: Config) -> bool:
    """Sets the seed, op determinism and precision policy `config` asks for; returns whether
    the train step is compiled with XLA (--xla, unless --deterministic turns it off)."""
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    jit_compile = bool(config.xla) and not config.deterministic
    if config.xla and not jit_compile:
        log.warning("--deterministic disables XLA: training without jit_compile")
    keras.mixed_precision.set_global_policy(PRECISION_POLICIES[config.mixed_precision])
    return jit_compile


def is_chief(strategy) -> bool:
    """Whether this process writes the run directories: the chief of a multi-worker job (or its
    worker 0, in a cluster without a chief), or the only process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief
