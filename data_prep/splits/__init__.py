"""How the classes of a dataset are divided into the halves A and B.

Rules (the `--split` spec):
  random:S     the paper's rule, exactly: numpy's legacy RNG seeded with the LIST [S],
               A = sorted(choice(arange(K), K // 2, replace=False)), B = the rest.
               (Seeding with the int S gives different halves.)
  natman       ILSVRC-2012 natural (449 classes) vs man-made (551), by sorted-wnid index.
  dissimilar   a named dissimilar split of a small dataset (see DISSIMILAR).
  classes:FILE explicit JSON {"A": [...], "B": [...]} of class names or indices.
  whole        every class in half A and no half B: the whole dataset, for the paper's
               whole-dataset nets (its random-features control and reduced-volume series).

Halves are lists of original class indices in ascending order; label k within a half is the
k-th of them, so labels follow the original class order. Every rule but `whole` gives two
non-empty halves; `Halves.names` says which halves a split has.

`python -m data_prep.splits --num_classes=K --split=random:S` prints the halves as JSON.
"""
import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from data_prep import classnames
from data_prep.errors import DataPrepError

RULES = ("random:S", "natman", "dissimilar", "classes:FILE", "whole")
WHOLE = "whole"  # the rule, and the folder name, of the whole-dataset split
# Fewer classes in a half, and a net trained on it would learn nothing (and score 1.0).
CLASSES_PER_HALF = 2

# ILSVRC-2012 natural classes, as index ranges [start, stop) in sorted-wnid order.
NATURAL_RANGES = ((0, 398), (936, 959), (970, 971), (972, 999))
NATURAL = tuple(i for start, stop in NATURAL_RANGES for i in range(start, stop))

# dataset -> (its class names in label order, the names of half A, what A and B are).
DISSIMILAR = {
    "fashion_mnist": (
        classnames.FASHION_MNIST,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Shirt"),
        "A = garments, B = footwear and bags"),
    "cifar10": (
        classnames.CIFAR10,
        ("bird", "cat", "deer", "dog", "frog", "horse"),
        "A = animals, B = vehicles"),
    "cifar100": (
        classnames.CIFAR100,
        tuple(name for name, coarse in zip(classnames.CIFAR100, classnames.CIFAR100_FINE_TO_COARSE)
              if classnames.CIFAR100_SUPERCLASSES[coarse]
              not in classnames.CIFAR100_MAN_MADE_SUPERCLASSES),
        "A = natural superclasses (70 classes), B = man-made superclasses (30 classes)"),
}


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """A parsed `--split` value."""
    spec: str
    rule: str
    seed: int | None = None
    file: str | None = None


@dataclasses.dataclass(frozen=True)
class Halves:
    """Original class indices of each half, ascending."""
    A: tuple[int, ...]
    B: tuple[int, ...]

    def classes(self, half: str) -> tuple[int, ...]:
        """The original class indices of half "A" or "B"."""
        return {"A": self.A, "B": self.B}[half]

    @property
    def names(self) -> tuple[str, ...]:
        """The halves this split has: ("A", "B"), or ("A",) for the whole dataset."""
        return tuple(h for h, classes in (("A", self.A), ("B", self.B)) if classes)


def parse_spec(spec):
    """Parses and checks the syntax of a `--split` value (no data needed)."""
    if not isinstance(spec, str) or not spec:
        raise DataPrepError(f"--split is empty; use one of {', '.join(RULES)}")
    rule, _, arg = spec.partition(":")
    if rule == "random":
        # The seed goes to numpy's legacy RNG, which takes 0 .. 2**32 - 1.
        digits = arg.lstrip("0") or "0"
        if not re.fullmatch(r"\d+", arg) or len(digits) > 10 or int(digits) >= 2**32:
            raise DataPrepError(
                f"bad --split={spec}: the seed must be an integer from 0 to 2**32 - 1, "
                "e.g. random:0")
        return SplitSpec(spec, "random", seed=int(digits))
    if rule in ("natman", "dissimilar", WHOLE):
        if arg:
            raise DataPrepError(f"bad --split={spec}: {rule} takes no argument; use --split={rule}")
        return SplitSpec(spec, rule)
    if rule == "classes":
        if not arg:
            raise DataPrepError(
                f"bad --split={spec}: name the JSON file, e.g. classes:/path/my_split.json")
        return SplitSpec(spec, "classes", file=arg)
    raise DataPrepError(f"unknown --split={spec}; use one of {', '.join(RULES)}")


def split_dirname(spec, examples_per_class=None):
    """The directory name of a split: random:3 -> random_3, classes:/x/s.json -> classes_s,
    plus _epcN for a reduced-volume dataset."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    if parsed.rule == "random":
        name = f"random_{parsed.seed}"
    elif parsed.rule == "classes":
        name = "classes_" + re.sub(r"[^A-Za-z0-9_.-]", "_", Path(parsed.file).stem)
    else:
        name = parsed.rule
    if examples_per_class is not None:
        check_examples_per_class(examples_per_class)
        name += f"_epc{examples_per_class}"
    return name


def check_examples_per_class(n):
    """The reduced-volume size must be a positive integer (None keeps every example)."""
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise DataPrepError(
            f"--examples_per_class={n} is invalid: pass a positive number of training images "
            "per class, or omit it to keep them all")


def fewest_classes(rule):
    """The fewest classes a dataset needs for a split by `rule` (a SplitSpec.rule):
    CLASSES_PER_HALF in each half the split has."""
    return CLASSES_PER_HALF * (1 if rule == WHOLE else 2)


def class_minimum():
    """The fewest classes a dataset needs, in words, for messages refusing too few."""
    return (f"a split into halves A and B needs {fewest_classes('random')} classes or more, "
            f"{CLASSES_PER_HALF} per half; --split={WHOLE} needs {fewest_classes(WHOLE)}")


def random_halves(num_classes, seed):
    """The paper's random halves: np.random.seed([seed]) (a list), then choice of K // 2."""
    if num_classes < CLASSES_PER_HALF:
        raise DataPrepError(f"the dataset has {num_classes} class; {class_minimum()}")
    rng = np.random.RandomState([seed])  # identical stream to np.random.seed([seed])
    a = sorted(int(i) for i in rng.choice(np.arange(num_classes), num_classes // 2,
                                          replace=False))
    chosen = set(a)
    return Halves(tuple(a), tuple(i for i in range(num_classes) if i not in chosen))


def whole_halves(num_classes):
    """Every class in half A, none in B: the whole dataset as one task."""
    if num_classes < 1:
        raise DataPrepError("--split=whole needs a dataset with at least one class")
    return Halves(tuple(range(num_classes)), ())


def natman_halves(num_classes, class_names=None):
    """ImageNet natural (A) vs man-made (B); refuses anything but the 1000 sorted wnids."""
    if num_classes != 1000:
        raise DataPrepError(
            f"--split=natman is defined only for the 1000 ILSVRC-2012 classes, this dataset has "
            f"{num_classes}; use random:S, dissimilar or classes:FILE")
    if class_names is not None:
        wnids = all(re.fullmatch(r"n\d{8}", n) for n in class_names)
        if not wnids or list(class_names) != sorted(class_names):
            raise DataPrepError(
                "--split=natman needs the ILSVRC-2012 classes named by wnid in sorted order "
                "(as in TFDS imagenet2012 or an ImageNet folder of nXXXXXXXX directories); "
                "use random:S or classes:FILE for this dataset")
    natural = set(NATURAL)
    return Halves(NATURAL, tuple(i for i in range(num_classes) if i not in natural))


def dissimilar_halves(dataset, class_names=None):
    """The named dissimilar split of a small dataset, matched to its class names."""
    if dataset not in DISSIMILAR:
        raise DataPrepError(
            f"--split=dissimilar has no definition for dataset '{dataset}' (known: "
            f"{', '.join(sorted(DISSIMILAR))}); use random:S or classes:FILE")
    canonical, a_names, _ = DISSIMILAR[dataset]
    names = list(canonical if class_names is None else class_names)
    if names != list(canonical):
        raise DataPrepError(
            f"--split=dissimilar for {dataset} expects its standard classes {list(canonical)[:4]}"
            f"... in order, this source has {names[:4]}...; use classes:FILE")
    a = sorted(names.index(n) for n in a_names)
    return Halves(tuple(a), tuple(i for i in range(len(names)) if i not in set(a)))


class _RepeatedKey(ValueError):
    pass


def _no_repeated_keys(pairs):
    """json object hook: a key given twice is an error (json keeps the last one silently)."""
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise _RepeatedKey(f"the key {', '.join(map(repr, repeated))} more than once")
    return dict(pairs)


def classes_halves(path, num_classes, class_names=None):
    """Halves listed in a JSON file {"A": [...], "B": [...]} of class names or indices."""
    try:
        # utf-8-sig: a byte-order mark, as some Windows editors write, is read past.
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise DataPrepError(f"cannot read split file {path}: {e.strerror}; "
                            "pass --split=classes:FILE with an existing JSON file") from None
    except UnicodeDecodeError as e:
        raise DataPrepError(f"split file {path} is not UTF-8 text ({e.reason} at byte "
                            f"{e.start}); save it as UTF-8 JSON, "
                            '{"A": [...], "B": [...]}') from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_repeated_keys)
    except json.JSONDecodeError as e:
        why = f"is not valid JSON ({e})"
    except _RepeatedKey as e:
        why = f"gives {e}"
    except ValueError:  # Python refuses to read integers of more than 4300 digits
        why = "holds a number thousands of digits long"
    except RecursionError:
        why = "holds lists or objects nested thousands deep"
    else:
        why = None
    if why:
        raise DataPrepError(f'split file {path} {why}; write {{"A": [...], "B": [...]}} with '
                            "class names or indices")
    if not isinstance(obj, dict) or set(obj) != {"A", "B"}:
        raise DataPrepError(f'split file {path} must hold exactly {{"A": [...], "B": [...]}}')
    halves = {}
    for half in ("A", "B"):
        entries = obj[half]
        if not isinstance(entries, list) or not entries:
            raise DataPrepError(f"split file {path}: half {half} is empty or not a list; "
                                "list at least one class in each half")
        indices, unknown = [], []
        for e in entries:
            if isinstance(e, bool):
                unknown.append(e)
            elif isinstance(e, int):
                (indices.append(e) if 0 <= e < num_classes else unknown.append(e))
            elif isinstance(e, str) and class_names is not None and e in class_names:
                indices.append(list(class_names).index(e))
            else:
                unknown.append(e)
        if unknown:
            raise DataPrepError(
                f"split file {path}: half {half} names unknown classes {unknown[:5]}; use class "
                f"indices 0..{num_classes - 1}"
                + (f" or names such as {list(class_names)[:3]}" if class_names else ""))
        if len(set(indices)) != len(indices):
            raise DataPrepError(f"split file {path}: half {half} lists a class twice")
        halves[half] = sorted(indices)
    overlap = sorted(set(halves["A"]) & set(halves["B"]))
    if overlap:
        raise DataPrepError(f"split file {path}: halves A and B overlap in classes {overlap[:10]}; "
                            "each class may be in one half only")
    return Halves(tuple(halves["A"]), tuple(halves["B"]))


def resolve(spec, num_classes, class_names=None, dataset=None):
    """The halves a split spec gives for a dataset of num_classes classes; each half it has
    holds at least CLASSES_PER_HALF classes, or a net trained on it would learn nothing (and
    score 1.0)."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    halves = _halves(parsed, num_classes, class_names, dataset)
    small = [f"half {h} has {len(halves.classes(h))}" for h in halves.names
             if len(halves.classes(h)) < CLASSES_PER_HALF]
    if small:
        raise DataPrepError(f"--split={parsed.spec}: {' and '.join(small)} class; a half needs at "
                            f"least {CLASSES_PER_HALF} classes to be a classification task: "
                            f"{class_minimum()}")
    return halves


def _halves(parsed, num_classes, class_names, dataset):
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError("class_names must have num_classes entries")
    if parsed.rule == "random":
        return random_halves(num_classes, parsed.seed)
    if parsed.rule == "natman":
        return natman_halves(num_classes, class_names)
    if parsed.rule == WHOLE:
        return whole_halves(num_classes)
    if parsed.rule == "dissimilar":
        if dataset is None:
            raise DataPrepError("--split=dissimilar needs --dataset (e.g. --dataset=fashion_mnist)")
        if class_names is None:
            class_names = DISSIMILAR.get(dataset, ((),))[0] or None
        halves = dissimilar_halves(dataset, class_names)
        if len(halves.A) + len(halves.B) != num_classes:
            raise DataPrepError(f"--split=dissimilar for {dataset} has "
                                f"{len(halves.A) + len(halves.B)} classes, not {num_classes}")
        return halves
    return classes_halves(parsed.file, num_classes, class_names)


def manifest_record(spec, examples_per_class=None):
    """The manifest's "split" entry."""
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    record = {"spec": parsed.spec, "rule": parsed.rule, "seed": parsed.seed,
              "dirname": split_dirname(parsed, examples_per_class)}
    if parsed.file is not None:
        record["file"] = parsed.file
    return record
