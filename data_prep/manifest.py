"""manifest.json of a prepared half: loading and verification.

The manifest is written last; its presence means the half is complete. Nothing here imports
TensorFlow, so other packages can check data cheaply.
"""
import hashlib
import json
import os
import re
import shlex
import struct
from pathlib import Path

from data_prep.errors import DataPrepError
from data_prep.layout import MANIFEST
from data_prep.splits import WHOLE


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_sha256(manifest):
    """A fingerprint of what a half holds: its classes, image shape and encoding, mean image and
    every shard's bytes (by their sha256), not how or when it was prepared. A net trained on a
    half is reused only while this is unchanged."""
    content = {"classes": [c["original_index"] for c in manifest["classes"]],
               "image_shape": manifest["image_shape"], "encoding": manifest.get("encoding"),
               "mean": manifest.get("mean", {}).get("sha256"),
               "shards": {split: [shard["sha256"] for shard in shards]
                          for split, shards in sorted(manifest["shards"].items())}}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def suggest_command(half_dir, *extra):
    """The data_prep command that would create half_dir, guessed from its path, in backticks
    (`extra` arguments added), then what its placeholders stand for."""
    half_dir = Path(half_dir)
    dataset, split_dir = half_dir.parent.parent.name, half_dir.parent.name
    out = half_dir.parent.parent.parent
    epc = re.search(r"_epc(\d+)$", split_dir)
    base = split_dir[:epc.start()] if epc else split_dir
    if re.fullmatch(r"random_\d+", base):
        split = "random:" + base.split("_")[1]
    elif base in ("natman", "dissimilar", WHOLE):
        split = base
    else:
        split = "SPLIT"
    cmd = prepare_command(out, dataset, split, int(epc.group(1)) if epc else None, extra)
    return f"`{cmd}`{placeholder_note(cmd)}"


# What a placeholder of prepare_command stands for, said after the command.
_PLACEHOLDERS = {"SOURCE": "fashion_mnist, tfds:NAME or folder:ROOT",
                 "TFDS_DIR": "the TFDS data_dir holding the prepared dataset",
                 "SPLIT": "random:S, natman, dissimilar or classes:FILE"}


def prepare_command(out, dataset, split, examples_per_class=None, extra=()):
    """The data_prep command that prepares `split` of `dataset` into `out`, quoted for the shell,
    its source the one another split of the dataset was prepared from, else guessed from the
    name (the SOURCE placeholder if it cannot be: see placeholder_note)."""
    source = recorded_source(out, dataset) or guessed_source(dataset)
    args = ["python", "-m", "data_prep", f"--source={source}"]
    if source.startswith("tfds:"):
        args.append("--tfds_data_dir=TFDS_DIR")
    args += [f"--split={split}", f"--out={out}"]
    if examples_per_class:
        args.append(f"--examples_per_class={examples_per_class}")
    return shlex.join([*args, *extra])


def placeholder_note(cmd):
    """` (SOURCE: what it stands for; ...)` for the placeholders in a prepare_command, or ""."""
    notes = [f"{name}: {what}" for name, what in _PLACEHOLDERS.items()
             if re.search(rf"={name}(\s|$)", cmd)]
    return f" ({'; '.join(notes)})" if notes else ""


def recorded_source(out, dataset):
    """The --source a prepared split of `dataset` in `out` was made from (its manifest's), or
    None if none is prepared. Read without load_manifest, whose errors give this hint."""
    for path in sorted(Path(out, dataset).glob(f"*/*/{MANIFEST}")):
        try:
            manifest = _read_json(path)
        except (OSError, ValueError):
            continue
        source = manifest.get("source") if isinstance(manifest, dict) else None
        if isinstance(source, str) and source:
            return source
    return None


def guessed_source(dataset):
    """The --source that makes a dataset of this name (data_prep names a tfds:NAME dataset
    NAME), or the SOURCE placeholder."""
    from data_prep.sources import ARRAY_SOURCES, KNOWN_TFDS

    if dataset in ARRAY_SOURCES:
        return dataset
    if dataset in KNOWN_TFDS:
        return f"tfds:{dataset}"
    return "SOURCE"


def _is_whole(half_dir):
    """Whether half_dir is a half of the whole-dataset split (`whole`, `whole_epcN`)."""
    return re.fullmatch(rf"{WHOLE}(_epc\d+)?", Path(half_dir).parent.name) is not None


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_manifest(half_dir):
    """The manifest of a prepared half; a clear error if it is missing or unreadable."""
    path = Path(half_dir) / MANIFEST
    try:
        manifest = _read_json(path)
    except FileNotFoundError:
        if _is_whole(half_dir) and Path(half_dir).name != "A":
            raise DataPrepError(
                f"{path} does not exist: split {WHOLE} has every class in half A and no half "
                f"{Path(half_dir).name}; train its nets on half A (--target=A, with --source=none "
                "or --source=random), or use a split with two halves (e.g. --split=random:0)") \
                from None
        halves = [h for h in ("A", "B") if (Path(half_dir) / h / MANIFEST).is_file()]
        if halves:  # a split's folder given for one of its halves
            raise DataPrepError(f"{half_dir} is a split's folder, not a half: give one of its "
                                f"halves, {' or '.join(str(Path(half_dir) / h) for h in halves)}")\
                from None
        raise DataPrepError(f"{path} does not exist: the data is not prepared (or preparation "
                            f"was interrupted); create it with {suggest_command(half_dir)}") \
            from None
    except (OSError, ValueError) as e:
        raise DataPrepError(f"{path} is unreadable ({e}); re-create it with "
                            f"{suggest_command(half_dir, '--overwrite')}") from None
    if not isinstance(manifest, dict) or "shards" not in manifest:
        raise DataPrepError(f"{path} is not a data_prep manifest; re-create it with "
                            f"{suggest_command(half_dir, '--overwrite')}")
    return manifest


def count_records(path):
    """Number of TFRecords in a file, walking the length headers (no CRC check; sha256 is the
    integrity check). Raises ValueError if the framing does not end exactly at end of file."""
    size = os.path.getsize(path)
    count, pos = 0, 0
    with open(path, "rb") as f:
        while pos < size:
            header = f.read(8)
            if len(header) < 8:
                raise ValueError(f"truncated record header at byte {pos}")
            (length,) = struct.unpack("<Q", header)
            pos += 8 + 4 + length + 4
            if pos > size:
                raise ValueError(f"record {count} runs past the end of the file")
            f.seek(pos)
            count += 1
    return count


# The fields two halves of one preparation share (each half's classes are the other's
# other_half).
_SHARED = ("dataset", "source", "split", "examples_per_class", "num_source_classes",
           "image_shape", "encoding", "source_options")
_OTHER_HALF = {"A": "B", "B": "A"}


def mismatched_halves(half_dir, manifest):
    """Why the half at half_dir (its manifest given) and the other half of its split are not
    of one preparation, or None when they are (or there is no other half to compare with).

    Both halves of a preparation carry the same `preparation_id`; halves prepared before
    manifests had one are compared by their settings and classes."""
    half_dir = Path(half_dir)
    other_name = _OTHER_HALF.get(half_dir.name)
    if other_name is None or not (half_dir.parent / other_name / MANIFEST).is_file():
        return None
    other_dir = half_dir.parent / other_name
    try:
        other = load_manifest(other_dir)
    except DataPrepError:
        return None  # named when that half is read
    if "preparation_id" in manifest and "preparation_id" in other:
        same = manifest["preparation_id"] == other["preparation_id"]
    else:
        same = (all(manifest.get(k) == other.get(k) for k in _SHARED)
                and manifest.get("classes") == other.get("other_half")
                and manifest.get("other_half") == other.get("classes"))
    if same:
        return None
    return (f"half A and half B in {half_dir.parent} were prepared by different runs; run "
            f"{suggest_command(half_dir, '--overwrite')}")


def verify(half_dir, full_hash=True):
    """Problems with a prepared half, [] if none: its shards against its manifest, and whether
    the other half of its split is of the same preparation. Sizes are always checked; sha256
    and record counts only with full_hash (they read every byte)."""
    half_dir = Path(half_dir)
    try:
        manifest = load_manifest(half_dir)
    except DataPrepError as e:
        return [str(e)]
    mismatch = mismatched_halves(half_dir, manifest)
    problems = [mismatch] if mismatch else []
    for split, shards in manifest["shards"].items():
        total = 0
        for shard in shards:
            path = half_dir / shard["file"]
            total += shard["examples"]
            if not path.is_file():
                problems.append(f"{path}: missing")
                continue
            size = path.stat().st_size
            if size != shard["bytes"]:
                problems.append(f"{path}: {size} bytes, manifest says {shard['bytes']}")
                continue
            if full_hash:
                digest = sha256_file(path)
                if digest != shard["sha256"]:
                    problems.append(f"{path}: sha256 {digest[:12]}... differs from the "
                                    f"manifest's {shard['sha256'][:12]}... (corrupt shard)")
                try:
                    n = count_records(path)
                except ValueError as e:
                    problems.append(f"{path}: {e}")
                    continue
                if n != shard["examples"]:
                    problems.append(f"{path}: {n} records, manifest says {shard['examples']}")
        counts = manifest.get("counts", {})
        if counts.get(split) != total:
            problems.append(f"{half_dir / MANIFEST}: counts[{split}]={counts.get(split)} but "
                            f"its shards hold {total}")
        per_class = manifest.get("counts_per_class", {}).get(split)
        if per_class is not None and sum(per_class.values()) != total:
            problems.append(f"{half_dir / MANIFEST}: counts_per_class[{split}] sums to "
                            f"{sum(per_class.values())}, not {total}")
    mean = manifest.get("mean", {})
    if mean.get("per_pixel_file"):
        path = half_dir / mean["per_pixel_file"]
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif full_hash and mean.get("sha256") and sha256_file(path) != mean["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest's (corrupt mean)")
    return problems


def find_halves(path):
    """Half directories at or below path (those holding a manifest.json), sorted; none in a
    hidden folder (a run's staging folder, or old halves not yet removed)."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return [path]
    return sorted(p.parent for p in path.rglob(MANIFEST)
                  if not any(part.startswith(".") for part in p.relative_to(path).parts))
