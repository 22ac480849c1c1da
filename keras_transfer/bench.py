"""How fast this machine trains the project's nets: `python -m keras_transfer.bench`.

Prints training images/s of CaffeNet at 227 px and of the small model at 28 px (float32 and
mixed bfloat16), the split-group convolution against Keras `Conv2D(groups=2)`, the fused batch
normalisation against Keras' (resnet_small's step), CaffeNet's
achieved GFLOP/s as a fraction of a float32 matmul timed after each of its steps, and the input
pipeline's images/s alone (with --data_dir). A command, not a test: the figures depend on the
machine and on whatever else runs on it.

Training is timed on synthetic in-memory batches through the project's compiled train step
(steps.PackSteps, as `keras_transfer.main` trains) with its solver (solver.CaffeSGD: momentum,
weight decay, bias lr x2), after warm-up steps that trace it, so the figures are the model's
cost without the input pipeline. Each step is timed
on its own and the median step reported: on a shared machine a neighbour's burst slows a few
steps, not the figure. CaffeNet is timed at the paper's batch of 256 (flags/imagenet.flags)
and at 32, where fc6-fc8 and the update of their 58 M weights are memory-bound.
"""
import os
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from data_prep import layout, quiet_tensorflow
from data_prep.splits import split_dirname
from keras_transfer import naming

BENCHMARKS = ("matmul", "caffenet", "small", "groups", "batchnorm", "pipeline", "grid")
DEFAULT_BENCHMARKS = BENCHMARKS[:-1]  # the grid trains 37 nets several times: ask for it
# The project's speed goals: CaffeNet's float32 training GFLOP/s as a fraction of a float32
# matmul's on the same machine, and the input pipeline (cached epochs) over the small model's
# training rate, so that data never starves a net.
CAFFENET_GOAL = 0.70
PIPELINE_GOAL = 10
# The grid of small nets (the demo's) at this many times the nets per hour of a plain serial
# PyTorch loop training the same nets on the same cores, and the FLOP its nets compute
# (bench_grid.computed_flop) at this fraction of the float32 matmul rate.
GRID_GOAL = 4.0
GRID_MATMUL_GOAL = 0.65
_REPO = Path(__file__).resolve().parents[1]

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
_ONLY = flags.DEFINE_list("only", list(DEFAULT_BENCHMARKS),
                          f"Benchmarks to run, from {BENCHMARKS} (grid only when asked for).")
_GRID_WAYS = flags.DEFINE_list("grid_ways", ["packed", "one-per-process", "peer"],
                               "How to train the grid: packed (the launcher's default), "
                               "one-per-process (--pack=1), peer (the PyTorch loop).")
_GRID_FLAGFILE = flags.DEFINE_string("grid_flagfile", str(_REPO / "flags" / "fashion_mnist.flags"),
                                     "main's preset for the grid's nets.")
_GRID_DATA_DIR = flags.DEFINE_string("grid_data_dir", "data",
                                     "data_prep's output holding <dataset>/random_0/{A,B}.")
_GRID_DATASET = flags.DEFINE_string("grid_dataset", "fashion_mnist", "Dataset of the grid.")
_GRID_STEPS = flags.DEFINE_integer("grid_steps", 0, "Steps per net; 0: the preset's.")
_GRID_LAYERS = flags.DEFINE_list("grid_layers", [str(n) for n in naming.PAPER_N],
                                 "Values of n in the grid (default 1..7, the demo's 37 nets).")
_GRID_JOBS = flags.DEFINE_integer("grid_jobs", 0, "Processes at once (and the peer's threads); "
                                  "0: the number of cores.")
_GRID_KEEP = flags.DEFINE_string("grid_workdir", None, "Keep the grids' runs here (default: a "
                                 "temporary directory, left in place).")
_PEER_SCRIPT = flags.DEFINE_string("peer_script", None, "The plain-PyTorch grid to compare with "
                                   "(prints a JSON line per net), e.g. torch_fmnist_grid.py.")
_PEER_PYTHON = flags.DEFINE_string("peer_python", sys.executable, "A Python with torch.")
_FASHION_DIR = flags.DEFINE_string("fashion_dir", "/usr/share/datasets/fashion-mnist",
                                   "Fashion-MNIST IDX files, for the peer.")


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
    """Seconds of each of `steps` training steps of `model` on one repeated synthetic batch,
    through the project's own compiled step (steps.PackSteps, what `keras_transfer.main` runs)
    with its solver. `after_step()`, if given, runs after each step is timed."""
    import tensorflow as tf

    from keras_transfer import solver, steps as steps_lib
    input_shape = tuple(model.input.shape[1:])
    num_classes = model.output.shape[-1]
    rng = np.random.default_rng(0)
    images = rng.normal(scale=50.0, size=(batch_size, *input_shape)).astype("float32")
    labels = rng.integers(0, num_classes, batch_size).astype("int32")
    strategy = tf.distribute.get_strategy()
    batches = tf.data.Dataset.from_tensors((images, labels)).repeat()
    optimizer = solver.make_optimizer(0.001, lr_step=0, momentum=0.9, weight_decay=5e-4)
    optimizer.build(model.trainable_variables)
    pack = steps_lib.PackSteps(strategy, [model], [optimizer], global_batch=batch_size,
                               top_k=1, jit_compile=jit_compile)
    iterator = iter(batches)
    for _ in range(max(1, warmup_steps)):
        pack.train(iterator, 1)
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        pack.train(iterator, 1)  # returns the step's sums, so the step has run
        seconds.append(time.perf_counter() - start)
        if after_step is not None:
            after_step()
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


def batch_norm_step_times(input_size, batch_size, steps):
    """Median seconds per training step of resnet_small with layers.FusedBatchNormalization and
    with Keras' BatchNormalization, one right after the other."""
    from keras_transfer.models.resnet_small import resnet_small
    return {label: float(np.median(training_step_seconds(
                resnet_small(5, (input_size, input_size, 1), seed=0, fused_batch_norm=fused),
                batch_size, steps, _WARMUP.value, _XLA.value)))
            for label, fused in (("fused", True), ("keras", False))}


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
    dataset = data.build_dataset(
        half_dir, "train", data.InputSettings(batch_size=batch_size, training=True, seed=0),
        manifest=manifest)
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
    tf = quiet_tensorflow.import_tensorflow()
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

    if "batchnorm" in run:
        size = _SMALL_SIZE.value
        times = batch_norm_step_times(size, _SMALL_BATCH.value, 10 * steps)
        print(f"resnet_small {size}px train step, batch {_SMALL_BATCH.value}: "
              f"FusedBatchNormalization {times['fused'] * 1e3:.1f} ms, Keras BatchNormalization "
              f"{times['keras'] * 1e3:.1f} ms ({times['keras'] / times['fused']:.1f}x slower)")

    pipeline_rate = None
    if "pipeline" in run:
        print("input pipeline (train, no model):")
        rates = input_pipeline_images_per_sec(_DATA_DIR.value, _SMALL_BATCH.value, 10 * steps)
        if rates is not None:
            print(f"  first epoch (decoding) {rates[0]:.0f} images/s, later epochs "
                  f"{rates[1]:.0f} images/s, batch {_SMALL_BATCH.value}")
            pipeline_rate = rates[1]

    grid = None
    if "grid" in run:
        from keras_transfer import bench_grid
        grid_config_file = _GRID_FLAGFILE.value
        if not os.path.isfile(grid_config_file):
            raise app.UsageError(f"--grid_flagfile: {grid_config_file} does not exist")
        unknown_ways = sorted(set(_GRID_WAYS.value) - set(bench_grid.WAYS))
        if unknown_ways:
            raise app.UsageError(f"--grid_ways: unknown {unknown_ways}; choose from "
                                 f"{bench_grid.WAYS}")
        half = layout.half_dir(_GRID_DATA_DIR.value, _GRID_DATASET.value,
                               split_dirname("random:0"), "B")  # bench_grid.GRID_ARGS' split
        if not (half / layout.MANIFEST).is_file():
            raise app.UsageError(f"--grid_data_dir: {half} holds no prepared data; run "
                                 f"python -m data_prep --source={_GRID_DATASET.value} "
                                 f"--split=random:0 --out={_GRID_DATA_DIR.value}")
        cores = len(os.sched_getaffinity(0))
        try:
            layers = sorted({int(n) for n in _GRID_LAYERS.value})
        except ValueError:
            layers = []
        if not layers or not set(layers) <= set(naming.PAPER_N):
            raise app.UsageError(f"--grid_layers: values of n in 1..7, not "
                                 f"{','.join(_GRID_LAYERS.value)!r}")
        rate = matmul_gflops(_MATMUL_SIZE.value)
        print(f"matmul float32 {_MATMUL_SIZE.value}^2 before the grid: {rate:.1f} GFLOP/s")
        grid = bench_grid.run(_GRID_WAYS.value, flagfile=grid_config_file,
                              data_dir=_GRID_DATA_DIR.value, dataset=_GRID_DATASET.value,
                              steps=_GRID_STEPS.value, jobs=_GRID_JOBS.value or cores,
                              peer_script=_PEER_SCRIPT.value, peer_python=_PEER_PYTHON.value,
                              fashion_dir=_FASHION_DIR.value, keep=_GRID_KEEP.value,
                              layers=layers, matmul_gflops=rate)
        # On a shared machine one timing can catch a neighbour's load: the rate is timed again
        # after the grid and the higher of the two is the machine's (a conservative fraction).
        after = matmul_gflops(_MATMUL_SIZE.value)
        best = max(rate, after)
        print(f"matmul float32 {_MATMUL_SIZE.value}^2 after the grid: {after:.1f} GFLOP/s; "
              f"against the higher, {best:.1f}:", flush=True)
        for way, row in grid.items():
            if "gflops" in row:
                row["matmul_fraction"] = row["gflops"] / best
                print(f"  {way}: {row['gflops']:.0f} GFLOP/s = {row['matmul_fraction']:.0%} of "
                      f"the float32 matmul rate", flush=True)

    print_goals(fp32_fraction, small_fp32_rate, pipeline_rate, grid)


def print_goals(fp32_fraction, small_fp32_rate, pipeline_rate, grid=None):
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
    if grid and "packed" in grid and "peer" in grid:
        ratio = grid["packed"]["nets_per_hour"] / grid["peer"]["nets_per_hour"]
        verdict = "met" if ratio >= GRID_GOAL else "NOT met"
        print(f"goal: the demo's grid >= {GRID_GOAL}x the nets per hour of the plain PyTorch "
              f"loop: {verdict} ({ratio:.2f}x)")
    if grid and "matmul_fraction" in grid.get("packed", {}):
        fraction = grid["packed"]["matmul_fraction"]
        verdict = "met" if fraction >= GRID_MATMUL_GOAL else "NOT met"
        print(f"goal: the demo's grid computes at >= {GRID_MATMUL_GOAL:.0%} of the float32 "
              f"matmul rate: {verdict} ({fraction:.0%})")


if __name__ == "__main__":
    app.run(main)
