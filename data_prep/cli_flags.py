"""Every absl flag of data_prep, defined once.

Only the two commands, `data_prep.__main__` and `data_prep.splits.__main__`, read FLAGS; the
library takes explicit arguments. Importing this module in a process that also defines
keras_transfer's flags would clash on shared names (--source, --split), so tests run the CLIs in
subprocesses. The defaults of the library's arguments are read from `prepare` and
`SyntheticSpec`, so each is written once.
"""
import dataclasses
import inspect
import sys

from absl import flags

from data_prep.prepare import prepare
from data_prep.sources import SYNTHETIC_OPTION, SyntheticSpec

FLAGS = flags.FLAGS
_PREPARE = {name: p.default for name, p in inspect.signature(prepare).parameters.items()}

flags.DEFINE_string(
    "source", _PREPARE["source"],
    "fashion_mnist (Debian's IDX files), tfds:NAME[/CONFIG] (already prepared in "
    "--tfds_data_dir), folder:ROOT (class subfolders of images) or synthetic.")
flags.DEFINE_string(
    "split", _PREPARE["split"], "random:S (the paper's rule), natman, dissimilar, classes:FILE, "
    "or whole (every class in half A, no half B: the paper's whole-dataset nets).")
flags.DEFINE_string("out", _PREPARE["out"], "Output root: OUT/<dataset>/<split_dir>/{A,B}/ (A "
                    "only for --split=whole).")
flags.DEFINE_integer(
    "examples_per_class", _PREPARE["examples_per_class"],
    "Keep only the first N training images of every class (reduced-volume experiment).")
flags.DEFINE_string(
    "source_dir", _PREPARE["source_dir"],
    "Directory of the Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist).")
flags.DEFINE_string("tfds_data_dir", _PREPARE["tfds_data_dir"],
                    "TFDS data_dir holding the prepared tfds: dataset.")
flags.DEFINE_bool("overwrite", _PREPARE["overwrite"],
                  "Replace output prepared with different settings.")
flags.DEFINE_integer(
    "image_size", _PREPARE["image_size"],
    "Resize images to SIZE x SIZE. Default: the images' own size, stretched to the larger side "
    "if they are not square; 256 for ImageNet (the paper's) and for a TFDS dataset of mixed "
    "sizes; a folder of images of several sizes needs this flag.")
flags.DEFINE_enum(
    "encoding", _PREPARE["encoding"], ["auto", "png", "jpeg"],
    "Image encoding in the records; auto = PNG for small images, JPEG for photos.")
flags.DEFINE_integer(
    "num_workers", _PREPARE["num_workers"],
    "Encoding processes (default: one per core; 1 for tiny datasets).")
flags.DEFINE_bool("progress", _PREPARE["progress"], "Show a progress bar and the summary line.")

# --synthetic_<field> for each field of SyntheticSpec.
_SYNTHETIC_HELP = {"num_classes": "number of classes.", "image_size": "image height and width.",
                   "channels": "1 or 3 channels.", "train_per_class": "training images per class.",
                   "validation_per_class": "validation images per class.",
                   "seed": "generator seed."}
for _field in dataclasses.fields(SyntheticSpec):
    flags.DEFINE_integer(SYNTHETIC_OPTION.format(_field.name), _field.default,
                         f"synthetic source: {_SYNTHETIC_HELP[_field.name]}")

# Used by `python -m data_prep.splits` only.
flags.DEFINE_integer("num_classes", None, "data_prep.splits: number of classes K.")
flags.DEFINE_string("dataset", None,
                    "data_prep.splits: dataset name, for --split=dissimilar (e.g. cifar100).")


def list_in_help():
    """Makes `--help` list the flags above. absl's --help lists the key flags of the module named
    by sys.argv[0] (the command's own file, or the console script's path); the flags are
    defined here, so they are declared key flags of whichever it is."""
    for flag in FLAGS.get_flags_for_module(__name__):
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)
