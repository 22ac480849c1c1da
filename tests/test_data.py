"""The input pipeline reads data_prep's real TFRecords: checks, crops, order, sharding; then
each stage of it alone, on small tensors."""
import dataclasses
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
    evaluation = data.InputSettings(batch_size=7, training=False, crop=24)
    x, y = _collect(data.build_dataset(half, "validation", evaluation))
    raw = list(records.read_examples(data.shard_paths(half, manifest, "validation")))
    assert len(x) == len(raw) == manifest["counts"]["validation"]
    mean = np.load(half / "mean.npy")
    scale = data.input_scale("small")
    for got, label, example in zip(x, y, raw):
        want = ((example["image"].astype(np.float32) - mean) * scale)[2:26, 2:26]
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert label == example["label"]
    again, _ = _collect(data.build_dataset(half, "validation", evaluation))
    np.testing.assert_array_equal(x, again)


@pytest.mark.parametrize("training", [False, True])
def test_one_stream_centred_on_several_mean_images(synthetic_data, training):
    """A pack whose nets were trained with different means gets, per batch, the same crops of
    the same images centred on each mean: the stream of its own half's mean is the usual one."""
    half, other = _half(synthetic_data, "B"), _half(synthetic_data, "A")
    own_mean, other_mean = data.mean_image(half), data.mean_image(other)
    assert not np.allclose(own_mean, other_mean)
    make = lambda **kw: data.build_dataset(
        half, "train" if training else "validation",
        data.InputSettings(batch_size=8, training=training, seed=3, crop=24, **kw))
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
    make = lambda seed: data.build_dataset(
        half, "train", data.InputSettings(batch_size=16, training=True, seed=seed, crop=24))
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
        ds = data.build_dataset(half, "validation",
                                data.InputSettings(batch_size=8, training=False),
                                input_context=ctx)
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
        data.build_dataset(_half(synthetic_data), "train",
                           data.InputSettings(batch_size=4, training=True, crop=40))


@pytest.mark.slow
def test_training_images_are_crops_of_the_originals_some_mirrored(synthetic_data):
    half = _half(synthetic_data)
    manifest = data.load_half(half)
    mean = np.load(half / "mean.npy")
    originals = [(e["image"].astype(np.float32) - mean) * data.input_scale("small")
                 for e in records.read_examples(data.shard_paths(half, manifest, "train"))]
    x, _ = _collect(data.build_dataset(half, "train",
                                       data.InputSettings(batch_size=16, training=True, crop=24)),
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


# The stages alone. Each test states one stage's rule.

def _context(pipelines, pipeline, replicas):
    return tf.distribute.InputContext(num_input_pipelines=pipelines, input_pipeline_id=pipeline,
                                      num_replicas_in_sync=replicas)


def _list(ds):
    return [tf.nest.map_structure(lambda t: np.asarray(t).tolist(), x)
            for x in ds.as_numpy_iterator()]


def test_input_settings_are_frozen_and_hold_the_means_as_a_tuple():
    mean = np.zeros((4, 4, 1), np.float32)
    settings = data.InputSettings(batch_size=8, training=True, means=[mean, mean])
    assert isinstance(settings.means, tuple) and len(settings.means) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.batch_size = 16
    assert data.InputSettings(batch_size=8, training=False).means is None


def test_pipeline_share_training_draws_global_batches_cut_into_the_replicas_shares():
    train = data.InputSettings(batch_size=8, training=True)
    assert data.pipeline_share(train, None) == data.PipelineShare(batch_size=8)
    # One pipeline feeding two replicas draws the global batch and cuts it in two.
    assert data.pipeline_share(train, _context(1, 0, 2)) == data.PipelineShare(
        batch_size=8, shares=2, first_share=0, local_shares=2)
    # Two workers of two replicas each, deterministic: both read the whole stream, the second
    # keeps the last two of the four shares.
    det = dataclasses.replace(train, deterministic=True)
    assert data.pipeline_share(det, _context(2, 1, 4)) == data.PipelineShare(
        batch_size=8, shares=4, first_share=2, local_shares=2)
    with pytest.raises(data.DataError, match="does not split over 2 replicas"):
        data.pipeline_share(dataclasses.replace(train, batch_size=9), _context(1, 0, 2))


def test_pipeline_share_otherwise_each_pipeline_reads_its_own_part_in_replica_batches():
    # Two workers, not deterministic: each reads its own part, two replica batches per step.
    train = data.InputSettings(batch_size=8, training=True)
    assert data.pipeline_share(train, _context(2, 1, 4)) == data.PipelineShare(
        batch_size=2, readers=2, reader=1, batches_per_step=2)
    # Evaluation never cuts a global batch, even from one pipeline.
    evaluation = data.InputSettings(batch_size=8, training=False)
    assert data.pipeline_share(evaluation, _context(1, 0, 2)) == data.PipelineShare(
        batch_size=4, batches_per_step=2)


def test_crop_size_is_the_networks_unless_given():
    settings = data.InputSettings(batch_size=8, training=True)
    assert data.crop_size(settings, (28, 30, 1), "half") == data.default_crop("small", 28) == 26
    assert data.crop_size(dataclasses.replace(settings, crop=20), (28, 30, 1), "half") == 20
    with pytest.raises(data.DataError, match="crop 29 is larger"):
        data.crop_size(dataclasses.replace(settings, crop=29), (28, 30, 1), "half")


def test_means_to_subtract_are_the_halfs_own_unless_given(synthetic_data):
    half, other = _half(synthetic_data, "B"), _half(synthetic_data, "A")
    manifest = data.load_half(half)
    own, = data.means_to_subtract(data.InputSettings(batch_size=8, training=True), half, manifest)
    np.testing.assert_array_equal(own, np.load(half / "mean.npy"))
    given = data.InputSettings(batch_size=8, training=True, means=[data.mean_image(other), own])
    got = data.means_to_subtract(given, half, manifest)
    np.testing.assert_array_equal(got[0], data.mean_image(other))
    np.testing.assert_array_equal(got[1], own)


def _serialized(files):
    return [[bytes(r) for r in tf.data.TFRecordDataset(f).as_numpy_iterator()] for f in files]


def test_read_records_evaluation_reads_the_files_one_after_the_other(synthetic_data):
    half = _half(synthetic_data)
    files = data.shard_paths(half, data.load_half(half), "validation")
    per_file = _serialized(files)
    one = data.read_records(files, data.PipelineShare(batch_size=8), training=False, seed=0)
    assert [bytes(r) for r in one.as_numpy_iterator()] == per_file[0] + per_file[1]
    # As many readers as files: each reads its own file.
    for reader in range(2):
        share = data.PipelineShare(batch_size=8, readers=2, reader=reader)
        mine = data.read_records(files, share, training=False, seed=0)
        assert [bytes(r) for r in mine.as_numpy_iterator()] == per_file[reader]
    # More readers than files: each reads every file and keeps every third record.
    share = data.PipelineShare(batch_size=8, readers=3, reader=1)
    mine = data.read_records(files, share, training=False, seed=0)
    assert [bytes(r) for r in mine.as_numpy_iterator()] == (per_file[0] + per_file[1])[1::3]


def test_read_records_training_interleaves_the_files_in_a_seeded_order(synthetic_data):
    half = _half(synthetic_data)
    files = data.shard_paths(half, data.load_half(half), "train")
    per_file = _serialized(files)
    read = lambda seed: [bytes(r) for r in data.read_records(
        files, data.PipelineShare(batch_size=8), training=True, seed=seed).as_numpy_iterator()]
    assert read(0) == read(0)
    assert sorted(read(0)) == sorted(per_file[0] + per_file[1])
    firsts = set()
    for seed in range(8):
        records_ = read(seed)
        assert {records_[0] in per_file[0], records_[1] in per_file[0]} == {True, False}
        firsts.add(records_[0] in per_file[0])
    assert firsts == {True, False}  # the seed decides which file comes first


def test_take_limit_is_each_readers_part_of_the_limit_at_least_one():
    ds = tf.data.Dataset.range(100)
    assert _list(data.take_limit(ds, 10, data.PipelineShare(batch_size=8))) == list(range(10))
    two = data.PipelineShare(batch_size=8, readers=2)
    assert len(_list(data.take_limit(ds, 11, two))) == 5
    assert len(_list(data.take_limit(ds, 1, two))) == 1


def test_fits_in_cache_compares_the_decoded_bytes():
    manifest = {"image_shape": [4, 5, 3], "counts": {"train": 10, "validation": 2}}
    assert data.fits_in_cache(manifest, "train", 600)
    assert not data.fits_in_cache(manifest, "train", 599)
    assert data.fits_in_cache(manifest, "validation", 120)


def test_decode_examples_gives_the_uint8_image_and_the_int32_label(synthetic_data):
    half = _half(synthetic_data)
    manifest = data.load_half(half)
    files = data.shard_paths(half, manifest, "validation")
    decoded = data.decode_examples(tf.data.TFRecordDataset(files), manifest["image_shape"])
    assert decoded.element_spec == (tf.TensorSpec([28, 28, 1], tf.uint8),
                                    tf.TensorSpec([], tf.int32))
    for (image, label), example in zip(decoded.as_numpy_iterator(), records.read_examples(files)):
        np.testing.assert_array_equal(image, example["image"])
        assert label == example["label"]


def test_first_batch_index_counts_this_pipelines_batches_of_the_trained_steps():
    share = data.PipelineShare(batch_size=2, batches_per_step=2)
    resumed = data.InputSettings(batch_size=8, training=True, start_step=3)
    assert data.first_batch_index(resumed, share) == 6
    assert data.first_batch_index(dataclasses.replace(resumed, training=False), share) == 0


def test_shuffle_and_repeat_order_depends_on_the_seed_alone_and_reshuffles_each_epoch():
    shuffle = lambda ds, seed: _list(data.shuffle_and_repeat(ds, seed).take(20))
    numbers = shuffle(tf.data.Dataset.range(10), seed=4)
    assert numbers == shuffle(tf.data.Dataset.range(10), seed=4)
    # The same permutation of other contents: what decoding does not change.
    sevens = tf.data.Dataset.range(10).map(lambda n: 7 * n)
    assert shuffle(sevens, seed=4) == [7 * n for n in numbers]
    assert numbers != shuffle(tf.data.Dataset.range(10), seed=5)
    first, second = numbers[:10], numbers[10:]
    assert sorted(first) == sorted(second) == list(range(10)) and first != second


def test_skip_trained_batches_skips_their_examples():
    ds = data.skip_trained_batches(tf.data.Dataset.range(100), first_batch=3, batch_size=4)
    assert _list(ds)[:2] == [12, 13]


def test_batch_and_number_numbers_from_the_first_batch_and_keeps_full_ones_in_training():
    ds = tf.data.Dataset.range(10)
    train = _list(data.batch_and_number(ds, 4, training=True, first_batch=5))
    assert train == [(5, [0, 1, 2, 3]), (6, [4, 5, 6, 7])]
    evaluation = _list(data.batch_and_number(ds, 4, training=False, first_batch=0))
    assert [index for index, _ in evaluation] == [0, 1, 2] and evaluation[-1][1] == [8, 9]


def test_subtract_mean_and_scale():
    images = tf.constant([[[[10.0]], [[20.0]]]])  # one 2x1x1 image
    mean = tf.constant([[[4.0]], [[6.0]]])
    got = data.subtract_mean_and_scale(images, mean, tf.constant(0.5))
    np.testing.assert_array_equal(got.numpy().ravel(), [3.0, 7.0])


def test_centre_crop_takes_the_middle_rows_and_columns():
    images = tf.reshape(tf.range(2 * 7 * 6, dtype=tf.float32), [2, 7, 6, 1])
    got = data.centre_crop(images, 3)
    np.testing.assert_array_equal(got, images.numpy()[:, 2:5, 1:4, :])


def test_draw_crops_and_mirrors_is_keyed_on_seed_and_batch_index_and_covers_every_offset():
    draw = lambda seed, index: [t.numpy() for t in data.draw_crops_and_mirrors(
        seed, tf.constant(index, tf.int64), 400, 9, 7, 5)]
    rows, cols, mirror = draw(1, 3)
    for got, again in zip((rows, cols, mirror), draw(1, 3)):
        np.testing.assert_array_equal(got, again)
    assert not np.array_equal(rows, draw(1, 4)[0]) and not np.array_equal(rows, draw(2, 3)[0])
    assert rows.shape == cols.shape == (400, 5) and mirror.shape == (400,)
    np.testing.assert_array_equal(rows - rows[:, :1], np.broadcast_to(np.arange(5), (400, 5)))
    np.testing.assert_array_equal(cols - cols[:, :1], np.broadcast_to(np.arange(5), (400, 5)))
    assert set(rows[:, 0]) == set(range(9 - 5 + 1)) and set(cols[:, 0]) == set(range(7 - 5 + 1))
    assert 100 < mirror.sum() < 300


def test_crop_and_mirror_cuts_each_image_at_its_offsets_and_mirrors_where_told():
    images = tf.reshape(tf.range(2 * 6 * 6, dtype=tf.float32), [2, 6, 6, 1])
    rows = tf.constant([[0, 1, 2], [3, 4, 5]])
    cols = tf.constant([[1, 2, 3], [0, 1, 2]])
    got = data.crop_and_mirror(images, rows, cols, tf.constant([False, True])).numpy()
    np.testing.assert_array_equal(got[0], images.numpy()[0, 0:3, 1:4])
    np.testing.assert_array_equal(got[1], images.numpy()[1, 3:6, 0:3][:, ::-1])


def test_normalise_and_crop_subtracts_each_mean_then_crops_alike():
    raw = tf.reshape(tf.range(4 * 8 * 8, dtype=tf.int32) % 256, [4, 8, 8, 1])
    raw = tf.cast(raw, tf.uint8)
    means = [tf.zeros([8, 8, 1]), tf.fill([8, 8, 1], 2.0)]
    labels = tf.range(4)
    kw = dict(means=means, scale=tf.constant(0.5), crop=6, seed=1)
    (first, second), got_labels = data.normalise_and_crop(
        tf.constant(0, tf.int64), raw, labels, training=True, as_tuple=True, **kw)
    np.testing.assert_array_equal(got_labels, labels)
    assert first.shape == (4, 6, 6, 1)
    np.testing.assert_allclose(first - second, 1.0)  # the same crops, centred on each mean
    centre, _ = data.normalise_and_crop(tf.constant(0, tf.int64), raw, labels, training=False,
                                        as_tuple=False, **kw)
    np.testing.assert_array_equal(centre, (raw.numpy()[:, 1:7, 1:7] * 0.5).astype(np.float32))


def test_cut_into_replica_shares_yields_this_pipelines_shares_in_order():
    batch = (tf.reshape(tf.range(8.0), [1, 8, 1]), tf.reshape(tf.range(8), [1, 8]))
    ds = tf.data.Dataset.from_tensor_slices(batch)  # one global batch of 8
    share = data.PipelineShare(batch_size=8, shares=4, first_share=2, local_shares=2)
    got = _list(data.cut_into_replica_shares(ds, share))
    assert [labels for _, labels in got] == [[4, 5], [6, 7]]
    assert [images for images, _ in got] == [[[4.0], [5.0]], [[6.0], [7.0]]]


def test_prefetch_without_autotune_turns_the_autotuner_off():
    ds = data.prefetch_without_autotune(tf.data.Dataset.range(5))
    assert ds.options().autotune.enabled is False
    assert _list(ds) == list(range(5))
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
