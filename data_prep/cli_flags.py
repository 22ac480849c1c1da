"""Every absl flag of data_prep, defined once.

Only `data_prep.__main__` and the `data_prep.splits` command read FLAGS; the library takes
explicit arguments. Importing this module in a process that also defines keras_transfer's
flags would clash on shared names (--source, --split), so tests run the CLIs in subprocesses.
"""
from absl import flags

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "source", "fashion_mnist",
    "fashion_mnist (Debian's IDX files), tfds:NAME[/CONFIG] (already prepared in "
    "--tfds_data_dir), folder:ROOT (class subfolders of images) or synthetic.")
flags.DEFINE_string(
    "split", "random:0", "random:S (the paper's rule), natman, dissimilar or classes:FILE.")
flags.DEFINE_string("out", "data", "Output root: OUT/<dataset>/<split_dir>/{A,B}/.")
flags.DEFINE_integer(
    "examples_per_class", None,
    "Keep only the first N training images of every class (reduced-volume experiment).")
flags.DEFINE_string(
    "source_dir", None,
    "Directory of the Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist).")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir holding the prepared tfds: dataset.")
flags.DEFINE_bool("overwrite", False, "Replace output prepared with different settings.")
flags.DEFINE_integer(
    "image_size", None,
    "Resize images to SIZE x SIZE (default: the source's own size; 256 for ImageNet and for "
    "sources whose images differ in size, as in the paper).")
flags.DEFINE_enum(
    "encoding", "auto", ["auto", "png", "jpeg"],
    "Image encoding in the records; auto = PNG for small images, JPEG for photos.")
flags.DEFINE_integer(
    "num_workers", None, "Encoding processes (default: one per core; 1 for tiny datasets).")
flags.DEFINE_bool("progress", True, "Show a progress bar and the summary line.")

flags.DEFINE_integer("synthetic_num_classes", 10, "synthetic source: number of classes.")
flags.DEFINE_integer("synthetic_image_size", 28, "synthetic source: image height and width.")
flags.DEFINE_integer("synthetic_channels", 1, "synthetic source: 1 or 3 channels.")
flags.DEFINE_integer("synthetic_train_per_class", 50,
                     "synthetic source: training images per class.")
flags.DEFINE_integer("synthetic_validation_per_class", 10,
                     "synthetic source: validation images per class.")
flags.DEFINE_integer("synthetic_seed", 0, "synthetic source: generator seed.")

# Used by `python -m data_prep.splits` only.
flags.DEFINE_integer("num_classes", None, "data_prep.splits: number of classes K.")
flags.DEFINE_string("dataset", None,
                    "data_prep.splits: dataset name, for --split=dissimilar (e.g. cifar100).")
