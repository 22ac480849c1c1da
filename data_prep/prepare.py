"""prepare(): a source + a split rule -> class-split TFRecord shards, mean.npy, manifest.json.

Each half is built in a hidden temp directory next to its final place and renamed into place
only when every shard, mean.npy and the manifest are complete, so an interrupted run leaves
no manifest and the next run starts clean. Images are encoded in worker processes (imaging.py);
this process serializes and writes the records in a fixed order, so output is byte-identical
from run to run whatever the number of workers.
"""
import collections
import math
import multiprocessing
import os
import shutil
import sys
import time

import numpy as np

import data_prep
from data_prep import atomic, imaging, layout, manifest, sources, splits
from data_prep.errors import DataPrepError

SHARD_BYTES = 150 * 2**20         # target shard size for big datasets
PHOTO_SIZE = 256                  # the paper's ImageNet size; default for mixed-size photos
CHUNK_IMAGES = {False: 512, True: 32}  # images per worker task: small images / photos
SMALL_JOB = 2000                  # below this many images, encode in-process (no spawn cost)


def prepare(source, split, out, *, examples_per_class=None, source_dir=None,
            tfds_data_dir=None, overwrite=False, synthetic=None, num_workers=None,
            progress=True, image_size=None, encoding="auto"):
    """Prepares the split's halves and returns {"A": Path, "B": Path} of the half directories
    ({"A": Path} for `--split=whole`, whose half A holds every class and which has no half B).

    Raises DataPrepError for bad input before anything is written; an undecodable image met
    while writing raises it too, with nothing published.
    """
    start = time.perf_counter()
    splits.check_examples_per_class(examples_per_class)
    spec = splits.parse_spec(split)
    if image_size is not None and (isinstance(image_size, bool) or image_size <= 0):
        raise DataPrepError(f"--image_size={image_size} is invalid: pass a positive size")
    if encoding not in ("auto", "png", "jpeg"):
        raise DataPrepError(f"--encoding={encoding} is invalid: use auto, png or jpeg")
    src = sources.open_source(source, source_dir=source_dir, tfds_data_dir=tfds_data_dir,
                              synthetic_spec=synthetic)
    num_source_classes = len(src.class_names)
    halves = splits.resolve(spec, num_source_classes, src.class_names, src.dataset)
    target = _target(src, image_size, encoding)
    parent = layout.split_root(out, src.dataset, splits.split_dirname(spec, examples_per_class))
    names = halves.names  # ("A", "B"), or ("A",) for the whole dataset
    half_dirs = {h: parent / h for h in names}
    header = {h: _header(src, source, spec, h, halves, examples_per_class, target)
              for h in names}
    for h in names:
        _check_existing(half_dirs[h], header[h], overwrite)
    labels = {s: src.labels(s) for s in sources.SPLITS}
    selection = {s: _select(src, s, labels[s], halves,
                            examples_per_class if s == "train" else None)
                 for s in sources.SPLITS}
    for h in names:
        if not len(selection["train"][h]):
            raise DataPrepError(f"half {h} has no training images in {source}; "
                                "choose classes that have images")

    created = [d for d in (parent, *parent.parents) if not d.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(parent)
    tmp = {h: parent / f".{h}.partial-{os.getpid()}" for h in names}
    published = False
    try:
        for h in names:
            tmp[h].mkdir()
        totals = _write_shards(src, labels, selection, halves, target, tmp, num_workers,
                               progress)
        for h in names:
            _finish_half(tmp[h], header[h], totals[h], target)
        _publish(tmp, half_dirs)
        published = True
    finally:
        for d in tmp.values():
            shutil.rmtree(d, ignore_errors=True)
        if not published:  # a failed run leaves no trace, not even empty folders
            for d in created:  # deepest first
                try:
                    d.rmdir()
                except OSError:
                    break

    seconds = time.perf_counter() - start
    n = {s: sum(len(selection[s][h]) for h in names) for s in sources.SPLITS}
    classes = (f"A {len(halves.A)} classes, B {len(halves.B)} classes" if halves.B else
               f"A {len(halves.A)} classes (every class; no half B)")
    summary = (f"data_prep: {src.dataset}/{parent.name}: {classes}; "
               f"train {n['train']}, validation {n['validation']} "
               f"images; {seconds:.1f} s, {sum(n.values()) / seconds:.0f} images/s -> {parent}")
    if progress:
        print(summary, file=sys.stderr, flush=True)
    return half_dirs


def _target(src, image_size, encoding):
    """Stored size, channels and encoding: the source's size unless it varies or is ImageNet."""
    h, w, c = src.image_shape
    if image_size is not None:
        h = w = image_size
    elif src.dataset.startswith("imagenet") or not (h and w):
        h = w = PHOTO_SIZE
    if encoding == "auto":
        encoding = "jpeg" if src.photos and max(h, w) > sources.SMALL_IMAGE else "png"
    return imaging.Target(height=h, width=w, channels=c, encoding=encoding)


def _header(src, source, spec, half, halves, examples_per_class, target):
    """The manifest fields known before any image is read; they also identify the output."""
    mine, other = (halves.A, halves.B) if half == "A" else (halves.B, halves.A)
    return {
        "data_prep_version": data_prep.__version__,
        "dataset": src.dataset,
        "source": source,
        "split": splits.manifest_record(spec, examples_per_class),
        "half": half,
        "examples_per_class": examples_per_class,
        "num_classes": len(mine),
        "num_source_classes": len(src.class_names),
        "classes": _class_list(src, mine),
        "other_half": _class_list(src, other),
        "image_shape": list(target.shape),
        "encoding": target.encoding,
        "source_options": dict(src.options),
    }


def _class_list(src, indices):
    return [{"label": k, "original_index": int(i), "name": src.class_names[i]}
            for k, i in enumerate(indices)]


_IDENTITY = ("dataset", "source", "split", "half", "examples_per_class", "classes",
             "image_shape", "encoding", "source_options")


def _check_existing(half_dir, header, overwrite):
    """Refuses to replace data prepared with other settings unless overwrite is set."""
    if overwrite or not half_dir.exists():
        return
    if not half_dir.is_dir():
        raise DataPrepError(f"{half_dir} exists and is not a directory; remove it or choose "
                            "another --out")
    if not (half_dir / manifest.MANIFEST).exists():
        if any(half_dir.iterdir()):
            raise DataPrepError(f"{half_dir} holds files but no data_prep manifest; pass "
                                "--overwrite to replace it or choose another --out")
        return
    try:
        existing = manifest.load_manifest(half_dir)
    except DataPrepError as e:
        raise DataPrepError(f"{e}; or pass --overwrite to replace it") from None
    differing = [k for k in _IDENTITY if existing.get(k) != header[k]]
    if differing:
        raise DataPrepError(
            f"{half_dir} already holds data prepared with different settings "
            f"({', '.join(differing)} differ); pass --overwrite to replace it, "
            "or choose another --out")


def _select(src, split, labels, halves, examples_per_class):
    """Source indices of each half's images (of the halves the split has), in source order;
    reduced volume keeps the first examples_per_class images of every class."""
    chosen = {}
    for h in halves.names:
        keep = []
        classes = halves.classes(h)
        for c in classes:
            where = np.flatnonzero(labels == c)
            if examples_per_class is not None:
                if len(where) < examples_per_class:
                    raise DataPrepError(
                        f"class {c} ({src.class_names[c]}) has only {len(where)} {split} images, "
                        f"fewer than --examples_per_class={examples_per_class}; pass a smaller N")
                where = where[:examples_per_class]
            keep.append(where)
        chosen[h] = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
    return chosen


def _num_shards(n, target):
    """At least 2 shards per split (for parallel reading), about SHARD_BYTES each."""
    if n <= 1:
        return n
    per_image = target.height * target.width * target.channels * (
        0.6 if target.encoding == "png" else 0.15) + 64
    return max(2, math.ceil(n * per_image / SHARD_BYTES))


def _shard_name(split, i, n):
    return f"{split}-{i:05d}-of-{n:05d}.tfrecord"


class _ShardWriter:
    """Writes the n examples of one (half, split) into shards of equal size, in order."""

    def __init__(self, directory, split, n, target):
        self.dir, self.split, self.n = directory, split, n
        self.num_shards = _num_shards(n, target)
        self.per_shard = math.ceil(n / self.num_shards) if n else 0
        self.shards, self.per_class = [], collections.Counter()
        self._writer, self._in_shard, self.written = None, 0, 0

    def write(self, tf_io, serialized, label):
        if self._writer is None:
            self._path = self.dir / _shard_name(self.split, len(self.shards), self.num_shards)
            self._writer = tf_io.TFRecordWriter(str(self._path))
        self._writer.write(serialized)
        self._in_shard += 1
        self.written += 1
        self.per_class[label] += 1
        if self._in_shard == self.per_shard or self.written == self.n:
            self._writer.close()
            self.shards.append({"file": self._path.name, "examples": self._in_shard,
                                "bytes": self._path.stat().st_size,
                                "sha256": manifest.sha256_file(self._path)})
            self._writer, self._in_shard = None, 0


def _write_shards(src, labels, selection, halves, target, tmp, num_workers, progress):
    """Encodes and writes every image; returns per half its writers and training pixel sum."""
    # Imported here so that bad input is refused without waiting for TensorFlow to load.
    import tensorflow as tf

    from data_prep import records

    total = sum(len(ix) for per_half in selection.values() for ix in per_half.values())
    if num_workers is None:
        num_workers = 1 if total < SMALL_JOB else len(os.sched_getaffinity(0))
    names = halves.names
    lut = {h: {int(c): k for k, c in enumerate(halves.classes(h))}
           for h in names}
    result = {h: {"writers": {}, "sum": None} for h in names}
    bar = _progress_bar(total, progress)
    pool = (multiprocessing.get_context("spawn").Pool(num_workers) if num_workers > 1 else None)
    try:
        for split in sources.SPLITS:
            writers = {h: _ShardWriter(tmp[h], split, len(selection[split][h]), target)
                       for h in names}
            order, group = _write_order(src, split, selection[split])
            chunk = CHUNK_IMAGES[target.encoding == "jpeg"]
            tasks = _tasks(src.payloads(split, order), group, chunk, target, split == "train")
            pos = 0
            for encoded, sums in _run(tasks, pool, num_workers):
                for data in encoded:
                    h, original = names[group[pos]], int(labels[split][order[pos]])
                    label = lut[h][original]
                    writers[h].write(tf.io, records.encode_example(
                        image=data, height=target.height, width=target.width,
                        channels=target.channels, label=label, original_label=original,
                        class_name=src.class_names[original]), label)
                    pos += 1
                for g, s in sums.items():
                    r = result[names[g]]
                    r["sum"] = s if r["sum"] is None else r["sum"] + s
                bar.update(len(encoded))
            for h in names:
                assert writers[h].written == writers[h].n, (h, split)
                result[h]["writers"][split] = writers[h]
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    return result


def _write_order(src, split, chosen):
    """Indices to read and the half of each, as its position in `chosen` (0 = A, 1 = B).
    Class-grouped sources (folders) get their training images shuffled with a fixed seed so
    that every shard mixes classes."""
    if src.streaming:
        order = np.concatenate([chosen[h] for h in chosen])
        group = np.concatenate([np.full(len(chosen[h]), g) for g, h in enumerate(chosen)])
        perm = np.argsort(order, kind="stable")
        return order[perm], group[perm]
    parts = []
    for g, h in enumerate(chosen):
        ix = chosen[h]
        if src.grouped_by_class and split == "train":
            ix = ix[np.random.default_rng(g).permutation(len(ix))]
        parts.append(ix)
    group = np.concatenate([np.full(len(p), g) for g, p in enumerate(parts)])
    return np.concatenate(parts), group


def _tasks(payloads, group, chunk, target, want_sums):
    batch, names = [], []
    start = 0
    for payload, name in payloads:
        batch.append(payload)
        names.append(name)
        if len(batch) == chunk:
            yield batch, group[start:start + chunk].tolist(), names, target, want_sums
            start += chunk
            batch, names = [], []
    if batch:
        yield batch, group[start:start + len(batch)].tolist(), names, target, want_sums


def _run(tasks, pool, num_workers):
    """Results of imaging.encode_chunk in task order, with a bounded number in flight (the
    source is read lazily, so memory stays flat even for ImageNet)."""
    if pool is None:
        for task in tasks:
            yield imaging.encode_chunk(task)
        return
    pending = collections.deque()
    for task in tasks:
        pending.append(pool.apply_async(imaging.encode_chunk, (task,)))
        if len(pending) >= 2 * num_workers:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _finish_half(directory, header, result, target):
    """Writes mean.npy, then the manifest (last, atomically) into a complete half."""
    train = result["writers"]["train"]
    mean = (result["sum"] / train.n).astype(np.float32).reshape(target.shape)
    mean_path = directory / "mean.npy"
    with open(mean_path, "wb") as f:
        np.save(f, mean)
    per_channel = mean.astype(np.float64).reshape(-1, target.channels).mean(axis=0)
    writers = result["writers"]
    body = dict(header)
    body["mean"] = {"per_channel": [round(float(v), 4) for v in per_channel],
                    "per_pixel_file": mean_path.name,
                    "sha256": manifest.sha256_file(mean_path)}
    body["counts"] = {s: w.n for s, w in writers.items()}
    body["counts_per_class"] = {
        s: {str(k): w.per_class.get(k, 0) for k in range(header["num_classes"])}
        for s, w in writers.items()}
    body["shards"] = {s: w.shards for s, w in writers.items()}
    body["source_options"] = body.pop("source_options")  # moved last: beyond docs/formats.md
    atomic.write_json_atomic(directory / manifest.MANIFEST, body)


def _publish(tmp, half_dirs):
    """Moves complete halves into place, replacing older output."""
    for h in tmp:
        atomic.replace_dir(tmp[h], half_dirs[h])


def _remove_stale(parent):
    """Removes temp directories left by interrupted runs whose process is gone: halves being
    written (.A.partial-<pid>) and replaced ones (atomic.replace_dir's .old-A-<pid>; .A.old-<pid>
    from versions before it)."""
    for d in parent.glob(".*-*"):
        name, _, pid = d.name.rpartition("-")
        leftover = name.endswith((".partial", ".old")) or name.startswith(".old-")
        if not leftover or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass


def _progress_bar(total, enabled):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="img", desc="data_prep",
                file=sys.stderr, smoothing=0.1)
