"""The input pipeline reads data_prep's real TFRecords: checks, crops, order, sharding."""
import shutil

import numpy as np
import pytest
import tensorflow as tf

from data_prep import records
from keras_transfer import data


def _half(data_dir, half="B"):
    return data_dir / "synthetic" / "random_0" / half


def _collect(ds, batches=None):
    images, labels = [], []
    for i, (x, y) in enumerate(ds):
        if batches is not None and i >= batches:
            break
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def test_evaluation_is_the_centre_crop_of_the_mean_subtracted_images_in_file_order(synthetic_data):
    half = _half(synthetic_data)
    manifest = data.load_half(half)
    x, y = _collect(data.build_dataset(half, "validation", batch_size=7, training=False, crop=24))
    raw = list(records.read_examples(data.shard_paths(half, manifest, "validation")))
    assert len(x) == len(raw) == manifest["counts"]["validation"]
    mean = np.load(half / "mean.npy")
    scale = data.input_scale("small")
    for got, label, example in zip(x, y, raw):
        want = ((example["image"].astype(np.float32) - mean) * scale)[2:26, 2:26]
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert label == example["label"]
    again, _ = _collect(data.build_dataset(half, "validation", batch_size=7, training=False, crop=24))
    np.testing.assert_array_equal(x, again)


@pytest.mark.parametrize("training", [False, True])
def test_one_stream_centred_on_several_mean_images(synthetic_data, training):
    """A pack whose nets were trained with different means gets, per batch, the same crops of
    the same images centred on each mean: the stream of its own half's mean is the usual one."""
    half, other = _half(synthetic_data, "B"), _half(synthetic_data, "A")
    own_mean, other_mean = data.mean_image(half), data.mean_image(other)
    assert not np.allclose(own_mean, other_mean)
    make = lambda **kw: data.build_dataset(half, "train" if training else "validation",
                                           batch_size=8, training=training, seed=3, crop=24, **kw)
    usual = list(make().take(3))
    both = list(make(means=[other_mean, own_mean]).take(3))
    scale = data.input_scale("small")
    for (x, y), ((x_other, x_own), y_both) in zip(usual, both):
        np.testing.assert_array_equal(y, y_both)
        np.testing.assert_allclose(x_own, x, atol=1e-6)
        if not training:  # the centre crop: the two differ by the crop of the means' difference
            shift = ((own_mean - other_mean) * scale)[2:26, 2:26]
            np.testing.assert_allclose(x_other - x_own, np.broadcast_to(shift, x.shape),
                                       atol=1e-5)
        else:  # crops and mirrors are drawn once per batch, for every mean alike
            np.testing.assert_allclose(np.abs(x_other - x_own).sum((1, 2, 3)) > 0, True)
    with pytest.raises(data.DataError, match="does not fit"):
        make(means=[own_mean[:20]])


def test_training_batches_are_cropped_mirrored_shuffled_and_reproducible(synthetic_data):
    half = _half(synthetic_data)
    make = lambda seed: data.build_dataset(half, "train", batch_size=16, training=True,
                                           seed=seed, crop=24)
    x0, y0 = _collect(make(0), batches=6)
    x0b, y0b = _collect(make(0), batches=6)
    x1, y1 = _collect(make(1), batches=6)
    assert x0.shape == (96, 24, 24, 1) and x0.dtype == np.float32
    np.testing.assert_array_equal(x0, x0b)
    np.testing.assert_array_equal(y0, y0b)
    assert not np.array_equal(y0, y1)  # another seed, another order
    counts = np.bincount(y0, minlength=5)
    assert counts.min() > 0 and set(y0) <= set(range(5))  # shuffled across both shards
    # Training repeats: more batches than one epoch holds.
    epoch = data.load_half(half)["counts"]["train"]
    assert len(_collect(make(0), batches=epoch // 16 + 3)[0]) == (epoch // 16 + 3) * 16


def test_per_replica_batches_and_disjoint_pipelines(synthetic_data):
    half = _half(synthetic_data)
    parts = []
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                         num_replicas_in_sync=2)
        ds = data.build_dataset(half, "validation", batch_size=8, training=False, input_context=ctx)
        x, y = _collect(ds)
        assert next(iter(ds))[0].shape[0] == 4  # the global batch of 8 split over 2 replicas
        parts.append(x.reshape(len(x), -1))
    total = data.load_half(half)["counts"]["validation"]
    assert len(parts[0]) + len(parts[1]) == total
    both = np.concatenate(parts)
    assert len(np.unique(both, axis=0)) == total  # every image once, in exactly one pipeline


def test_truncated_shard_is_refused_naming_it(synthetic_data, tmp_path):
    half = tmp_path / "B"
    shutil.copytree(_half(synthetic_data), half)
    shard = sorted(half.glob("train-*.tfrecord"))[0]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(data.DataError, match=shard.name):
        data.load_half(half)


def test_flipped_byte_needs_the_full_hash(synthetic_data, tmp_path):
    half = tmp_path / "B"
    shutil.copytree(_half(synthetic_data), half)
    shard = sorted(half.glob("validation-*.tfrecord"))[-1]
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    shard.write_bytes(bytes(raw))
    data.load_half(half)  # same size: the cheap check passes
    with pytest.raises(data.DataError, match=shard.name):
        data.load_half(half, verify_data=True)


def test_missing_manifest_says_how_to_prepare(tmp_path):
    with pytest.raises(data.DataError, match="data_prep"):
        data.load_half(tmp_path / "nothing" / "B")


def test_crop_larger_than_the_images_is_refused(synthetic_data):
    with pytest.raises(data.DataError, match="crop"):
        data.build_dataset(_half(synthetic_data), "train", batch_size=4, training=True, crop=40)


@pytest.mark.slow
def test_training_images_are_crops_of_the_originals_some_mirrored(synthetic_data):
    half = _half(synthetic_data)
    manifest = data.load_half(half)
    mean = np.load(half / "mean.npy")
    originals = [(e["image"].astype(np.float32) - mean) * data.input_scale("small")
                 for e in records.read_examples(data.shard_paths(half, manifest, "train"))]
    x, _ = _collect(data.build_dataset(half, "train", batch_size=16, training=True, crop=24),
                    batches=2)
    mirrored = 0
    for image in x:
        matches = [(flip, oy, ox) for original in originals for flip in (False, True)
                   for oy in range(5) for ox in range(5)
                   if np.allclose((original[:, ::-1] if flip else original)[oy:oy + 24, ox:ox + 24],
                                  image, atol=1e-5)]
        assert matches, "a training image is not a crop of any original"
        mirrored += all(flip for flip, _, _ in matches)
    assert 0 < mirrored < len(x)  # about half are mirrored


def test_halves_of_different_preparations_are_refused(synthetic_data, tmp_path):
    from data_prep.prepare import prepare
    from data_prep.sources import SyntheticSpec

    data_dir = tmp_path / "data"
    shutil.copytree(synthetic_data, data_dir)
    theirs = prepare(source="synthetic", split="random:0", out=tmp_path / "theirs",
                     progress=False,
                     synthetic=SyntheticSpec(num_classes=10, image_size=28, channels=1,
                                             train_per_class=24, validation_per_class=8, seed=1))
    shutil.rmtree(_half(data_dir, "A"))
    shutil.copytree(theirs["A"], _half(data_dir, "A"))
    for h in "AB":
        with pytest.raises(data.DataError, match="half A and half B .*were prepared by different "
                                                 "runs; run `python -m data_prep .*--overwrite`"):
            data.load_half(_half(data_dir, h))
