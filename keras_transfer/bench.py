"""How fast this machine trains the project's nets: `python -m keras_transfer.bench`.

Prints training images/s of CaffeNet at 227 px and of the small model at 28 px (float32 and
mixed bfloat16), the split-group convolution against Keras `Conv2D(groups=2)`, CaffeNet's
achieved GFLOP/s as a fraction of a float32 matmul timed after each of its steps, and the input
pipeline's images/s alone (with --data_dir). A command, not a test: the figures depend on the
machine and on whatever else runs on it.

Training is timed on synthetic in-memory batches through `model.fit` with the project's solver
(solver.CaffeSGD: momentum, weight decay, bias lr x2), after a warm-up fit that traces the train
function, so the figures are the model's cost without the input pipeline. Each step is timed
on its own and the median step reported: on a shared machine a neighbour's burst slows a few
steps, not the figure. CaffeNet is timed at the paper's batch of 256 (flags/imagenet.flags)
and at 32, where fc6-fc8 and the update of their 58 M weights are memory-bound.
"""
import time

import numpy as np
from absl import app, flags

BENCHMARKS = ("matmul", "caffenet", "small", "groups", "pipeline")
# The project's speed goals: CaffeNet's float32 training GFLOP/s as a fraction of a float32
# matmul's on the same machine, and the input pipeline (cached epochs) over the small model's
# training rate, so that data never starves a net.
CAFFENET_GOAL = 0.70
PIPELINE_GOAL = 10

_STEPS = flags.DEFINE_integer("steps", 5, "Timed training steps per CaffeNet measurement; the "
                              "small model and the group comparison time 10x as many.",
                              lower_bound=1)
_WARMUP = flags.DEFINE_integer("warmup_steps", 2, "Untimed steps first (tracing, allocation).")
_CAFFENET_BATCHES = flags.DEFINE_list("caffenet_batch", ["256", "32"],
                                      "CaffeNet batch sizes to time (the paper's is 256); the "
                                      "group comparison uses the smallest.")
_SMALL_BATCH = flags.DEFINE_integer("small_batch", 256, "Small-model batch size.")
_SMALL_SIZE = flags.DEFINE_integer("small_size", 28, "Small-model input size (px).")
_XLA = flags.DEFINE_bool("xla", False, "Compile the train functions with jit_compile=True.")
_THREADS = flags.DEFINE_integer("threads", 0, "Intra-op threads (0 = TensorFlow's default, "
                                "all cores); --threads=1 is one net of the parallel demo.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 2048, "Side of the float32 matmul reference.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "A prepared half (the directory holding "
                                "manifest.json) for the input-pipeline benchmark.")
_ONLY = flags.DEFINE_list("only", list(BENCHMARKS), f"Benchmarks to run, from {BENCHMARKS}.")


def matmul_gflops(size, repeats=10):
    """float32 GFLOP/s of a size x size matmul, the machine's practical dense peak: the median
    of `repeats` individually timed products, the statistic the training figures use too."""
    import tensorflow as tf
    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    for _ in range(2):
        tf.linalg.matmul(a, b).numpy()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        seconds.append(time.perf_counter() - start)
    return 2.0 * size ** 3 / float(np.median(seconds)) / 1e9


def cpu_summary():
    """'<model name>, bfloat16 native|emulated' from /proc/cpuinfo, or '' where it is absent.

    Mixed bfloat16 only pays on CPUs with bf16 instructions (AVX512-BF16, AMX); elsewhere
    oneDNN emulates it and it trains several times slower than float32.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            lines = cpuinfo.read().splitlines()
    except OSError:
        return ""
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    cpu_flags = set(fields.get("flags", "").split())
    native = cpu_flags & {"avx512_bf16", "amx_bf16"}
    bf16 = f"bfloat16 native ({', '.join(sorted(native))})" if native else "bfloat16 emulated"
    return f"{fields.get('model name', 'unknown CPU')}, {bf16}"


def training_step_seconds(model, batch_size, steps, warmup_steps, jit_compile, after_step=None):
    """Seconds of each of `steps` training steps of `model.fit` with the project's solver on
    one repeated synthetic batch. `after_step()`, if given, runs after each step is timed."""
    import keras
    import tensorflow as tf

    from keras_transfer import solver
    input_shape = tuple(model.input.shape[1:])
    num_classes = model.output.shape[-1]
    rng = np.random.default_rng(0)
    images = rng.normal(scale=50.0, size=(batch_size, *input_shape)).astype("float32")
    labels = rng.integers(0, num_classes, batch_size)
    batches = tf.data.Dataset.from_tensors((images, labels)).repeat()
    model.compile(solver.make_optimizer(0.001, lr_step=0, momentum=0.9, weight_decay=5e-4),
                  keras.losses.SparseCategoricalCrossentropy(), jit_compile=jit_compile)
    model.fit(batches, steps_per_epoch=max(1, warmup_steps), epochs=1, verbose=0,
              shuffle=False)
    # Each step returns once its tf.function has run, so batch begin/end bracket one step.
    starts, seconds = [], []

    def step_end(batch, logs):
        seconds.append(time.perf_counter() - starts[-1])
        if after_step is not None:
            after_step()

    timer = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: starts.append(time.perf_counter()),
        on_train_batch_end=step_end)
    model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False,
              callbacks=[timer])
    return seconds


def model_step_seconds(name, num_classes, input_shape, batch_size, steps, precision,
                       after_step=None):
    """(seconds of each training step, forward multiply-adds per image) of a models.build net."""
    import keras

    from keras_transfer import models
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        model = models.build(name, num_classes, input_shape, seed=0)
        seconds = training_step_seconds(model, batch_size, steps, _WARMUP.value, _XLA.value,
                                        after_step)
        return seconds, models.multiply_adds(model)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def group_conv_step_times(batch_size, steps):
    """Seconds per training step of CaffeNet's conv2 as SplitGroupConv2D and Conv2D(groups=2)."""
    import keras

    from keras_transfer.layers import SplitGroupConv2D

    def conv2_net(conv):
        inputs = keras.Input((27, 27, 96))
        x = conv(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))

    common = dict(filters=256, kernel_size=5, padding="same", activation="relu", groups=2)
    times = {}
    for label, conv in (("SplitGroupConv2D", SplitGroupConv2D(**common)),
                        ("Conv2D(groups=2)", keras.layers.Conv2D(**common))):
        times[label] = float(np.median(training_step_seconds(
            conv2_net(conv), batch_size, steps, _WARMUP.value, _XLA.value)))
    return times


def input_pipeline_images_per_sec(half_dir, batch_size, steps):
    """(first epoch, later epochs) images/s of the training input pipeline alone, or None.

    The first epoch decodes every image; a half small enough to cache is served from memory
    after that, which is the rate a training run sees for all but its first epoch.
    """
    from keras_transfer import data
    if not half_dir:
        print("  skipped: pass --data_dir=<a prepared half directory with manifest.json>")
        return None
    try:
        manifest = data.load_half(half_dir)
    except data.DataError as error:
        raise app.UsageError(f"--data_dir: {error}") from None
    dataset = data.build_dataset(half_dir, "train", batch_size=batch_size, training=True,
                                 seed=0, manifest=manifest)
    epoch = max(1, manifest["counts"]["train"] // batch_size)
    iterator = iter(dataset)

    def rate(batches):
        start = time.perf_counter()
        for _ in range(batches):
            images, _ = next(iterator)
        images.numpy()
        return batches * batch_size / (time.perf_counter() - start)

    return rate(epoch), rate(steps)


def main(argv):
    del argv
    import tensorflow as tf
    if _THREADS.value:
        tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
        tf.config.threading.set_inter_op_parallelism_threads(_THREADS.value)
    unknown = sorted(set(_ONLY.value) - set(BENCHMARKS))
    if unknown:
        raise app.UsageError(f"--only: unknown benchmarks {unknown}; choose from {BENCHMARKS}")
    run = set(_ONLY.value)
    try:
        caffenet_batches = [int(b) for b in _CAFFENET_BATCHES.value]
    except ValueError:
        caffenet_batches = []
    if not caffenet_batches or min(caffenet_batches) < 1:
        raise app.UsageError(f"--caffenet_batch: expected positive integers, got "
                             f"{','.join(_CAFFENET_BATCHES.value)!r}")
    steps = _STEPS.value
    print(f"keras_transfer.bench: TF {tf.__version__}, intra-op threads "
          f"{_THREADS.value or 'default'}, jit_compile={_XLA.value}")
    cpu = cpu_summary()
    if cpu:
        print(f"CPU: {cpu}")

    fp32_fraction = {}  # by batch size: median over steps of CaffeNet fp32 GFLOP/s / matmul
    small_fp32_rate = None
    if "matmul" in run:
        print(f"matmul float32 {_MATMUL_SIZE.value}^2: {matmul_gflops(_MATMUL_SIZE.value):.1f} "
              f"GFLOP/s")

    if "caffenet" in run:
        for batch_size in caffenet_batches:
            for precision in ("float32", "bfloat16"):
                # A matmul is timed right after every CaffeNet step and each step compared with
                # its own: on a shared machine the load of the moment moves both alike.
                matmuls = []
                seconds, macs = model_step_seconds(
                    "caffenet", 1000, (227, 227, 3), batch_size, steps, precision,
                    after_step=lambda: matmuls.append(matmul_gflops(_MATMUL_SIZE.value, 3)))
                flops = batch_size * 3 * 2 * macs  # training = 3x forward, 2 FLOPs per MAC
                fraction = float(np.median([flops / s / 1e9 / m
                                            for s, m in zip(seconds, matmuls)]))
                step = float(np.median(seconds))
                if precision == "float32":
                    fp32_fraction[batch_size] = fraction
                print(f"caffenet 227px {precision:8s} batch {batch_size:3d}: "
                      f"{batch_size / step:.1f} images/s, {flops / step / 1e9:.1f} GFLOP/s = "
                      f"{fraction:.0%} of matmul {float(np.median(matmuls)):.1f} GFLOP/s "
                      f"({macs / 1e9:.3f} G multiply-adds/image forward)", flush=True)

    if "small" in run:
        size = _SMALL_SIZE.value
        for precision in ("float32", "bfloat16"):
            seconds, macs = model_step_seconds("small", 5, (size, size, 1), _SMALL_BATCH.value,
                                               10 * steps, precision)
            rate = _SMALL_BATCH.value / float(np.median(seconds))
            if precision == "float32":
                small_fp32_rate = rate
            print(f"small {size}px {precision:8s} batch {_SMALL_BATCH.value}: "
                  f"{rate:.0f} images/s ({macs / 1e6:.2f} M multiply-adds/image forward)")

    if "groups" in run:
        times = group_conv_step_times(min(caffenet_batches), 2 * steps)
        split, grouped = times["SplitGroupConv2D"], times["Conv2D(groups=2)"]
        print(f"caffenet conv2 train step, batch {min(caffenet_batches)}: SplitGroupConv2D "
              f"{split * 1e3:.1f} ms, Conv2D(groups=2) {grouped * 1e3:.1f} ms "
              f"({grouped / split:.1f}x slower)")

    pipeline_rate = None
    if "pipeline" in run:
        print("input pipeline (train, no model):")
        rates = input_pipeline_images_per_sec(_DATA_DIR.value, _SMALL_BATCH.value, 10 * steps)
        if rates is not None:
            print(f"  first epoch (decoding) {rates[0]:.0f} images/s, later epochs "
                  f"{rates[1]:.0f} images/s, batch {_SMALL_BATCH.value}")
            pipeline_rate = rates[1]

    print_goals(fp32_fraction, small_fp32_rate, pipeline_rate)


def print_goals(fp32_fraction, small_fp32_rate, pipeline_rate):
    """The benchmark's two goals, for whichever figures this run measured."""
    if fp32_fraction:
        batch = max(fp32_fraction)  # the largest batch: the paper's 256 by default
        verdict = "met" if fp32_fraction[batch] >= CAFFENET_GOAL else "NOT met"
        print(f"goal: caffenet float32 training >= {CAFFENET_GOAL:.0%} of matmul: {verdict} "
              f"at batch {batch} ({fp32_fraction[batch]:.0%})")
    if small_fp32_rate and pipeline_rate:
        ratio = pipeline_rate / small_fp32_rate
        verdict = "met" if ratio >= PIPELINE_GOAL else "NOT met"
        print(f"goal: input pipeline >= {PIPELINE_GOAL}x the small model's float32 training "
              f"rate: {verdict} ({ratio:.0f}x)")


if __name__ == "__main__":
    app.run(main)
