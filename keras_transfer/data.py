"""Input pipeline over data_prep's class-split TFRecords.

list_files (-> shard per worker) -> interleave -> decode (-> cache, when small) -> shuffle
-> batch -> augment (-> cut into the replicas' shares) -> prefetch. Training crops at random
and mirrors; evaluation takes the centre crop, in file order, with no shuffling, so every
evaluation sees the same images in the same order.
Augmentation uses stateless random ops keyed on (seed, batch index), so it is reproducible
whatever the parallelism.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from data_prep import manifest as manifest_lib
from data_prep import records
from keras_transfer import models

SPLITS = ("train", "validation")
_SHUFFLE_BUFFER = 10_000
# Parallel calls per stage and batches read ahead, set here rather than left to tf.data's
# autotuner (whose thread can hold up the deletion of an iterator: input_options). These
# values train the demo's nets as fast.
PARALLEL_CALLS = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                  else os.cpu_count() or 1)
PREFETCH_BATCHES = 4


def input_options(strategy) -> tf.distribute.InputOptions | None:
    """How `strategy.distribute_datasets_from_function` should feed its replicas. A
    MirroredStrategy of one replica (the grid's one-process-per-core case) reads straight from
    this module's pipeline: by default a MultiDeviceIterator sits in between, whose device-side
    iterator runs tf.data's autotuner with default options, and deleting it at the end of a run
    waited 0-60 s for that thread (its optimisation rounds back off to a minute). With several
    replicas the default stays: it prefetches to the accelerators, in runs of hours."""
    if isinstance(strategy, tf.distribute.MirroredStrategy) and strategy.num_replicas_in_sync == 1:
        return tf.distribute.InputOptions(
            experimental_fetch_to_device=False,
            experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA)
    return None


class DataError(Exception):
    """The prepared data is missing, incomplete or does not match its manifest."""


def load_half(half_dir, *, verify_data: bool = False) -> dict:
    """The manifest of a prepared half, after checking its shards against it and that the
    other half of its split is of the same preparation.

    Shard sizes are always checked (cheap, catches truncation); `verify_data` also hashes every
    shard (catches bit flips) at the cost of reading the whole dataset once.
    """
    half_dir = Path(half_dir)
    try:
        manifest = manifest_lib.load_manifest(half_dir)
    except Exception as e:  # data_prep's message already says which command prepares it.
        raise DataError(str(e)) from e
    mismatch = manifest_lib.mismatched_halves(half_dir, manifest)
    if mismatch:  # a half A and a half B of different preparations
        raise DataError(mismatch)
    problems = manifest_lib.verify(half_dir, full_hash=verify_data)
    if problems:
        raise DataError(
            f"prepared data in {half_dir} does not match its manifest:\n  " + "\n  ".join(problems)
            + "\nRe-create it with `python -m data_prep ... --overwrite`.")
    mean_image(half_dir, manifest)  # read once here, so damage is named before a run starts
    return manifest


def shard_paths(half_dir, manifest: dict, split: str) -> list[str]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return [str(Path(half_dir) / s["file"]) for s in manifest["shards"][split]]


def default_crop(model_name: str, image_size: int) -> int:
    """The network's paper-scale crop (227 for caffenet, the paper's; 224 for the Keras
    applications); a few pixels less than the image for the networks of small images."""
    return models.get(model_name).crop_of_256 or image_size - 2


def input_scale(model_name: str) -> float:
    """Factor applied after mean subtraction: Caffe feeds CaffeNet raw 0-255 values; the other
    networks, initialised for unit-scale inputs, get them divided by 255."""
    return models.get(model_name).input_scale


def mean_image(half_dir, manifest: dict | None = None) -> np.ndarray:
    """The per-pixel training mean of the half (Caffe subtracts it before cropping); its
    manifest is read if not given."""
    if manifest is None:
        try:
            manifest = manifest_lib.load_manifest(half_dir)
        except Exception as e:  # data_prep's message already says which command prepares it.
            raise DataError(str(e)) from e
    mean_info = manifest.get("mean", {})
    path = Path(half_dir) / mean_info.get("per_pixel_file", "mean.npy")
    shape = tuple(manifest["image_shape"])
    if path.exists():
        fix = (f"the mean image {path} is damaged; re-create the half with `python -m data_prep "
               "... --overwrite`")
        if "sha256" in mean_info and manifest_lib.sha256_file(path) != mean_info["sha256"]:
            raise DataError(f"{fix} (its sha256 differs from the manifest's)")
        try:
            mean = np.load(path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError, EOFError) as e:
            raise DataError(f"{fix} ({e})") from e
        if mean.shape == shape:
            return mean
    # Images of varying size (folder sources) fall back to the per-channel mean.
    per_channel = np.asarray(mean_info["per_channel"], np.float32)
    return np.broadcast_to(per_channel, shape).astype(np.float32)


def build_dataset(half_dir, split: str, *, batch_size: int, training: bool, seed: int = 0,
                  input_context: tf.distribute.InputContext | None = None,
                  crop: int | None = None, model_name: str = "small",
                  manifest: dict | None = None, cache_bytes: int = 1 << 30,
                  limit: int | None = None,
                  means: list[np.ndarray] | None = None,
                  deterministic: bool = False, start_step: int = 0) -> tf.data.Dataset:
    """Batches of (mean-subtracted, scaled float32 images [crop, crop, C], int32 labels).

    The half's own mean image is subtracted; given `means` (mean images of the same shape,
    e.g. other halves'), each batch is instead (a tuple of the images with each of them
    subtracted, labels): the same crops of the same images, for nets that were trained with
    different means.

    Training batches are drawn, augmented and numbered as global batches and then cut into
    the replicas' shares, so the images, crops and order a run trains on do not depend on how
    many replicas share a batch. Across workers that means every worker reads every file; so
    there, unless `deterministic`, each worker reads its own shards instead (its own images).

    `batch_size` is the global batch; with an `input_context` (from
    `strategy.distribute_datasets_from_function`) each pipeline yields its replica's share.
    Training data repeats forever; evaluation data is one deterministic pass. A run resumed
    at `start_step` replays the same stream from there: the batches of the steps already
    trained are skipped (read again, but not decoded unless they are cached) and the batches
    after them keep their numbers, so their crops and mirrors are those of an uninterrupted
    run. A split whose
    decoded images fit in `cache_bytes` is decoded once and cached in memory. `limit` keeps only
    the first `limit` examples (of all pipelines together) of an evaluation pass.
    """
    half_dir = Path(half_dir)
    manifest = manifest or load_half(half_dir)
    files = shard_paths(half_dir, manifest, split)
    if not files:
        raise DataError(f"{half_dir}: the manifest lists no {split} shards")
    height, width, channels = manifest["image_shape"]
    crop = crop or default_crop(model_name, min(height, width))
    if crop > min(height, width):
        raise DataError(f"crop {crop} is larger than the images ({height}x{width}) in {half_dir}")
    single = means is None
    means = [mean_image(half_dir, manifest)] if single else list(means)
    for mean in means:
        if mean.shape != (height, width, channels):
            raise DataError(f"a mean image of shape {mean.shape} does not fit the "
                            f"{height}x{width}x{channels} images of {half_dir}")
    means = [tf.constant(mean) for mean in means]
    scale = tf.constant(input_scale(model_name), tf.float32)

    pipelines = input_context.num_input_pipelines if input_context is not None else 1
    replicas = input_context.num_replicas_in_sync if input_context is not None else 1
    global_batches = training and (pipelines == 1 or deterministic)
    if global_batches and batch_size % replicas:
        raise DataError(f"a global batch of {batch_size} does not split over {replicas} replicas")
    if input_context is not None and not global_batches:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    ds = tf.data.Dataset.from_tensor_slices(files)
    # Otherwise each input pipeline reads its own shards; with fewer shards than pipelines
    # every pipeline reads all files and keeps every k-th record instead.
    if global_batches:
        pipelines = 1  # every pipeline reads the whole stream
    shard_records = pipelines > len(files)
    if pipelines > 1 and not shard_records:
        ds = ds.shard(pipelines, input_context.input_pipeline_id)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    # Evaluation reads one file after the other, so its order is the manifest's.
    if training:
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                           num_parallel_calls=PARALLEL_CALLS, deterministic=True)
    else:
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=1)
    if shard_records:
        ds = ds.shard(pipelines, input_context.input_pipeline_id)
    if limit is not None and not training:
        ds = ds.take(max(1, limit // pipelines))

    def decode(serialized):
        example = records.parse_example(serialized)
        image = records.decode_image(example, channels)
        return tf.ensure_shape(image, [height, width, channels]), tf.cast(example["label"], tf.int32)

    count = manifest["counts"][split]
    cached = count * height * width * channels <= cache_bytes
    if cached:
        # Small data (Fashion-MNIST, CIFAR) is decoded once and kept in memory as uint8: the
        # pipeline then costs little next to training, and evaluations stop re-decoding.
        ds = ds.map(decode, num_parallel_calls=PARALLEL_CALLS, deterministic=True).cache()
    # This pipeline's batches per training step: the global batch, or its replicas' shares.
    batches_per_step = 1 if global_batches or input_context is None else (
        replicas // input_context.num_input_pipelines)
    if training:
        # The order depends on the seed alone (not on the contents), so records shuffled
        # before decoding come out in the order decoded images would.
        ds = ds.shuffle(_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True).repeat()
        ds = ds.skip(start_step * batches_per_step * batch_size)
    if not cached:
        ds = ds.map(decode, num_parallel_calls=PARALLEL_CALLS, deterministic=True)
    # Augmentation works on whole batches: per-image map calls would cost more than the
    # small model's training step. Random draws are keyed on (seed, batch index).
    ds = ds.batch(batch_size, drop_remainder=training).enumerate(
        start=start_step * batches_per_step if training else 0)

    def augment(index, raw, labels):
        raw = tf.cast(raw, tf.float32)
        if training:
            count = tf.shape(raw)[0]
            key = tf.stack([tf.cast(seed, tf.int64), index])
            draw = lambda salt, limit: tf.random.stateless_uniform(
                [count], seed=key + [0, salt], maxval=limit, dtype=tf.int32)
            rows = draw(0, height - crop + 1)[:, None] + tf.range(crop)[None, :]
            cols = draw(1, width - crop + 1)[:, None] + tf.range(crop)[None, :]
            mirror = tf.cast(draw(2, 2), tf.bool)[:, None, None, None]

        def centred(mean):
            images = (raw - mean) * scale  # Caffe subtracts the mean before cropping
            if not training:
                top, left = (height - crop) // 2, (width - crop) // 2
                return images[:, top:top + crop, left:left + crop, :]
            images = tf.gather(images, rows, axis=1, batch_dims=1)
            images = tf.gather(images, cols, axis=2, batch_dims=1)
            return tf.where(mirror, tf.reverse(images, axis=[2]), images)

        if single:
            return centred(means[0]), labels
        return tuple(centred(mean) for mean in means), labels

    ds = ds.map(lambda index, batch: augment(index, *batch),
                num_parallel_calls=PARALLEL_CALLS, deterministic=True)
    if global_batches and replicas > 1:
        # This pipeline's replicas' shares of each global batch, one after the other: the
        # strategy hands consecutive elements to its consecutive local replicas.
        local = replicas // input_context.num_input_pipelines
        first = input_context.input_pipeline_id * local

        def shares(images, labels):
            cut = lambda t: tf.reshape(t, [replicas, -1, *t.shape[1:]])[first:first + local]
            return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(cut, (images, labels)))

        ds = ds.flat_map(shares)
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(PREFETCH_BATCHES).with_options(options)
