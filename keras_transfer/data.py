"""Input pipeline over data_prep's class-split TFRecords, built from small named stages.

`build_dataset(half_dir, split, InputSettings(...), input_context=...)` chains them, after
`pipeline_share` has said what this input pipeline reads and yields:

  read_records (its shards, interleaved)  -> take_limit (evaluation, if a limit is set)
  -> decode_examples (-> cache: before the shuffle when the split fits in memory, else after
     the skip)  -> shuffle_and_repeat -> skip_trained_batches (training)
  -> batch_and_number -> normalise_and_crop: subtract_mean_and_scale, then
     draw_crops_and_mirrors + crop_and_mirror (training) or centre_crop, then adapt_images
     (only for a network pretrained elsewhere on other images: InputAdaptation)
  -> cut_into_replica_shares (training batches drawn whole for several replicas)
  -> prefetch_without_autotune

Training crops at random and mirrors; evaluation takes the centre crop, in file order, with no
shuffling, so every evaluation sees the same images in the same order. Augmentation uses
stateless random ops keyed on (seed, batch index), so it is reproducible whatever the
parallelism.
"""
from __future__ import annotations

import dataclasses
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


ADAPT_MODES = ("none", "resize", "crop", "pad")


@dataclasses.dataclass(frozen=True)
class InputAdaptation:
    """How the crops of the target's images become the inputs of a network trained elsewhere
    on other images: `mode` resize (bilinear), crop (the centre) or pad (zeros, the mean once
    the mean is subtracted) each crop to `size` (height, width), or "none"; and `channels`:
    one grey channel repeated to that many (None: as they are). Applied after the crop, so nets
    fed differently still share one input stream."""
    mode: str
    size: tuple[int, int]
    channels: int | None = None

    def record(self) -> dict:
        return {"mode": self.mode, "size": list(self.size), "channels": self.channels}


def adapt_images(images: tf.Tensor, adaptation: InputAdaptation | None) -> tf.Tensor:
    """A batch of cropped inputs resized, centre-cropped or padded to the adaptation's size,
    its one channel repeated to its channels."""
    if adaptation is None:
        return images
    height, width = adaptation.size
    have_h, have_w = images.shape[1], images.shape[2]
    if adaptation.mode == "resize" and (have_h, have_w) != (height, width):
        images = tf.image.resize(images, (height, width), method="bilinear")
    elif adaptation.mode == "crop":
        top, left = (have_h - height) // 2, (have_w - width) // 2
        images = images[:, top:top + height, left:left + width, :]
    elif adaptation.mode == "pad":
        top, left = (height - have_h) // 2, (width - have_w) // 2
        images = tf.pad(images, [[0, 0], [top, height - have_h - top],
                                 [left, width - have_w - left], [0, 0]])
    if adaptation.channels and images.shape[-1] != adaptation.channels:
        images = tf.repeat(images, adaptation.channels, axis=-1)
    return images


@dataclasses.dataclass(frozen=True, eq=False)
class InputSettings:
    """What an input stream yields, whoever reads it: `build_dataset` takes the half and split
    to read and the strategy's InputContext (which share this pipeline reads) besides.

    batch_size: the global batch (each replica gets its share).
    training: random crops and mirrors, shuffled, repeated forever; otherwise the centre crop,
        one pass in file order.
    seed: the order of files and records and the crops and mirrors of training.
    crop: the side of the square crop; None for the network's (`default_crop`).
    model_name: the network fed: its input scale and its default crop.
    means: mean images to centre on instead of the half's own; each batch then holds a tuple
        of image tensors, one per mean (the same crops of the same images).
    deterministic: across workers, every worker reads the whole stream and keeps its replicas'
        shares of each global batch (what one process trains on), instead of its own shards.
    start_step: training resumes the stream at this step (the steps before are skipped).
    adaptations: per mean image, its InputAdaptation or None (None: none for any).
    limit: evaluation reads only the first `limit` examples (of all pipelines together).
    cache_bytes: a split whose decoded images fit is decoded once and kept in memory.
    Compared by identity (eq=False): mean images are arrays.
    """
    batch_size: int
    training: bool
    seed: int = 0
    crop: int | None = None
    model_name: str = "small"
    means: tuple[np.ndarray, ...] | None = None
    adaptations: tuple[InputAdaptation | None, ...] | None = None
    deterministic: bool = False
    start_step: int = 0
    limit: int | None = None
    cache_bytes: int = 1 << 30

    def __post_init__(self):
        if self.means is not None:
            object.__setattr__(self, "means", tuple(self.means))
        if self.adaptations is not None:
            object.__setattr__(self, "adaptations", tuple(self.adaptations))


@dataclasses.dataclass(frozen=True)
class PipelineShare:
    """The part of a stream one input pipeline reads and yields: `readers` pipelines split the
    records and this one is number `reader`; it draws batches of `batch_size`,
    `batches_per_step` per training step, and cuts each into `shares` equal parts of which it
    yields `local_shares` from `first_share` on (its replicas'; 1 share: the batch whole)."""
    batch_size: int
    readers: int = 1
    reader: int = 0
    batches_per_step: int = 1
    shares: int = 1
    first_share: int = 0
    local_shares: int = 1


def pipeline_share(settings: InputSettings,
                   input_context: tf.distribute.InputContext | None) -> PipelineShare:
    """Training batches are drawn and numbered as global batches and then cut into the
    replicas' shares, so the images, crops and order a run trains on do not depend on how many
    replicas share a batch. Across workers that means every worker reads every file; so there,
    unless `deterministic`, each worker reads its own shards (its own images) in batches of its
    replicas' size, as evaluation always does."""
    if input_context is None:
        return PipelineShare(batch_size=settings.batch_size)
    pipelines = input_context.num_input_pipelines
    replicas = input_context.num_replicas_in_sync
    local = replicas // pipelines
    if settings.training and (pipelines == 1 or settings.deterministic):
        if settings.batch_size % replicas:
            raise DataError(f"a global batch of {settings.batch_size} does not split over "
                            f"{replicas} replicas")
        return PipelineShare(batch_size=settings.batch_size, shares=replicas,
                             first_share=input_context.input_pipeline_id * local,
                             local_shares=local)
    return PipelineShare(
        batch_size=input_context.get_per_replica_batch_size(settings.batch_size),
        readers=pipelines, reader=input_context.input_pipeline_id, batches_per_step=local)


def crop_size(settings: InputSettings, image_shape, half_dir) -> int:
    height, width, _ = image_shape
    crop = settings.crop or default_crop(settings.model_name, min(height, width))
    if crop > min(height, width):
        raise DataError(f"crop {crop} is larger than the images ({height}x{width}) in {half_dir}")
    return crop


def means_to_subtract(settings: InputSettings, half_dir, manifest: dict) -> list[np.ndarray]:
    """The half's own mean image, or the settings' mean images, checked against the images."""
    height, width, channels = manifest["image_shape"]
    means = [mean_image(half_dir, manifest)] if settings.means is None else list(settings.means)
    for mean in means:
        if mean.shape != (height, width, channels):
            raise DataError(f"a mean image of shape {mean.shape} does not fit the "
                            f"{height}x{width}x{channels} images of {half_dir}")
    return means


def read_records(files: list[str], share: PipelineShare, *, training: bool,
                 seed: int) -> tf.data.Dataset:
    """This pipeline's serialized examples: its own files, or with fewer files than readers
    every k-th record of all of them. Training interleaves the files in a seeded order;
    evaluation reads one file after the other, so its order is the manifest's."""
    ds = tf.data.Dataset.from_tensor_slices(files)
    by_records = share.readers > len(files)
    if share.readers > 1 and not by_records:
        ds = ds.shard(share.readers, share.reader)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                           num_parallel_calls=PARALLEL_CALLS, deterministic=True)
    else:
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=1)
    if by_records:
        ds = ds.shard(share.readers, share.reader)
    return ds


def take_limit(ds: tf.data.Dataset, limit: int, share: PipelineShare) -> tf.data.Dataset:
    """This pipeline's part of the first `limit` examples (at least one)."""
    return ds.take(max(1, limit // share.readers))


def fits_in_cache(manifest: dict, split: str, cache_bytes: int) -> bool:
    """Small data (Fashion-MNIST, CIFAR) is decoded once and kept in memory as uint8: the
    pipeline then costs little next to training, and evaluations stop re-decoding."""
    height, width, channels = manifest["image_shape"]
    return manifest["counts"][split] * height * width * channels <= cache_bytes


def decode_examples(ds: tf.data.Dataset, image_shape) -> tf.data.Dataset:
    """Serialized examples -> (uint8 image of `image_shape`, int32 label)."""
    height, width, channels = image_shape

    def decode(serialized):
        example = records.parse_example(serialized)
        image = records.decode_image(example, channels)
        return tf.ensure_shape(image, [height, width, channels]), tf.cast(example["label"], tf.int32)

    return ds.map(decode, num_parallel_calls=PARALLEL_CALLS, deterministic=True)


def first_batch_index(settings: InputSettings, share: PipelineShare) -> int:
    """The number of this pipeline's first batch: a resumed training stream keeps the numbers
    (and so the crops and mirrors) of an uninterrupted run."""
    return settings.start_step * share.batches_per_step if settings.training else 0


def shuffle_and_repeat(ds: tf.data.Dataset, seed: int) -> tf.data.Dataset:
    """The order depends on the seed alone (not on the contents), so records shuffled before
    decoding come out in the order decoded images would."""
    return ds.shuffle(_SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True).repeat()


def skip_trained_batches(ds: tf.data.Dataset, first_batch: int,
                         batch_size: int) -> tf.data.Dataset:
    """A resumed run skips the examples of the steps already trained: read again, but not
    decoded unless they are cached."""
    return ds.skip(first_batch * batch_size)


def batch_and_number(ds: tf.data.Dataset, batch_size: int, *, training: bool,
                     first_batch: int) -> tf.data.Dataset:
    """(batch index, (images, labels)): training keeps only full batches, evaluation every
    example. Augmentation works on whole batches (per-image map calls would cost more than the
    small model's training step), its random draws keyed on the batch's index."""
    return ds.batch(batch_size, drop_remainder=training).enumerate(start=first_batch)


def subtract_mean_and_scale(images: tf.Tensor, mean: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """Caffe subtracts the mean image before cropping, then scales."""
    return (images - mean) * scale


def centre_crop(images: tf.Tensor, crop: int) -> tf.Tensor:
    height, width = images.shape[1], images.shape[2]
    top, left = (height - crop) // 2, (width - crop) // 2
    return images[:, top:top + crop, left:left + crop, :]


def draw_crops_and_mirrors(seed: int, index: tf.Tensor, count: tf.Tensor, height: int,
                           width: int, crop: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Per image of batch `index`: the rows and columns of a random crop ([count, crop] each)
    and whether to mirror it ([count]). Stateless draws keyed on (seed, index), so they are
    reproducible whatever the parallelism."""
    key = tf.stack([tf.cast(seed, tf.int64), index])
    draw = lambda salt, limit: tf.random.stateless_uniform(
        [count], seed=key + [0, salt], maxval=limit, dtype=tf.int32)
    rows = draw(0, height - crop + 1)[:, None] + tf.range(crop)[None, :]
    cols = draw(1, width - crop + 1)[:, None] + tf.range(crop)[None, :]
    mirror = tf.cast(draw(2, 2), tf.bool)
    return rows, cols, mirror


def crop_and_mirror(images: tf.Tensor, rows: tf.Tensor, cols: tf.Tensor,
                    mirror: tf.Tensor) -> tf.Tensor:
    """Each image's crop at its `rows` and `cols`, mirrored left to right where `mirror`."""
    images = tf.gather(images, rows, axis=1, batch_dims=1)
    images = tf.gather(images, cols, axis=2, batch_dims=1)
    return tf.where(mirror[:, None, None, None], tf.reverse(images, axis=[2]), images)


def normalise_and_crop(index, raw, labels, *, means: list[tf.Tensor], scale: tf.Tensor,
                       crop: int, training: bool, seed: int, as_tuple: bool,
                       adaptations=None):
    """A batch of uint8 images -> float32 network inputs, centred on each of `means`: random
    crops and mirrors drawn once per batch for every mean alike (training), or the centre
    crop; then each adapted by its entry of `adaptations` (adapt_images)."""
    raw = tf.cast(raw, tf.float32)
    if training:
        rows, cols, mirror = draw_crops_and_mirrors(seed, index, tf.shape(raw)[0],
                                                    raw.shape[1], raw.shape[2], crop)
        cut = lambda images: crop_and_mirror(images, rows, cols, mirror)
    else:
        cut = lambda images: centre_crop(images, crop)
    adaptations = adaptations or [None] * len(means)
    images = tuple(adapt_images(cut(subtract_mean_and_scale(raw, mean, scale)), adaptation)
                   for mean, adaptation in zip(means, adaptations))
    return (images if as_tuple else images[0]), labels


def cut_into_replica_shares(ds: tf.data.Dataset, share: PipelineShare) -> tf.data.Dataset:
    """This pipeline's replicas' shares of each global batch, one after the other: the strategy
    hands consecutive elements to its consecutive local replicas."""
    first, local, parts = share.first_share, share.local_shares, share.shares

    def shares(images, labels):
        cut = lambda t: tf.reshape(t, [parts, -1, *t.shape[1:]])[first:first + local]
        return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(cut, (images, labels)))

    return ds.flat_map(shares)


def prefetch_without_autotune(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Reads PREFETCH_BATCHES ahead, tf.data's autotuner off (see PARALLEL_CALLS)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(PREFETCH_BATCHES).with_options(options)


def build_dataset(half_dir, split: str, settings: InputSettings, *,
                  input_context: tf.distribute.InputContext | None = None,
                  manifest: dict | None = None) -> tf.data.Dataset:
    """Batches of (mean-subtracted, scaled float32 images [crop, crop, C], int32 labels) from
    the `split` of the half in `half_dir` (its manifest read if not given), or (a tuple of
    images, labels) given `settings.means`.

    With an `input_context` (from `strategy.distribute_datasets_from_function`) each pipeline
    yields its replicas' shares (`pipeline_share`). Training data repeats forever; evaluation
    data is one deterministic pass.
    """
    half_dir = Path(half_dir)
    manifest = manifest or load_half(half_dir)
    files = shard_paths(half_dir, manifest, split)
    if not files:
        raise DataError(f"{half_dir}: the manifest lists no {split} shards")
    image_shape = tuple(manifest["image_shape"])
    crop = crop_size(settings, image_shape, half_dir)
    means = [tf.constant(mean) for mean in means_to_subtract(settings, half_dir, manifest)]
    scale = tf.constant(input_scale(settings.model_name), tf.float32)
    share = pipeline_share(settings, input_context)
    training = settings.training
    first_batch = first_batch_index(settings, share)

    ds = read_records(files, share, training=training, seed=settings.seed)
    if settings.limit is not None and not training:
        ds = take_limit(ds, settings.limit, share)
    cached = fits_in_cache(manifest, split, settings.cache_bytes)
    if cached:
        ds = decode_examples(ds, image_shape).cache()
    if training:
        ds = shuffle_and_repeat(ds, settings.seed)
        ds = skip_trained_batches(ds, first_batch, share.batch_size)
    if not cached:
        ds = decode_examples(ds, image_shape)
    ds = batch_and_number(ds, share.batch_size, training=training, first_batch=first_batch)
    ds = ds.map(lambda index, batch: normalise_and_crop(
        index, *batch, means=means, scale=scale, crop=crop, training=training,
        seed=settings.seed, as_tuple=settings.means is not None,
        adaptations=settings.adaptations),
        num_parallel_calls=PARALLEL_CALLS, deterministic=True)
    if share.shares > 1:
        ds = cut_into_replica_shares(ds, share)
    return prefetch_without_autotune(ds)
