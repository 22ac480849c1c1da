"""The tf.train.Example layout of the shards (docs/formats.md), written and read here only."""
import tensorflow as tf

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/channels": tf.io.FixedLenFeature([], tf.int64),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "original_label": tf.io.FixedLenFeature([], tf.int64),
    "class_name": tf.io.FixedLenFeature([], tf.string),
}


def _bytes(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def encode_example(*, image, height, width, channels, label, original_label, class_name):
    """Serialized tf.train.Example; deterministic (map keys sorted) so re-runs are identical."""
    if isinstance(class_name, str):
        class_name = class_name.encode("utf-8")
    example = tf.train.Example(features=tf.train.Features(feature={
        "image/encoded": _bytes(image),
        "image/height": _int64(height),
        "image/width": _int64(width),
        "image/channels": _int64(channels),
        "label": _int64(label),
        "original_label": _int64(original_label),
        "class_name": _bytes(class_name),
    }))
    return example.SerializeToString(deterministic=True)


def parse_example(serialized):
    """Parses one serialized Example (scalar) or a batch (vector) with FEATURES."""
    serialized = tf.convert_to_tensor(serialized, dtype=tf.string)
    if serialized.shape.rank == 0:
        return tf.io.parse_single_example(serialized, FEATURES)
    return tf.io.parse_example(serialized, FEATURES)


def decode_image(parsed, channels):
    """The uint8 image of a parsed example (PNG or JPEG), with a static channel count."""
    return tf.io.decode_image(parsed["image/encoded"], channels=channels,
                              expand_animations=False)


def read_examples(files):
    """Yields every example of the given shards as a dict of numpy values, image decoded."""
    for serialized in tf.data.TFRecordDataset([str(f) for f in files]):
        parsed = parse_example(serialized)
        out = {k: v.numpy() for k, v in parsed.items()}
        out["image"] = decode_image(parsed, int(out["image/channels"])).numpy()
        out["class_name"] = out["class_name"].decode("utf-8")
        yield out
