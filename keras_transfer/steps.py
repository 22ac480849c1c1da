"""The compiled training and evaluation steps of a pack: one or several nets on one input stream.

The nets of a pack share a target half, a batch size and a solver, and nothing else: each has
its own weights, optimizer (momentum, step counter), initialisation and dropout seeds. Every
batch goes through all of them inside one traced function, so a pack pays one input pipeline,
one trace and one Python round trip per call for all its nets, and TensorFlow runs the nets'
many small ops side by side. No variable is shared, so each net's gradients and updates are the
ones it would get trained alone (tests/test_pack.py checks packed == separate bit for bit).

Frozen work is done once: packmates whose bottom blocks are frozen and hold the same weights
(AnB for n = 1..7 copy the same layers of baseA) share those blocks' forward pass. Each chain of
such blocks is computed once per batch, each net's deeper frozen blocks from the shallower
ones' output, and each net runs only its own layers above; no gradient is taken below a net's
lowest trainable layer. The shared blocks are the same layers' calls on the same values, so
every net still gets the outputs and gradients it would get alone.

One call of `train` runs many steps in a `tf.while_loop` (Keras' `steps_per_execution`): for a
small net Python's per-step overhead would otherwise cost as much as the step. The structure is
Keras' own `model.fit` step: the per-replica step runs under `strategy.run`, optionally XLA
compiled, and the optimizer all-reduces the gradients across replicas.
"""
from __future__ import annotations

import dataclasses
import time

import keras
import tensorflow as tf

# Per net and call: the summed per-example loss and the number of correct top-1 predictions.
TRAIN_SUMS = ("loss", "top1")
# Per net and evaluation: summed loss, correct top-1, correct top-k, and the image count.
EVAL_SUMS = ("loss", "top1", "top5", "count")


@dataclasses.dataclass(frozen=True)
class FrozenPrefix:
    """A net's bottom blocks whose output depends on the input alone (transfer.frozen_prefix):
    per block, bottom to top, its output layer's name and its weights' sha256. Packmates whose
    digests agree share the computation."""
    outputs: tuple
    digests: tuple


class PackSteps:
    """Compiled train and evaluation functions for `models`, each trained by its optimizer.

    `global_batch` is the batch size summed over replicas; losses are summed per replica and
    divided by it, so the all-reduced gradient is the global batch's mean, as in `model.fit`.
    Batches hold one image tensor for all nets, or, given `inputs` (per model an index), a tuple
    of image tensors of which each model takes its own (the same images, centred on another
    mean image: see data.InputSettings.means). `frozen` gives, per model, its FrozenPrefix (None or
    an empty one: the model runs whole).
    """

    def __init__(self, strategy, models, optimizers, *, global_batch: int, top_k: int | None,
                 jit_compile: bool, inputs: list[int] | None = None, frozen: list | None = None):
        self.strategy = strategy
        self.models = list(models)
        self.optimizers = list(optimizers)
        self.inputs = inputs
        self._plan_shared_work(frozen or [None] * len(self.models))
        self.global_batch = global_batch
        self.top_k = top_k
        self.jit_compile = jit_compile
        self._one_train_step = tf.function(self._distributed_train_step,
                                           jit_compile=jit_compile)
        self._one_eval_step = tf.function(self._distributed_eval_step, jit_compile=jit_compile)
        self._train = tf.function(self._train_loop)
        self._evaluate = None

    # ------------------------------------------------------------------ shared frozen work

    def _plan_shared_work(self, frozen) -> None:
        """Splits each model with a frozen prefix into segments of shared frozen blocks and a
        tail of its own. A segment is keyed by (input, digests of every block up to its top)
        and starts where the deepest shorter prefix with the same blocks ends."""
        self._segments = {}  # key -> (key of the segment below or None, Model)
        self._tails = [None] * len(self.models)  # per model: (segment key, Model) or None
        depth = lambda i: len(frozen[i].outputs) if frozen[i] else 0
        for i in sorted(range(len(self.models)), key=depth):  # shallower prefixes first
            if not depth(i):
                continue
            model, prefix, source = self.models[i], frozen[i], self._input_index(i)
            key = (source, prefix.digests)
            top = model.get_layer(prefix.outputs[-1]).output
            start = max((d for d in range(1, depth(i))
                         if (source, prefix.digests[:d]) in self._segments), default=0)
            below = (source, prefix.digests[:start]) if start else None
            bottom = model.get_layer(prefix.outputs[start - 1]).output if start else model.input
            try:
                tail = keras.Model(top, model.output)
                segment = None if key in self._segments else keras.Model(bottom, top)
            except ValueError:  # a connection around the cut: this model runs whole
                continue
            if segment is not None:
                self._segments[key] = (below, segment)
            self._tails[i] = (key, tail)

    def shared_work(self) -> list[tuple[str, list[int]]]:
        """Per frozen segment computed once for several models: the name of its top layer and
        the models (indices) that use it, bottom to top."""
        users = {key: [] for key in self._segments}
        for i, tail in enumerate(self._tails):
            key = tail[0] if tail else None
            while key is not None:
                users[key].append(i)
                key = self._segments[key][0]
        return [(segment.layers[-1].name, sorted(users[key]))
                for key, (_, segment) in self._segments.items() if len(users[key]) > 1]

    def _forward(self, images, training: bool) -> list:
        """Per model, a function of no arguments that returns its outputs for `images`: its
        tail on the shared frozen blocks' output (computed here, once), or the whole model."""
        shared = {}
        for key, (below, segment) in self._segments.items():  # planned bottom-up
            inputs = self._input_images(images, key[0]) if below is None else shared[below]
            shared[key] = segment(inputs, training=training)
        calls = []
        for i, model in enumerate(self.models):
            if self._tails[i] is None:
                calls.append(lambda m=model, x=self._input(images, i): m(x, training=training))
            else:
                key, tail = self._tails[i]
                calls.append(lambda t=tail, x=shared[key]: t(x, training=training))
        return calls

    # ------------------------------------------------------------------ per replica

    def _replica_train_step(self, images, labels):
        sums = []
        forward = self._forward(images, training=True)  # outside the tapes: nothing to learn
        for i, (model, optimizer) in enumerate(zip(self.models, self.optimizers)):
            with tf.GradientTape() as tape:
                probs = forward[i]()
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
            forward = self._forward(images, training=False)
            for i in range(len(self.models)):
                probs = forward[i]()
                per_example = keras.losses.sparse_categorical_crossentropy(labels, probs)
                top_k = _correct(labels, probs, self.top_k) if self.top_k else tf.zeros([])
                rows.append(tf.stack([tf.reduce_sum(per_example), _correct(labels, probs, 1),
                                      top_k, count]))
            return tf.stack(rows)
        # A replica can get none of an evaluation's last, partial batch; some layers (grouped
        # convolutions, LRN) cannot run on an empty batch, and it adds nothing to the sums.
        return tf.cond(tf.shape(labels)[0] > 0, sums,
                       lambda: tf.zeros([len(self.models), len(EVAL_SUMS)]))

    def _input_index(self, i: int) -> int:
        return 0 if self.inputs is None else self.inputs[i]

    def _input_images(self, images, index: int):
        return images if self.inputs is None else images[index]

    def _input(self, images, i: int):
        return self._input_images(images, self._input_index(i))

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
