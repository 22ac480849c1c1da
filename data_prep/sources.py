"""Where images come from: a small registry of sources, opened by `open_source(spec)`.

Every source exposes its class names (label order), the original labels of a split in the
source's order (cheap; used to select classes and count before any image is read), and the
images of chosen indices (arrays, encoded bytes or file paths; decoded in worker processes).
Splits are "train" and "validation"; a source's validation is its test set when it has no
validation set (Fashion-MNIST's 10,000 test images).
"""
import abc
import dataclasses
import os
from pathlib import Path

import numpy as np

from data_prep import classnames, idx, imaging, quiet_tensorflow, splits
from data_prep.errors import DataPrepError

SPLITS = ("train", "validation")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                  "validation": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Images at most this size are stored as PNG, larger ones are photos stored as JPEG.
SMALL_IMAGE = 64


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """Generated images: class k is a fixed random blob pattern plus noise, easy to learn."""
    num_classes: int = 10
    image_size: int = 28
    channels: int = 1
    train_per_class: int = 50
    validation_per_class: int = 10
    seed: int = 0


# The command line's option for a SyntheticSpec field (--synthetic_num_classes, ...).
SYNTHETIC_OPTION = "synthetic_{}"


def synthetic_options() -> list[str]:
    """The names of the --synthetic_<field> options, one per SyntheticSpec field."""
    return [SYNTHETIC_OPTION.format(f.name) for f in dataclasses.fields(SyntheticSpec)]


def synthetic_spec(source: str, given: dict) -> SyntheticSpec | None:
    """The SyntheticSpec of the --synthetic_<field> options `given` ({option: value}; fields
    not given keep their defaults) for --source=synthetic, None for another source, which
    takes none of them."""
    if source != "synthetic":
        if given:
            raise DataPrepError(f"{', '.join('--' + name for name in given)} apply only to "
                                "--source=synthetic")
        return None
    fields = {SYNTHETIC_OPTION.format(f.name): f.name for f in dataclasses.fields(SyntheticSpec)}
    return SyntheticSpec(**{fields[name]: value for name, value in given.items()})


class Source(abc.ABC):
    """Base class. Subclasses set the attributes and implement labels() and payloads()."""
    dataset: str                 # directory name under OUT
    class_names: tuple           # label order of the source
    image_shape: tuple | None    # (H, W, C) if every image has it, else (None, None, C)
    photos: bool                 # JPEG by default when True, PNG otherwise
    grouped_by_class: bool = False  # order is class by class: shuffle training shards
    streaming: bool = False      # payloads() needs ascending indices (sequential reads)
    options: dict = {}           # extra settings that change the output, for the manifest

    @abc.abstractmethod
    def labels(self, split):
        """Original labels (int64 array) of a split, in source order."""

    def common_size(self):
        """(height, width) that every image shares, for a source whose image_shape leaves it
        open; None when it cannot be told without decoding every image (TFDS)."""
        return None

    @abc.abstractmethod
    def payloads(self, split, indices):
        """Yields (payload, name) for each index, in the order given."""


class ArraySource(Source):
    """Images held in memory as uint8 arrays (Fashion-MNIST, synthetic)."""

    def __init__(self, dataset, class_names, arrays, options=None):
        self.dataset = dataset
        self.class_names = tuple(class_names)
        self._arrays = arrays  # split -> (images (N, H, W[, C]), labels (N,))
        images = arrays["train"][0]
        channels = images.shape[3] if images.ndim == 4 else 1
        self.image_shape = (images.shape[1], images.shape[2], channels)
        self.photos = False
        self.options = dict(options or {})

    def labels(self, split):
        return self._arrays[split][1].astype(np.int64)

    def payloads(self, split, indices):
        images = self._arrays[split][0]
        for i in indices:
            yield images[i], f"{self.dataset} {split} image {i}"


def fashion_mnist(source_dir=None):
    """Fashion-MNIST from the IDX files of Debian's dataset-fashion-mnist."""
    root = Path(source_dir or FASHION_MNIST_DIR)
    arrays = {}
    for split, (image_file, label_file) in _FASHION_FILES.items():
        paths = []
        for stem in (image_file, label_file):
            found = [root / (stem + ext) for ext in (".gz", "") if (root / (stem + ext)).is_file()]
            if not found:
                raise DataPrepError(
                    f"Fashion-MNIST not found: {root / (stem + '.gz')} is missing. Install it "
                    "with `apt-get update && apt-get install -y dataset-fashion-mnist` (as root), "
                    "or pass --source_dir=DIR holding the IDX files")
            paths.append(found[0])
        images = idx.read_idx(paths[0], expected_ndim=3)
        labels = idx.read_idx(paths[1], expected_ndim=1)
        if len(images) != len(labels):
            raise DataPrepError(
                f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels; "
                "the files do not belong together, reinstall dataset-fashion-mnist")
        if labels.size and labels.max() >= len(classnames.FASHION_MNIST):
            raise DataPrepError(f"{paths[1]} has label {labels.max()}, Fashion-MNIST has 10 "
                                "classes; the file is corrupt, reinstall dataset-fashion-mnist")
        arrays[split] = (images, labels)
    return ArraySource("fashion_mnist", classnames.FASHION_MNIST, arrays)


def synthetic(spec=None):
    """Tiny generated data for tests: fast, deterministic, learnable by a small convnet."""
    spec = spec or SyntheticSpec()
    for field in ("num_classes", "image_size", "train_per_class", "validation_per_class"):
        if getattr(spec, field) < (2 if field == "num_classes" else 1):
            raise DataPrepError(f"synthetic {field}={getattr(spec, field)} is too small")
    if spec.channels not in (1, 3):
        raise DataPrepError(f"synthetic channels={spec.channels}: use 1 or 3")
    k, size, c = spec.num_classes, spec.image_size, spec.channels
    rng = np.random.default_rng([spec.seed, 0])
    # A coarse 4x4 pattern per class, upsampled: a strong, low-frequency class signal.
    coarse = rng.uniform(0, 255, size=(k, 4, 4, c))
    reps = -(-size // 4)
    templates = coarse.repeat(reps, axis=1).repeat(reps, axis=2)[:, :size, :size, :]
    arrays = {}
    for stream, (split, per_class) in enumerate(
            (("train", spec.train_per_class), ("validation", spec.validation_per_class))):
        split_rng = np.random.default_rng([spec.seed, 1 + stream])
        labels = np.tile(np.arange(k), per_class)  # classes interleaved, like real data
        noise = split_rng.uniform(0, 255, size=(len(labels), size, size, c))
        images = np.clip(0.7 * templates[labels] + 0.3 * noise, 0, 255).astype(np.uint8)
        arrays[split] = (images if c == 3 else images[..., 0], labels.astype(np.uint8))
    names = tuple(f"class_{i:0{len(str(k - 1))}d}" for i in range(k))
    return ArraySource("synthetic", names, arrays, options={"synthetic": dataclasses.asdict(spec)})


class FolderSource(Source):
    """Class subfolders of images: ROOT/<class>/* or ROOT/<split>/<class>/* (TFDS ImageFolder).

    With split folders, training is ROOT/train and validation the first of ROOT/validation,
    ROOT/val, ROOT/test. Without them, every 10th image of each class (sorted by file name,
    positions 9, 19, ...) is held out for validation. Split folders must hold validation images
    of every training class, or the halves' accuracy would be measured on some classes only.
    """
    grouped_by_class = True

    def __init__(self, root):
        root = Path(root)
        if not root.is_dir():
            raise DataPrepError(f"folder source {root} is not a directory; pass "
                                "--source=folder:ROOT with ROOT holding one folder per class")
        self.root = root
        self.dataset = root.resolve().name
        self.photos = True
        self.image_shape = (None, None, 3)
        self.options = {}
        if (root / "train").is_dir():
            val_dir = next((root / d for d in ("validation", "val", "test")
                            if (root / d).is_dir()), None)
            if val_dir is None:
                raise DataPrepError(f"{root}/train exists but no {root}/validation (or val, "
                                    "test) folder; add one or use the flat ROOT/<class>/ layout")
            self.class_names = self._classes(root / "train")
            self._files = {"train": self._list(root / "train"),
                           "validation": self._list(val_dir)}
            self._refuse_empty(root / "train", self._files["train"])
            self._refuse_unseen(val_dir)
        else:
            self.class_names = self._classes(root)
            files = self._list(root)
            self._refuse_empty(root, files)
            rank = {}
            train, val = [], []
            for path, label in files:
                rank[label] = rank.get(label, -1) + 1
                (val if rank[label] % 10 == 9 else train).append((path, label))
            self._files = {"train": train, "validation": val}
        if not self._files["train"]:
            raise DataPrepError(f"folder source {root} holds no images "
                                f"({', '.join(sorted(_IMAGE_SUFFIXES))})")

    @staticmethod
    def _classes(folder):
        names = tuple(sorted(d.name for d in folder.iterdir()
                             if d.is_dir() and not d.name.startswith(".")))
        if len(names) < splits.CLASSES_PER_HALF:
            raise DataPrepError(f"{folder} has {len(names)} class folders; "
                                f"{splits.class_minimum()} (layout ROOT/<class>/*.jpg)")
        return names

    def _list(self, folder):
        """(path, label) of the images of the class folders in `folder`; refuses a class
        folder that training lacks."""
        files = []
        for label, name in enumerate(self.class_names):
            d = folder / name
            if d.is_dir():
                files += [(str(p), label) for p in sorted(d.iterdir())
                          if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file()]
        extra = sorted(d.name for d in folder.iterdir()
                       if d.is_dir() and not d.name.startswith(".")
                       and d.name not in self.class_names)
        if extra:
            raise DataPrepError(f"{folder} has class folders {extra[:5]} that training lacks; "
                                "every validation class must also be a training class")
        return files

    def _refuse_empty(self, folder, files):
        """Refuses a class folder of `folder` (training's, or the flat layout's) that holds
        no images."""
        empty = self._classes_without(files)
        if empty:
            raise DataPrepError(f"class folders {[str(folder / n) for n in empty[:5]]} hold no "
                                f"images ({', '.join(sorted(_IMAGE_SUFFIXES))}); add images "
                                "or remove the folders")

    def _classes_without(self, files):
        """The class names that have no image among `files`, in label order."""
        seen = {label for _, label in files}
        return [n for label, n in enumerate(self.class_names) if label not in seen]

    def _refuse_unseen(self, val_dir):
        """Refuses a validation folder lacking images of a training class: that class's
        top-1 would go unmeasured, and the half's validation accuracy with it."""
        unseen = self._classes_without(self._files["validation"])
        if unseen:
            shown = ", ".join(unseen[:5]) + (f" and {len(unseen) - 5} more" if len(unseen) > 5
                                             else "")
            raise DataPrepError(
                f"{val_dir} has no images of training classes {shown}; add validation images "
                f"to {val_dir}/<class>/ for them, or use the one-folder layout ROOT/<class>/, "
                "which holds out every 10th image of each class for validation (a class of "
                "fewer than 10 images gets none)")

    def labels(self, split):
        return np.array([label for _, label in self._files[split]], dtype=np.int64)

    def common_size(self):
        """The size every image has, from the files' headers; DataPrepError naming the first
        two files whose sizes differ (found at once in a folder of mixed photos)."""
        first = None
        for split in SPLITS:
            for path, _ in self._files[split]:
                size = imaging.size_of(path)
                if first is None:
                    first = (path, size)
                elif size != first[1]:
                    raise DataPrepError(
                        f"the images of {self.root} differ in size: {first[0]} is "
                        f"{_hxw(first[1])}, {path} is {_hxw(size)} (height x width); pass "
                        "--image_size=N to resize every image to N x N (the paper used 256)")
        return first[1]

    def payloads(self, split, indices):
        files = self._files[split]
        for i in indices:
            yield files[i][0], files[i][0]


def _hxw(size):
    return f"{size[0]}x{size[1]}"


class TfdsSource(Source):
    """A TFDS image-classification dataset already prepared in a data_dir, read with TFDS."""
    streaming = True

    def __init__(self, name, data_dir):
        quiet_tensorflow.import_tensorflow()  # before TFDS imports it
        import tensorflow_datasets as tfds

        self._tfds = tfds
        where = data_dir or "the default TFDS data_dir (~/tensorflow_datasets)"
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception as e:  # TFDS raises several types for an unknown or unreadable name
            raise DataPrepError(
                f"TFDS dataset '{name}' is not available in {where}: {str(e).splitlines()[0]}; "
                "prepare it first (e.g. `tfds build NAME --data_dir=DIR`, ImageNet with "
                "--manual_dir) and pass --tfds_data_dir=DIR") from None
        if not builder.is_prepared():
            raise DataPrepError(
                f"TFDS dataset '{name}' is not prepared in {where}; data_prep does not download. "
                "Prepare it first (e.g. `tfds build NAME --data_dir=DIR`, ImageNet with "
                "--manual_dir) and pass --tfds_data_dir=DIR")
        self._builder = builder
        features = builder.info.features
        image_key, label_key = self._keys(name, builder.info)
        self._image_key, self._label_key = image_key, label_key
        self.dataset = name.replace("/", "_")
        self.class_names = tuple(features[label_key].names)
        shape = tuple(features[image_key].shape)
        channels = shape[-1] or 3
        self.image_shape = (shape[0], shape[1], channels)
        self.photos = not (shape[0] and shape[1] and max(shape[:2]) <= SMALL_IMAGE)
        available = set(builder.info.splits.keys())
        self._splits = {"train": "train",
                        "validation": "validation" if "validation" in available else "test"}
        for ours, theirs in self._splits.items():
            if theirs not in available:
                raise DataPrepError(f"TFDS dataset '{name}' has splits {sorted(available)}; "
                                    f"data_prep needs 'train' and 'validation' or 'test'")
        self.options = {"tfds_version": str(builder.info.version),
                        "tfds_splits": dict(self._splits)}

    def _keys(self, name, info):
        tfds = self._tfds
        features = info.features
        sup = info.supervised_keys
        if (isinstance(sup, tuple) and len(sup) == 2 and isinstance(sup[0], str)
                and isinstance(features[sup[0]], tfds.features.Image)
                and isinstance(features[sup[1]], tfds.features.ClassLabel)):
            return sup
        images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
        labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
        if not images or not labels:
            raise DataPrepError(f"TFDS dataset '{name}' is not image classification (no Image "
                                "and ClassLabel feature); use a dataset with both")
        return images[0], labels[0]

    def _dataset(self, split):
        tfds = self._tfds
        # One file at a time, unshuffled: the same order in the label pass and the image pass.
        return self._builder.as_dataset(
            split=self._splits[split], shuffle_files=False,
            decoders={self._image_key: tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(interleave_cycle_length=1))

    def labels(self, split):
        key = self._label_key
        ds = self._dataset(split).map(lambda ex: ex[key]).batch(8192)
        batches = [b for b in self._tfds.as_numpy(ds)]
        return np.concatenate(batches).astype(np.int64) if batches else np.zeros(0, np.int64)

    def payloads(self, split, indices):
        indices = np.asarray(indices)
        if np.any(np.diff(indices) <= 0):
            raise ValueError("TfdsSource.payloads needs strictly ascending indices")
        key = self._image_key
        ds = self._dataset(split).map(lambda ex: ex[key])
        pos = 0
        for i, encoded in enumerate(self._tfds.as_numpy(ds)):
            if pos == len(indices):
                break
            if i == indices[pos]:
                yield encoded, f"{self.dataset} {split} example {i}"
                pos += 1


def canonical(source):
    """The one spelling of a source spec that the manifest records: a folder's path without
    trailing slashes, `.` parts or doubled slashes (folder:pics/, folder:./pics and folder:pics
    are one source). `..` parts are kept: through a symbolic link they lead elsewhere."""
    kind, _, arg = source.partition(":")
    if kind == "folder" and arg:
        return f"{kind}:{Path(arg)}"
    return source


# Sources named as the dataset they make (OUT/<name>/...).
ARRAY_SOURCES = ("fashion_mnist", "synthetic")
# TFDS datasets this project works with (flags/imagenet.flags; the dissimilar splits of
# data_prep.splits): tfds:NAME makes the dataset NAME (TfdsSource.dataset).
KNOWN_TFDS = ("imagenet2012", "cifar10", "cifar100")


def open_source(source, *, source_dir=None, tfds_data_dir=None, synthetic_spec=None):
    """Opens a source spec: fashion_mnist, synthetic, tfds:NAME[/CONFIG] or folder:ROOT."""
    if synthetic_spec is not None and source != "synthetic":
        raise DataPrepError(f"synthetic options were given but --source={source}; "
                            "use --source=synthetic or drop them")
    if source == "fashion_mnist":
        return fashion_mnist(source_dir)
    if source == "synthetic":
        return synthetic(synthetic_spec)
    kind, _, arg = source.partition(":")
    if kind == "tfds" and arg:
        return TfdsSource(arg, tfds_data_dir)
    if kind == "folder" and arg:
        return FolderSource(os.path.expanduser(arg))
    raise DataPrepError(f"unknown --source={source}; use fashion_mnist, synthetic, "
                        "tfds:NAME[/CONFIG] or folder:ROOT")
