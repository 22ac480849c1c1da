"""Linear CKA of every cut point of one trained net against every cut point of another net of the
same model, on the validation images of one prepared half. A cut point's representation is the
output of its last layer (`CutPoint.output`: conv1..fc7 themselves for CaffeNet, a block's
output for a ResNet).

Both nets read the images in minibatches with their own crop and input scale but the same
examples in the same order; every pair of batches is checked, and a difference in order or count
is refused. CKA is accumulated over the minibatches (unbiased HSIC_1, Nguyen et al. 2021; see
`cka`), so memory is one batch's activations and Gram matrices. Outputs: similarity.json,
similarity.png (the cut point x cut point heatmap) and TensorBoard events, in a folder written
in full beside its place and then renamed into it.
"""
from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from data_prep.atomic import staged_directory, write_json_atomic
from keras_transfer import data, models
from keras_transfer.analyze import cka
from keras_transfer.analyze.trained_nets import (AnalysisError, analysis_dir, common_architecture,
                                                 grid_workdir, load_model, open_run)
from keras_transfer.outputs import finite, fmt, png_bytes, pyplot

DEFAULT_BATCH_SIZE = 256
# Images of the two streams are compared in 0-255 pixel units after undoing each net's scale.
_PIXEL_TOLERANCE = 1e-2


class SampleOrderError(AnalysisError):
    """The two nets would not see the same examples in the same order."""


# --------------------------------------------------------------------------------------------
# Streaming both nets over the same examples
# --------------------------------------------------------------------------------------------

def gram_function(model: keras.Model, cut_points):
    """images -> one (b, b) Gram matrix per cut point of the features its output layer gives,
    centred over the batch first (exact for HSIC, see `cka`; keeps float32 accurate for
    all-positive ReLU outputs). Conv outputs are flattened to height x width x channels
    features per example."""
    outputs = [model.get_layer(cut.output).output for cut in cut_points]
    extractor = keras.Model(model.inputs, outputs, name=f"{model.name}_features")

    @tf.function(reduce_retracing=True)
    def grams(images):
        features = extractor(images, training=False)
        if not isinstance(features, (list, tuple)):
            features = [features]
        result = []
        for x in features:
            x = tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])
            x = x - tf.reduce_mean(x, axis=0, keepdims=True)
            result.append(tf.matmul(x, x, transpose_b=True))
        return result

    return grams


def check_same_examples(index: int, batch_a, batch_b, scale_a: float, scale_b: float) -> None:
    """Refuses a pair of batches that are not the same examples in the same order: same count,
    same labels, and the same pixels on the central window both crops share."""
    (images_a, labels_a), (images_b, labels_b) = batch_a, batch_b
    where = f"validation batch {index}"
    fix = ("Both nets must read the same images in the same order; evaluation streams are "
           "deterministic (data.build_dataset with training=False), so check that the data "
           "were not re-prepared or shuffled in between.")
    if len(labels_a) != len(labels_b):
        raise SampleOrderError(f"{where}: net A gets {len(labels_a)} examples and net B "
                               f"{len(labels_b)}. {fix}")
    if not np.array_equal(labels_a, labels_b):
        raise SampleOrderError(f"{where}: the two nets' examples differ in order (labels "
                               f"{_digest(labels_a)} vs {_digest(labels_b)}). {fix}")
    window_a, window_b = _common_centre(np.asarray(images_a), np.asarray(images_b))
    if not np.allclose(window_a / scale_a, window_b / scale_b, rtol=0, atol=_PIXEL_TOLERANCE):
        raise SampleOrderError(f"{where}: same labels but different images. {fix}")


def paired_batches(stream_a, stream_b, scales, max_batches=None):
    """(generator of (images_a, images_b), stats): each batch of the two streams, checked by
    `check_same_examples`. Batches of another size than the first (the last one) and batches
    beyond `max_batches` are checked but not yielded, since minibatch CKA averages batches of
    one size; `stats` counts batches used and examples left out once the generator is spent.
    """
    stats = {"batches": 0, "batch_size": None, "dropped": 0}

    def generate():
        for index, (a, b) in enumerate(itertools.zip_longest(stream_a, stream_b)):
            if a is None or b is None:
                raise SampleOrderError(
                    f"net {'A' if a is None else 'B'}'s stream ends after {index} batches and "
                    "the other's goes on: the two nets would see different numbers of examples.")
            check_same_examples(index, a, b, *scales)
            size = len(a[1])
            if stats["batch_size"] is None:
                stats["batch_size"] = size
            if size != stats["batch_size"] or (max_batches is not None
                                               and stats["batches"] >= max_batches):
                stats["dropped"] += size
                continue
            stats["batches"] += 1
            yield a[0], b[0]

    return generate(), stats


def similarity(run_a, run_b, half_dir, *, layers=None, batch_size=DEFAULT_BATCH_SIZE,
               max_examples=None) -> dict:
    """Minibatch linear CKA of every cut point of A against every cut point of B on the
    validation images of `half_dir`; the contents of similarity.json. `layers` names the cut
    points compared, all of the nets' model's if None; A and B must be nets of one model."""
    if batch_size < 2 * cka.MIN_EXAMPLES_UNBIASED:
        raise AnalysisError(f"--batch_size={batch_size} is too small for the unbiased HSIC; use "
                            f"at least {2 * cka.MIN_EXAMPLES_UNBIASED} (default "
                            f"{DEFAULT_BATCH_SIZE}).")
    max_batches = None
    if max_examples is not None:
        max_batches = max_examples // batch_size
        if max_batches < 1:
            raise AnalysisError(f"--max_examples={max_examples} is less than one batch of "
                                f"{batch_size}; raise it or lower --batch_size.")
    net_a, net_b = open_run(run_a), open_run(run_b)
    cut_points = select_cut_points(common_architecture(net_a, net_b), layers)
    layers = [cut.name for cut in cut_points]
    try:
        manifest = data.load_half(half_dir)
    except data.DataError as e:
        raise AnalysisError(f"--data {half_dir}: {e}") from e
    image_shape = manifest["image_shape"]
    available = manifest["counts"]["validation"]
    if available < batch_size:
        raise AnalysisError(f"{half_dir} has {available} validation images, fewer than one "
                            f"batch of {batch_size}; lower --batch_size.")

    nets = (net_a, net_b)
    grams, streams, scales = [], [], []
    for net in nets:
        grams.append(gram_function(load_model(net, image_shape), cut_points))
        settings = data.InputSettings(batch_size=batch_size, training=False,
                                      crop=net.input_shape(image_shape)[0],
                                      model_name=net.model_name)
        streams.append(data.build_dataset(half_dir, "validation", settings,
                                          manifest=manifest).as_numpy_iterator())
        scales.append(data.input_scale(net.model_name))
    pairs, stats = paired_batches(*streams, scales, max_batches)
    accumulator = cka.MinibatchCKA(len(layers), len(layers))
    for images_a, images_b in pairs:
        accumulator.update([g.numpy() for g in grams[0](images_a)],
                           [g.numpy() for g in grams[1](images_b)])
    if not accumulator.batches:
        raise AnalysisError(f"no full batch of {batch_size} validation images in {half_dir}")
    unbiased, biased = accumulator.result("unbiased"), accumulator.result("biased")
    return {
        "a": net_a.describe(image_shape),
        "b": net_b.describe(image_shape),
        "data": {"half_dir": str(half_dir), "dataset": manifest["dataset"],
                 "split": manifest["split"]["spec"], "half": manifest["half"],
                 "subset": "validation", "mean_subtracted": "the half's own (mean.npy)"},
        "estimator": "linear CKA, unbiased HSIC_1 averaged over minibatches (Nguyen et al. 2021)",
        "batch_size": accumulator.batch_size,
        "batches": accumulator.batches,
        "examples": accumulator.examples,
        "examples_left_out": stats["dropped"],
        "layers": layers,
        "cka": {name: finite(unbiased[i, i]) for i, name in enumerate(layers)},
        "cka_biased": {name: finite(biased[i, i]) for i, name in enumerate(layers)},
        "matrix": finite(unbiased),
        "matrix_biased": finite(biased),
    }


def select_cut_points(architecture: models.Architecture, names=None) -> tuple:
    """The cut points of `architecture` called `names`, in that order (all of them if None);
    AnalysisError listing the model's cut point names for a name it does not have."""
    if names is None:
        return architecture.cut_points
    names = tuple(names)
    by_name = {cut.name: cut for cut in architecture.cut_points}
    unknown = [name for name in names if name not in by_name]
    if unknown or not names:
        raise AnalysisError(f"--layers {' '.join(unknown) or '(none)'}: {architecture.name} nets "
                            f"have the cut points {' '.join(architecture.cut_names)}; choose "
                            "among them")
    return tuple(by_name[name] for name in names)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def default_similarity_out(run_a, run_b, data: dict) -> Path:
    """<A's analysis folder>/similarity/<A>_vs_<B>_on_<dataset>-<split_dir>-<half>: one folder
    per pair of nets and data (`data`: similarity.json's, with half_dir, dataset and half).

    B is its run name when it is in A's seed folder, <dataset>-<split_dir>-seed<k>-<run> when it
    is elsewhere in A's WORKDIR, and <parent>-<run>-<digest of its path> outside it; A's
    dataset, split and seed are the folders above (`analysis_dir`)."""
    run_a, run_b = Path(run_a).resolve(), Path(run_b).resolve()
    if run_b.parent == run_a.parent:
        label_b = run_b.name
    elif grid_workdir(run_b) is not None and grid_workdir(run_b) == grid_workdir(run_a):
        label_b = "-".join(run_b.relative_to(grid_workdir(run_b)).parts)
    else:
        digest = hashlib.sha256(str(run_b).encode()).hexdigest()[:8]
        label_b = f"{run_b.parent.name}-{run_b.name}-{digest}"
    half_dir = Path(data["half_dir"]).resolve()
    label_data = f"{data['dataset']}-{half_dir.parent.name}-{data['half']}"
    return analysis_dir(run_a) / "similarity" / f"{run_a.name}_vs_{label_b}_on_{label_data}"


def write_similarity(result: dict, out) -> Path:
    """similarity.json, similarity.png and tb/ in `out`, replacing a previous folder whole."""
    out = Path(out)
    png = heatmap_png(result)
    with staged_directory(out) as staging:
        write_json_atomic(staging / "similarity.json", result)
        (staging / "similarity.png").write_bytes(png)
        writer = tf.summary.create_file_writer(str(staging / "tb"))
        with writer.as_default():
            tf.summary.image("cka/matrix", tf.io.decode_png(png)[None], step=0)
            for index, name in enumerate(result["layers"], start=1):
                for tag, values in (("cka/unbiased", result["cka"]),
                                    ("cka/biased", result["cka_biased"])):
                    if values[name] is not None:
                        tf.summary.scalar(tag, values[name], step=index)
            tf.summary.text("cka/table", markdown_table(result), step=0)
        writer.close()
    return out


def heatmap_png(result: dict) -> bytes:
    plt = pyplot()
    matrix = np.array([[np.nan if v is None else v for v in row] for row in result["matrix"]])
    layers = result["layers"]
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(layers), 0.8 + 0.7 * len(layers)))
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    for (i, j), value in np.ndenumerate(matrix):
        text = "–" if np.isnan(value) else f"{value:.2f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=8,
                color="black" if not np.isnan(value) and value > 0.6 else "white")
    ax.set_xticks(range(len(layers)), layers)
    ax.set_yticks(range(len(layers)), layers)
    ax.set_xlabel(f"cut point of {result['b']['run']}")
    ax.set_ylabel(f"cut point of {result['a']['run']}")
    ax.set_title(f"linear CKA (unbiased, {result['examples']} {result['data']['dataset']} "
                 f"{result['data']['half']} val images)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    return png_bytes(fig)


def markdown_table(result: dict) -> str:
    """CKA of each cut point with the same cut point of the other net, unbiased and biased."""
    lines = ["| cut point | CKA unbiased | CKA biased |", "|---|---|---|"]
    for name in result["layers"]:
        unbiased, biased = result["cka"][name], result["cka_biased"][name]
        lines.append(f"| {name} | {fmt(unbiased)} | {fmt(biased)} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Small helpers of this module
# --------------------------------------------------------------------------------------------

def _common_centre(images_a, images_b):
    """The central window both batches of centre crops share (crops may differ in size)."""
    size = min(images_a.shape[1], images_b.shape[1]), min(images_a.shape[2], images_b.shape[2])

    def centre(images):
        top, left = (images.shape[1] - size[0]) // 2, (images.shape[2] - size[1]) // 2
        return images[:, top:top + size[0], left:left + size[1], :]
    if images_a.shape[-1] != images_b.shape[-1]:
        raise SampleOrderError(f"the nets get images with {images_a.shape[-1]} and "
                               f"{images_b.shape[-1]} channels")
    return centre(images_a), centre(images_b)


def _digest(values) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()[:12]
