"""The compiled training and evaluation steps of a pack: one or several nets on one input stream.

The nets of a pack share a target half, a batch size and a solver, and nothing else: each has
its own weights, optimizer (momentum, step counter), initialisation and dropout seeds. Every
batch goes through all of them inside one traced function, so a pack pays one input pipeline,
one trace and one Python round trip per call for all its nets, and TensorFlow runs the nets'
many small ops side by side. No variable is shared, so each net's gradients and updates are the
ones it would get trained alone (tests/test_pack.py checks packed == separate bit for bit).

One call of `train` runs many steps in a `tf.while_loop` (Keras' `steps_per_execution`): for a
small net Python's per-step overhead would otherwise cost as much as the step. The structure is
Keras' own `model.fit` step: the per-replica step runs under `strategy.run`, optionally XLA
compiled, and the optimizer all-reduces the gradients across replicas.
"""
from __future__ import annotations

import time

import keras
import tensorflow as tf

# Per net and call: the summed per-example loss and the number of correct top-1 predictions.
TRAIN_SUMS = ("loss", "top1")
# Per net and evaluation: summed loss, correct top-1, correct top-k, and the image count.
EVAL_SUMS = ("loss", "top1", "top5", "count")


class PackSteps:
    """Compiled train and evaluation functions for `models`, each trained by its optimizer.

    `global_batch` is the batch size summed over replicas; losses are summed per replica and
    divided by it, so the all-reduced gradient is the global batch's mean, as in `model.fit`.
    Batches hold one image tensor for all nets, or, given `inputs` (per model an index), a tuple
    of image tensors of which each model takes its own (the same images, centred on another
    mean image: see data.build_dataset).
    """

    def __init__(self, strategy, models, optimizers, *, global_batch: int, top_k: int | None,
                 jit_compile: bool, inputs: list[int] | None = None):
        self.strategy = strategy
        self.models = list(models)
        self.optimizers = list(optimizers)
        self.inputs = inputs
        self.global_batch = global_batch
        self.top_k = top_k
        self.jit_compile = jit_compile
        self._one_train_step = tf.function(self._distributed_train_step,
                                           jit_compile=jit_compile)
        self._one_eval_step = tf.function(self._distributed_eval_step, jit_compile=jit_compile)
        self._train = tf.function(self._train_loop)
        self._evaluate = None

    # ------------------------------------------------------------------ per replica

    def _replica_train_step(self, images, labels):
        sums = []
        for i, (model, optimizer) in enumerate(zip(self.models, self.optimizers)):
            with tf.GradientTape() as tape:
                probs = model(self._input(images, i), training=True)
                per_example = keras.losses.sparse_categorical_crossentropy(labels, probs)
                loss = tf.reduce_sum(per_example) / self.global_batch
                scaled = optimizer.scale_loss(loss)
            variables = model.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables))
            sums.append(tf.stack([tf.reduce_sum(per_example), _correct(labels, probs, 1)]))
        return tf.stack(sums)

    def _replica_eval_step(self, images, labels):
        def sums():
            count = tf.cast(tf.shape(labels)[0], tf.float32)
            rows = []
            for i, model in enumerate(self.models):
                probs = model(self._input(images, i), training=False)
                per_example = keras.losses.sparse_categorical_crossentropy(labels, probs)
                top_k = _correct(labels, probs, self.top_k) if self.top_k else tf.zeros([])
                rows.append(tf.stack([tf.reduce_sum(per_example), _correct(labels, probs, 1),
                                      top_k, count]))
            return tf.stack(rows)
        # A replica can get none of an evaluation's last, partial batch; some layers (grouped
        # convolutions, LRN) cannot run on an empty batch, and it adds nothing to the sums.
        return tf.cond(tf.shape(labels)[0] > 0, sums,
                       lambda: tf.zeros([len(self.models), len(EVAL_SUMS)]))

    def _input(self, images, i: int):
        return images if self.inputs is None else images[self.inputs[i]]

    # ------------------------------------------------------------------ across replicas

    def _distributed_train_step(self, batch):
        per_replica = self.strategy.run(self._replica_train_step, args=batch)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def _distributed_eval_step(self, batch):
        per_replica = self.strategy.run(self._replica_eval_step, args=batch)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def _train_loop(self, iterator, steps):
        totals = tf.zeros([len(self.models), len(TRAIN_SUMS)])
        for _ in tf.range(steps):
            totals += self._one_train_step(next(iterator))
        return totals

    # ------------------------------------------------------------------ public

    def trace(self, iterator, val_dataset) -> float:
        """Traces both functions without running a step; returns the seconds it took."""
        started = time.perf_counter()
        self._train.get_concrete_function(iterator, tf.constant(1))
        self._evaluate_function(val_dataset).get_concrete_function()
        return time.perf_counter() - started

    def train(self, iterator, steps: int) -> list[dict]:
        """Runs `steps` training steps; per net the summed loss and correct top-1 over them."""
        totals = self._train(iterator, tf.constant(steps)).numpy()
        return [dict(zip(TRAIN_SUMS, map(float, row))) for row in totals]

    def evaluate(self, val_dataset) -> list[dict]:
        """One pass over `val_dataset`; per net mean loss, top-1 and top-k (None without a
        top_k), and the count."""
        totals = self._evaluate_function(val_dataset)().numpy()
        results = []
        for loss, top1, top5, count in totals:
            count = max(float(count), 1.0)
            results.append({"loss": float(loss) / count, "top1": float(top1) / count,
                            "top5": float(top5) / count if self.top_k else None,
                            "count": int(count)})
        return results

    def _evaluate_function(self, val_dataset):
        if self._evaluate is None:
            def evaluate():
                totals = tf.zeros([len(self.models), len(EVAL_SUMS)])
                for batch in val_dataset:
                    totals += self._one_eval_step(batch)
                return totals
            self._evaluate = tf.function(evaluate)
        return self._evaluate


def _correct(labels, probs, k: int):
    """How many of the batch's labels are among the k highest probabilities (Keras' top-k)."""
    hits = tf.math.in_top_k(tf.cast(labels, tf.int32), tf.cast(probs, tf.float32), k)
    return tf.reduce_sum(tf.cast(hits, tf.float32))
