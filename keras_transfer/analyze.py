"""Looks at trained nets without training more of them: layer similarity, its use as a cheap
predictor of the transfer curve, and the conv1 filters.

    python -m keras_transfer.analyze similarity --a RUN_A --b RUN_B --data HALF_DIR
    python -m keras_transfer.analyze predict WORKDIR[/<dataset>/<split_dir>/seed<k>]
    python -m keras_transfer.analyze filters RUN [RUN ...]

`similarity` streams the validation images of HALF_DIR through both nets in minibatches and
accumulates linear CKA (unbiased HSIC_1, Nguyen et al. 2021; see `cka`) of every layer of A
against every layer of B; memory is one batch's activations and Gram matrices. Both nets read
the images with their own crop and input scale but the same examples in the same order; every
batch is checked, and a difference in order or count is refused. Writes similarity.json,
similarity.png (the layer x layer heatmap) and TensorBoard events into
WORKDIR/analysis/<dataset>/<split_dir>/seed<k>/similarity/<A>_vs_<B>/ (or --out).

`predict` computes CKA(baseA, baseB) per layer for every finished base pair and compares it
with the measured relative drop of the frozen transfer nets, (base - AnB) / base per n (BnA
against baseA likewise), pooled over directions and seeds, by Spearman rank correlation.
Writes predict.json and predict.png into WORKDIR/report/ beside the report (or --out).

`filters` writes each net's conv1 filters as one image grid (`filters.filter_grid`), a PNG per
net and a TensorBoard image, into WORKDIR/analysis/<dataset>/<split_dir>/seed<k>/filters/.

Every output file or folder is written in full elsewhere and renamed into place; bad input
(missing run, weights that do not fit, data of another shape) is reported before anything is
written. Command line via argparse, as in `report`: main's absl flags are the package's one
absl namespace.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import itertools
import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from data_prep.manifest import sha256_file, write_bytes_atomic, write_json_atomic  # noqa: E402
from keras_transfer import cka, data, filters, models, naming, transfer  # noqa: E402

DEFAULT_LAYERS = models.LAYER_NAMES[:naming.MAX_N]  # conv1..fc7, the layers transfer copies
DEFAULT_BATCH_SIZE = 256
METRICS = ("top1_best10_mean", "top1_final")
FILTER_TILE_PIXELS = 48  # conv1 tiles are upscaled to about this size so a person can see them
_SEED_DIR_RE = re.compile(r"^seed\d+$")
# Images of the two streams are compared in 0-255 pixel units after undoing each net's scale.
_PIXEL_TOLERANCE = 1e-2


class AnalysisError(Exception):
    """The analysis cannot run on this input; the message says why and what to do."""


class SampleOrderError(AnalysisError):
    """The two nets would not see the same examples in the same order."""


# --------------------------------------------------------------------------------------------
# Trained nets
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Net:
    """A finished run directory and what is needed to rebuild its model."""
    run_dir: Path
    config: dict
    result: dict

    @property
    def name(self) -> str:
        return self.config.get("run", self.run_dir.name)

    @property
    def model_name(self) -> str:
        return self.result.get("model") or self.config["model"]

    @property
    def num_outputs(self) -> int:
        """fc8's width (older results lack num_outputs: then fc8_outputs or the class count)."""
        if self.result.get("num_outputs"):
            return int(self.result["num_outputs"])
        if self.config.get("fc8_outputs"):
            return int(self.config["fc8_outputs"])
        return len(self.result["data"]["classes"])

    @property
    def weights(self) -> Path:
        return self.run_dir / "model.weights.h5"

    def input_shape(self, image_shape) -> tuple:
        """The net's input for images of `image_shape`: its configured crop, or the default one."""
        height, width, channels = image_shape
        crop = self.config.get("crop") or data.default_crop(self.model_name, min(height, width))
        return (crop, crop, channels)

    def describe(self, image_shape) -> dict:
        return {"run": self.name, "run_dir": str(self.run_dir), "model": self.model_name,
                "num_outputs": self.num_outputs, "input_shape": list(self.input_shape(image_shape))}


def open_run(run_dir) -> Net:
    """A finished run (config.json, result.json and model.weights.h5 present), or AnalysisError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AnalysisError(f"run directory not found: {run_dir} (give a folder such as "
                            "runs/fashion_mnist/random_0/seed0/baseA)")
    missing = [name for name in ("config.json", "result.json", "model.weights.h5")
               if not (run_dir / name).is_file()]
    if missing:
        raise AnalysisError(f"{run_dir} is not a finished run: it lacks {', '.join(missing)}. "
                            "Train it to the end (python -m keras_transfer.main ... or "
                            "./launch.sh), which writes model.weights.h5 and then result.json.")
    try:
        config = json.loads((run_dir / "config.json").read_text())
        result = json.loads((run_dir / "result.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AnalysisError(f"cannot read the run record in {run_dir}: {e}") from e
    return Net(run_dir, config, result)


def load_model(net: Net, image_shape) -> keras.Model:
    """The trained net, rebuilt with its own architecture and fc8 width, for these images."""
    input_shape = net.input_shape(image_shape)
    try:
        weights = transfer.read_base_weights(net.weights, net.model_name, input_shape,
                                             net.num_outputs)
    except (transfer.TransferError, ValueError) as e:
        raise AnalysisError(
            f"{net.name} ({net.run_dir}) does not fit images of shape {tuple(image_shape)} "
            f"(input {input_shape}): {e}\nGive data of the kind the net was trained on (same "
            "image size and channels), e.g. a half prepared by data_prep for its dataset.") from e
    model = models.build(net.model_name, net.num_outputs, input_shape)
    for name, values in weights.items():
        model.get_layer(name).set_weights(values)
    return model


def launch_dir(net: Net) -> Path:
    """The directory the run was launched from, where its relative --data_dir is found."""
    recorded = Path(net.config.get("run_dir", ""))
    if recorded.is_absolute() or not recorded.parts:
        return Path.cwd()
    actual = net.run_dir.resolve()
    parts = len(recorded.parts)
    if actual.parts[-parts:] == recorded.parts:
        return Path(*actual.parts[:-parts])
    return Path.cwd()


def training_half_dir(net: Net, half: str, data_dir=None) -> Path:
    """Half `half` of the data the net's grid was prepared from (its config's data_dir, dataset
    and split), found relative to the launch directory or the current one."""
    from data_prep.splits import split_dirname

    split_dir = net.config.get("split_dir") or split_dirname(
        net.config["split"], net.config.get("examples_per_class") or None)
    relative = Path(net.config["dataset"]) / split_dir / half
    if data_dir is not None:
        roots = [Path(data_dir)]
    else:
        recorded = Path(net.config.get("data_dir", "data"))
        roots = [recorded] if recorded.is_absolute() else [launch_dir(net) / recorded, recorded]
    for root in roots:
        if (root / relative / "manifest.json").is_file():
            return root / relative
    raise AnalysisError(
        f"cannot find the prepared data of {net.name}: no {relative}/manifest.json under "
        f"{' or '.join(str(r) for r in roots)}. Pass --data_dir with the folder given to "
        "`python -m data_prep --out` (or prepare it).")


def analysis_dir(run_dir: Path) -> Path:
    """WORKDIR/analysis/<dataset>/<split_dir>/seed<k> for a run in the grid's layout, beside the
    report; run folders elsewhere get an analysis/ folder next to them."""
    run_dir = Path(run_dir).resolve()
    if _SEED_DIR_RE.match(run_dir.parent.name):
        seed_dir = run_dir.parent
        return seed_dir.parents[2] / "analysis" / seed_dir.relative_to(seed_dir.parents[2])
    return run_dir.parent / "analysis"


# --------------------------------------------------------------------------------------------
# Streaming both nets over the same examples
# --------------------------------------------------------------------------------------------

def gram_function(model: keras.Model, layers):
    """images -> one (b, b) Gram matrix of post-ReLU features per layer, features centred over
    the batch first (exact for HSIC, see `cka`; keeps float32 accurate for all-positive ReLU
    outputs). Conv outputs are flattened to height x width x channels features per example."""
    outputs = [model.get_layer(name).output for name in layers]
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


def similarity(run_a, run_b, half_dir, *, layers=DEFAULT_LAYERS, batch_size=DEFAULT_BATCH_SIZE,
               max_examples=None) -> dict:
    """Minibatch linear CKA of every layer of A against every layer of B on the validation
    images of `half_dir`; the contents of similarity.json."""
    layers = check_layers(layers)
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
        grams.append(gram_function(load_model(net, image_shape), layers))
        streams.append(data.build_dataset(
            half_dir, "validation", batch_size=batch_size, training=False,
            crop=net.input_shape(image_shape)[0], model_name=net.model_name,
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
        "layers": list(layers),
        "cka": {name: _finite(unbiased[i, i]) for i, name in enumerate(layers)},
        "cka_biased": {name: _finite(biased[i, i]) for i, name in enumerate(layers)},
        "matrix": _finite(unbiased),
        "matrix_biased": _finite(biased),
    }


def check_layers(layers) -> tuple:
    layers = tuple(layers)
    unknown = [name for name in layers if name not in models.LAYER_NAMES]
    if unknown or not layers:
        raise AnalysisError(f"--layers {' '.join(unknown) or '(none)'}: choose among "
                            f"{' '.join(models.LAYER_NAMES)}")
    return layers


# --------------------------------------------------------------------------------------------
# similarity outputs
# --------------------------------------------------------------------------------------------

def default_similarity_out(run_a, run_b) -> Path:
    run_a, run_b = Path(run_a).resolve(), Path(run_b).resolve()
    label_b = run_b.name if run_b.parent == run_a.parent else f"{run_b.parent.name}-{run_b.name}"
    return analysis_dir(run_a) / "similarity" / f"{run_a.name}_vs_{label_b}"


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
            tf.summary.text("cka/table", _markdown_table(result), step=0)
        writer.close()
    return out


def heatmap_png(result: dict) -> bytes:
    plt = _pyplot()
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
    ax.set_xlabel(f"layer of {result['b']['run']}")
    ax.set_ylabel(f"layer of {result['a']['run']}")
    ax.set_title(f"linear CKA (unbiased, {result['examples']} {result['data']['dataset']} "
                 f"{result['data']['half']} val images)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _png_bytes(fig)


def _markdown_table(result: dict) -> str:
    lines = ["| layer | CKA unbiased | CKA biased |", "|---|---|---|"]
    for name in result["layers"]:
        unbiased, biased = result["cka"][name], result["cka_biased"][name]
        lines.append(f"| {name} | {_fmt(unbiased)} | {_fmt(biased)} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# predict: CKA(baseA, baseB) against the measured transfer drop
# --------------------------------------------------------------------------------------------

def find_seed_dirs(path) -> list[Path]:
    """Seed folders with a finished base pair: `path` itself, or every one under it."""
    path = Path(path)
    if not path.is_dir():
        raise AnalysisError(f"{path} is not a directory; give the grid's WORKDIR (e.g. runs) or "
                            "one of its WORKDIR/<dataset>/<split_dir>/seed<k> folders")
    candidates = [path] if _SEED_DIR_RE.match(path.name) else sorted(
        p for p in path.rglob("seed*") if p.is_dir() and _SEED_DIR_RE.match(p.name)
        and "analysis" not in p.relative_to(path).parts and "logs" not in p.relative_to(path).parts)
    found = [p for p in candidates
             if all((p / f"base{h}" / "result.json").is_file() for h in naming.HALVES)]
    if not found:
        raise AnalysisError(f"no finished base pair under {path}: predict needs baseA and baseB "
                            "with result.json in a WORKDIR/<dataset>/<split_dir>/seed<k> folder. "
                            "Train them first (./launch.sh, or python -m keras_transfer.main "
                            "--source=none --target=A, then --target=B).")
    return found


def workdir_of(seed_dir: Path) -> Path:
    return Path(seed_dir).resolve().parents[2]


def relative_drops(seed_dir: Path, metric: str) -> dict:
    """{target half: {n: (base - AnB) / base}} from the frozen transfer nets that finished."""
    drops = {}
    for target in naming.HALVES:
        base = _read_result(seed_dir / f"base{target}")
        if base is None or not base.get(metric):
            continue
        source = naming.other_half(target)
        for n in range(1, naming.MAX_N + 1):
            result = _read_result(seed_dir / naming.run_name(source, target, n, False))
            if result is not None and result.get(metric) is not None:
                drops.setdefault(target, {})[n] = (base[metric] - result[metric]) / base[metric]
    return drops


def spearman(x, y) -> dict:
    """Spearman's rank correlation (ties get mean ranks) and, for up to 8 points, its exact
    two-sided permutation p-value (no scipy here)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    rank_x, rank_y = _ranks(x), _ranks(y)
    rho = _pearson(rank_x, rank_y)
    p_value = None
    if len(x) <= 8 and not math.isnan(rho):
        permuted = np.array(list(itertools.permutations(rank_y)))
        centred_x = rank_x - rank_x.mean()
        centred = permuted - permuted.mean(axis=1, keepdims=True)
        rhos = centred @ centred_x / (np.linalg.norm(centred, axis=1) * np.linalg.norm(centred_x))
        p_value = float(np.mean(np.abs(rhos) >= abs(rho) - 1e-12))
    return {"rho": _finite(rho), "p_value_exact": p_value, "points": int(len(x))}


def predict(path, *, data_dir=None, metric="top1_best10_mean", batch_size=DEFAULT_BATCH_SIZE,
            max_examples=None, recompute=False, similarity_root=None, log=print) -> dict:
    """CKA(baseA, baseB) per layer on each target half that has transfer nets (B if none),
    against the pooled relative drop of AnB per n; the contents of predict.json.

    Each pair's similarity folder goes where `similarity` would put it, or under
    `similarity_root`/<dataset>/<split_dir>/seed<k>/ when given, and is reused while its
    inputs (weights, data, batching) are unchanged.
    """
    if metric not in METRICS:
        raise AnalysisError(f"--metric must be one of {METRICS}, got {metric!r}")
    jobs = []  # every base pair and its data found and checked before anything is computed
    for seed_dir in find_seed_dirs(path):
        drops = relative_drops(seed_dir, metric)
        base_a, base_b = (open_run(seed_dir / f"base{h}") for h in naming.HALVES)
        folder = analysis_dir(base_a.run_dir)
        if similarity_root is not None:
            folder = Path(similarity_root) / folder.relative_to(folder.parents[2])
        for target in sorted(drops) or ["B"]:
            half_dir = training_half_dir(base_b, target, data_dir)
            try:
                data.load_half(half_dir)
            except data.DataError as e:
                raise AnalysisError(str(e)) from e
            jobs.append((seed_dir, target, base_a, base_b, half_dir, drops.get(target, {}),
                         folder / "similarity" / f"baseA_vs_baseB_on_{target}"))
    pairs = []
    for seed_dir, target, base_a, base_b, half_dir, drops, out in jobs:
        key = _inputs_key(base_a, base_b, half_dir, batch_size, max_examples)
        result = None if recompute else _cached_similarity(out, key)
        if result is None:
            result = similarity(base_a.run_dir, base_b.run_dir, half_dir,
                                batch_size=batch_size, max_examples=max_examples)
            result["inputs_key"] = key
            write_similarity(result, out)
            log(f"[analyze] CKA(baseA, baseB) on {target}: {out}")
        else:
            log(f"[analyze] CKA(baseA, baseB) on {target}: reused {out}")
        pairs.append({"seed_dir": str(seed_dir), "target": target,
                      "similarity": str(out / "similarity.json"), "cka": result["cka"],
                      "relative_drop": {str(n): v for n, v in drops.items()}})
    pooled = _pool(pairs)
    usable = [i for i, d in enumerate(pooled["relative_drop"])
              if d is not None and pooled["cka"][i] is not None]
    correlation = None
    if len(usable) >= 3:
        correlation = spearman([pooled["cka"][i] for i in usable],
                               [pooled["relative_drop"][i] for i in usable])
    return {
        "metric": metric,
        "relative_drop": "(top-1 of base - top-1 of the frozen transfer net AnB) / top-1 of base, "
                         "per target half; pooled: mean over halves and seeds",
        "reading": "Spearman rho < 0: layers whose features are more alike across the two halves "
                   "lose less when transferred, as the paper's generality argument predicts",
        "pairs": pairs,
        "pooled": pooled,
        "spearman": correlation,
        "note": None if correlation else (
            f"rank correlation needs at least 3 layers with both CKA and a finished AnB/BnA net; "
            f"found {len(usable)}"),
    }


def predict_png(result: dict) -> bytes:
    plt = _pyplot()
    pooled = result["pooled"]
    ns = pooled["n"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    cka_values = [np.nan if v is None else v for v in pooled["cka"]]
    ax.plot(ns, cka_values, "o-", color="#1f4fd1", label="CKA(baseA, baseB) at layer n")
    for pair in result["pairs"]:
        ax.plot(ns, [np.nan if pair["cka"].get(name) is None else pair["cka"][name]
                     for name in pooled["layers"]], ".", color="#1f4fd1", alpha=0.35)
    ax.set_xlabel("layer n (copied layers 1..n)")
    ax.set_ylabel("linear CKA (unbiased)", color="#1f4fd1")
    ax.set_xticks(ns, [f"{n}\n{name}" for n, name in zip(ns, pooled["layers"])])
    ax.set_ylim(min(0.0, np.nanmin(cka_values) if not np.all(np.isnan(cka_values)) else 0.0), 1.02)
    drop_ax = ax.twinx()
    drops = [np.nan if v is None else v for v in pooled["relative_drop"]]
    drop_ax.plot(ns, drops, "s--", color="#d62728", label="measured relative drop of AnB")
    for pair in result["pairs"]:
        drop_ax.plot(ns, [pair["relative_drop"].get(str(n), np.nan) for n in ns], ".",
                     color="#d62728", alpha=0.35)
    drop_ax.set_ylabel(f"(base - AnB) / base, {result['metric']}", color="#d62728")
    drop_ax.axhline(0.0, color="#d62728", lw=0.5, alpha=0.5)
    correlation = result["spearman"]
    if correlation:
        p = correlation["p_value_exact"]
        title = (f"Spearman rho = {_fmt(correlation['rho'])} over {correlation['points']} layers"
                 + (f" (exact p = {p:.3f})" if p is not None else ""))
    else:
        title = "no finished transfer nets to compare with"
    ax.set_title(title, fontsize=10)
    handles = ax.get_legend_handles_labels()[0] + drop_ax.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2,
              fontsize=8, frameon=False)
    return _png_bytes(fig)


def write_predict(result: dict, out) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = predict_png(result)
    write_json_atomic(out / "predict.json", result)
    write_bytes_atomic(out / "predict.png", png)
    return {"predict.json": out / "predict.json", "predict.png": out / "predict.png"}


def _pool(pairs) -> dict:
    ns = list(range(1, naming.MAX_N + 1))
    layers = list(DEFAULT_LAYERS)
    cka_values, drop_values, counts = [], [], []
    for n, name in zip(ns, layers):
        ckas = [p["cka"][name] for p in pairs if p["cka"].get(name) is not None]
        drops = [p["relative_drop"][str(n)] for p in pairs if str(n) in p["relative_drop"]]
        cka_values.append(float(np.mean(ckas)) if ckas else None)
        drop_values.append(float(np.mean(drops)) if drops else None)
        counts.append(len(drops))
    return {"n": ns, "layers": layers, "cka": cka_values, "relative_drop": drop_values,
            "transfer_nets": counts}


def _inputs_key(net_a: Net, net_b: Net, half_dir, batch_size, max_examples) -> str:
    """What a similarity.json depends on: both weight files, the data, the batching."""
    manifest = json.loads((Path(half_dir) / "manifest.json").read_text())
    shards = [s.get("sha256") for s in manifest["shards"]["validation"]]
    parts = [sha256_file(net_a.weights), sha256_file(net_b.weights), json.dumps(shards),
             str(batch_size), str(max_examples), ",".join(DEFAULT_LAYERS)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _cached_similarity(out: Path, key: str):
    path = out / "similarity.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return result if result.get("inputs_key") == key else None


def _read_result(run_dir: Path):
    path = run_dir / "result.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# --------------------------------------------------------------------------------------------
# filters
# --------------------------------------------------------------------------------------------

def filter_image(kernel, tile_pixels: int = FILTER_TILE_PIXELS) -> np.ndarray:
    """`filters.filter_grid` upscaled by a whole factor (pixels stay sharp), as uint8 (H, W, 3)."""
    grid = filters.filter_grid(kernel)
    factor = max(1, tile_pixels // max(np.shape(kernel)[:2]))
    grid = np.repeat(np.repeat(grid, factor, axis=0), factor, axis=1)
    if grid.shape[2] == 1:
        grid = np.repeat(grid, 3, axis=2)
    return np.round(grid * 255).astype(np.uint8)


def write_filters(run_dirs, out=None, data_dir=None) -> list[Path]:
    """conv1 of each run as `<out>/<run>.png` and a TensorBoard image in `<out>/tb`."""
    nets = [open_run(r) for r in run_dirs]  # every input checked before anything is written
    images = []
    for net in nets:
        half = training_half_dir(net, net.config.get("target", "B"), data_dir)
        try:
            image_shape = data.load_half(half)["image_shape"]
        except data.DataError as e:
            raise AnalysisError(str(e)) from e
        model = load_model(net, image_shape)
        kernel = model.get_layer("conv1").get_weights()[0]
        images.append((net, kernel.shape, filter_image(kernel)))
    written = []
    for net, shape, image in images:
        target_dir = Path(out) if out is not None else analysis_dir(net.run_dir) / "filters"
        target_dir.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        _pyplot().imsave(buffer, image, format="png")
        write_bytes_atomic(target_dir / f"{net.name}.png", buffer.getvalue())
        with tempfile.TemporaryDirectory(dir=target_dir, prefix=".tb-") as staging:
            writer = tf.summary.create_file_writer(staging)
            with writer.as_default():
                tf.summary.image(f"conv1_filters/{net.name}", image[None], step=0,
                                 description=f"conv1 kernel {tuple(shape)}, one tile per filter")
            writer.close()
            (target_dir / "tb").mkdir(exist_ok=True)
            for event in Path(staging).iterdir():
                os.replace(event, target_dir / "tb" / f"{event.name}.{net.name}")
        written.append(target_dir / f"{net.name}.png")
    return written


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def staged_directory(target):
    """Yields an empty folder beside `target`; on success it replaces `target` whole, on an
    error it is removed and `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".staging-{target.name}-"))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = target.parent / f".old-{target.name}-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png_bytes(fig) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


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


def _ranks(values):
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):  # ties share their mean rank
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _pearson(x, y) -> float:
    x, y = x - x.mean(), y - y.mean()
    norm = np.linalg.norm(x) * np.linalg.norm(y)
    return float(x @ y / norm) if norm > 0 else float("nan")


def _finite(value):
    """JSON has no NaN: undefined values (a dead layer) become null."""
    if isinstance(value, np.ndarray):
        return [_finite(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_finite(v) for v in value]
    value = float(value)
    return value if math.isfinite(value) else None


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _digest(values) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()[:12]


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m keras_transfer.analyze",
                                description="Layer similarity (CKA), transfer-curve prediction "
                                            "and conv1 filters of trained nets.")
    commands = p.add_subparsers(dest="command", required=True)

    s = commands.add_parser("similarity", help="per-layer linear CKA between two trained nets")
    s.add_argument("--a", required=True, help="run directory of the first net")
    s.add_argument("--b", required=True, help="run directory of the second net")
    s.add_argument("--data", required=True,
                   help="prepared half (DATA/<dataset>/<split_dir>/<A|B>) whose validation "
                        "images both nets see")
    s.add_argument("--layers", nargs="+", default=list(DEFAULT_LAYERS),
                   help=f"layers to compare (default {' '.join(DEFAULT_LAYERS)})")
    s.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE,
                   help="minibatch of the unbiased HSIC estimate (memory: one batch of "
                        "activations)")
    s.add_argument("--max_examples", type=int, default=None,
                   help="use at most this many validation images (whole batches)")
    s.add_argument("--out", default=None,
                   help="output folder (default WORKDIR/analysis/<dataset>/<split_dir>/seed<k>/"
                        "similarity/<A>_vs_<B>)")

    r = commands.add_parser("predict", help="CKA(baseA, baseB) per layer vs the measured "
                                            "transfer drop per n")
    r.add_argument("path", help="the grid's WORKDIR, or one WORKDIR/<dataset>/<split_dir>/seed<k>")
    r.add_argument("--data_dir", default=None,
                   help="root of the prepared data (default: each run's --data_dir)")
    r.add_argument("--metric", choices=METRICS, default="top1_best10_mean",
                   help="top-1 used for the measured drop (as in the report)")
    r.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE)
    r.add_argument("--max_examples", type=int, default=None)
    r.add_argument("--recompute", action="store_true",
                   help="recompute CKA even when a similarity.json of the same inputs exists")
    r.add_argument("--out", default=None,
                   help="output folder (default WORKDIR/report); with --out the per-pair CKA "
                        "folders go to OUT/analysis/ instead of WORKDIR/analysis/")

    f = commands.add_parser("filters", help="conv1 filters of trained nets as image grids")
    f.add_argument("runs", nargs="+", help="run directories")
    f.add_argument("--data_dir", default=None,
                   help="root of the prepared data (default: each run's --data_dir); only the "
                        "image shape is read, to rebuild the net")
    f.add_argument("--out", default=None,
                   help="output folder (default WORKDIR/analysis/<dataset>/<split_dir>/seed<k>/"
                        "filters)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command == "similarity":
        out = Path(args.out) if args.out else default_similarity_out(args.a, args.b)
        result = similarity(args.a, args.b, args.data, layers=args.layers,
                            batch_size=args.batch_size, max_examples=args.max_examples)
        write_similarity(result, out)
        print(f"[analyze] CKA {result['a']['run']} vs {result['b']['run']} on "
              f"{result['examples']} validation images of {args.data}")
        print(_markdown_table(result))
        print(f"[analyze] wrote {out}/similarity.json, similarity.png, tb/")
    elif args.command == "predict":
        out = Path(args.out) if args.out else workdir_of(find_seed_dirs(args.path)[0]) / "report"
        result = predict(args.path, data_dir=args.data_dir, metric=args.metric,
                         batch_size=args.batch_size, max_examples=args.max_examples,
                         recompute=args.recompute,
                         similarity_root=out / "analysis" if args.out else None)
        files = write_predict(result, out)
        pooled = result["pooled"]
        print("| n | layer | CKA(baseA, baseB) | relative drop of AnB |\n|---|---|---|---|")
        for n, name, c, d in zip(pooled["n"], pooled["layers"], pooled["cka"],
                                 pooled["relative_drop"]):
            print(f"| {n} | {name} | {_fmt(c)} | {_fmt(d)} |")
        if result["spearman"]:
            print(f"[analyze] Spearman rho {_fmt(result['spearman']['rho'])}, exact p "
                  f"{result['spearman']['p_value_exact']}")
        else:
            print(f"[analyze] note: {result['note']}")
        for path in files.values():
            print(f"[analyze] wrote {path}")
    else:
        for path in write_filters(args.runs, args.out, args.data_dir):
            print(f"[analyze] wrote {path}")
    return 0


def run() -> None:
    """Console entry point (`keras-transfer-analyze`)."""
    try:
        sys.exit(main())
    except AnalysisError as e:
        print(f"analyze: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
