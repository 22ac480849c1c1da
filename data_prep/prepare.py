"""prepare(): a source + a split rule -> class-split TFRecord shards, mean.npy, manifest.json.

A run holds the split's lock (`.<split_dir>.lock` beside the split's folder) from its check of
the existing output to the end, so two runs never write one split. Both halves are built in
one hidden staging folder beside the split's folder (`.<split_dir>.partial-<pid>/{A,B}`) and
published together in one step (atomic.swap_dir), only when every shard, mean.npy and both
manifests are complete: a reader sees the old pair of halves or the new pair, never one of
each. Both manifests carry the same `preparation_id`, made from the output, which
manifest.verify (and so the trainer) checks. An interrupted run publishes nothing and the
next run removes what it left. Images are encoded in worker processes (imaging.py), which
leave Ctrl-C to this process; this process serializes and writes the records in a fixed
order, so output is byte-identical from run to run whatever the number of workers.
"""
import collections
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
import types
from multiprocessing import resource_tracker

import numpy as np

import data_prep
from data_prep import (atomic, imaging, layout, locking, manifest, quiet_tensorflow, sources,
                       splits)
from data_prep.errors import DataPrepError, Interrupted

SHARD_BYTES = 150 * 2**20         # target shard size for big datasets
PHOTO_SIZE = 256                  # the paper's ImageNet size; default for mixed-size photos
CHUNK_IMAGES = {False: 512, True: 32}  # images per worker task: small images / photos
POLL_SECONDS = 0.1                # how often a wait for the worker pool looks for a Ctrl-C
SMALL_JOB = 2000                  # below this many images, encode in-process (no spawn cost)


def prepare(source="fashion_mnist", split="random:0", out="data", *, examples_per_class=None,
            source_dir=None, tfds_data_dir=None, overwrite=False, synthetic=None,
            num_workers=None, progress=True, image_size=None, encoding="auto"):
    """Prepares the split's halves and returns {"A": Path, "B": Path} of the half directories
    ({"A": Path} for `--split=whole`, whose half A holds every class and which has no half B).
    Its defaults are the command line's (cli_flags reads them from here).

    Raises DataPrepError for bad input before anything is written, and when another run is
    preparing the same split; an undecodable image met while writing raises it too, with
    nothing published. Ctrl-C (KeyboardInterrupt) raises Interrupted, saying whether the new
    data was published; a second Ctrl-C does not cut the clean-up short.
    """
    start = time.perf_counter()
    splits.check_examples_per_class(examples_per_class)
    spec = splits.parse_spec(split)
    if image_size is not None and (isinstance(image_size, bool) or image_size <= 0):
        raise DataPrepError(f"--image_size={image_size} is invalid: pass a positive size")
    if encoding not in ("auto", "png", "jpeg"):
        raise DataPrepError(f"--encoding={encoding} is invalid: use auto, png or jpeg")
    source = sources.canonical(source)
    src = sources.open_source(source, source_dir=source_dir, tfds_data_dir=tfds_data_dir,
                              synthetic_spec=synthetic)
    num_source_classes = len(src.class_names)
    halves = splits.resolve(spec, num_source_classes, src.class_names, src.dataset)
    target, why = _target(src, image_size, encoding)
    root = layout.split_root(out, src.dataset, splits.split_dirname(spec, examples_per_class))
    names = halves.names  # ("A", "B"), or ("A",) for the whole dataset
    half_dirs = {h: root / h for h in names}
    header = {h: _header(src, source, spec, h, halves, examples_per_class, target)
              for h in names}
    labels = {s: src.labels(s) for s in sources.SPLITS}
    selection = {s: _select(src, s, labels[s], halves,
                            examples_per_class if s == "train" else None)
                 for s in sources.SPLITS}
    for h in names:
        if not len(selection["train"][h]):
            raise DataPrepError(f"half {h} has no training images in {source}; "
                                "choose classes that have images")

    outcome = types.SimpleNamespace(published=False)
    lock = None
    try:
        with _one_interrupt():
            created = [d for d in (root.parent, *root.parent.parents) if not d.exists()]
            try:
                with _interrupts_deferred():  # taken and recorded whole, or not at all
                    root.parent.mkdir(parents=True, exist_ok=True)
                    # The folder a symlinked split points to is the one replaced (and locked).
                    parent = root.resolve() if root.is_symlink() else root
                    candidate = locking.FileLock(parent.parent / f".{parent.name}.lock",
                                                 remove_on_release=True)
                    if candidate.acquire():
                        lock = candidate
                if lock is None:
                    raise DataPrepError(
                        f"another data_prep ({candidate.holder()}) is preparing {root}; wait "
                        "for it to end (or stop it), then run this command again")
                _prepare_locked(src, labels, selection, halves, target, why, header, parent,
                                overwrite, num_workers, progress, outcome)
            finally:
                with _interrupts_deferred():  # the lock file goes with the lock
                    if lock is not None:
                        lock.release()
                    if not outcome.published:  # a failed run leaves no trace, not even
                        for d in created:       # empty folders; deepest first
                            try:
                                d.rmdir()
                            except OSError:
                                break
            seconds = time.perf_counter() - start
            n = {s: sum(len(selection[s][h]) for h in names) for s in sources.SPLITS}
            classes = (f"A {len(halves.A)} classes, B {len(halves.B)} classes" if halves.B
                       else f"A {len(halves.A)} classes (every class; no half B)")
            if progress:
                print(f"data_prep: {src.dataset}/{root.name}: {classes}; "
                      f"train {n['train']}, validation {n['validation']} images; "
                      f"{seconds:.1f} s, {sum(n.values()) / seconds:.0f} images/s -> {root}",
                      file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        if lock is not None:  # in case the Ctrl-C came as the clean-up above began
            lock.release()
        raise Interrupted(
            f"interrupted after publishing {root}; its data is complete" if outcome.published
            else "interrupted; nothing was published; run the same command again") from None
    return half_dirs


def _prepare_locked(src, labels, selection, halves, target, why, header, parent, overwrite,
                    num_workers, progress, outcome):
    """Under the split's lock: checks what is there, says what size the images are stored at
    and why (with progress), writes both halves into one staging folder and publishes them
    together, setting outcome.published as it does; whatever happens, no staging folder is
    left."""
    names = halves.names
    _check_split_folder(parent)
    for h in names:
        _check_existing(parent / h, header[h], overwrite)
    _remove_stale(parent)
    if progress:
        print(f"data_prep: {src.dataset}: images stored at {target.height}x{target.width}x"
              f"{target.channels} {target.encoding.upper()}: {why}", file=sys.stderr, flush=True)
    staging = parent.parent / f".{parent.name}.partial-{os.getpid()}"
    old = None
    try:
        staging.mkdir()
        tmp = {h: staging / h for h in names}
        for h in names:
            tmp[h].mkdir()
        totals = _write_shards(src, labels, selection, halves, target, tmp, num_workers,
                               progress)
        bodies = {h: _finish_half(tmp[h], header[h], totals[h], target) for h in names}
        preparation_id = _preparation_id(bodies)
        for h in names:
            bodies[h]["preparation_id"] = preparation_id
            atomic.write_json_atomic(tmp[h] / manifest.MANIFEST, bodies[h])
        with _interrupts_deferred():  # published and known to be, or neither
            _check_interrupt()
            old = atomic.swap_dir(staging, parent)
            outcome.published = True
    finally:
        # Before publishing: the new halves; after: the old ones (where a swap left them).
        for d in (staging, old):
            if d is not None:
                shutil.rmtree(d, ignore_errors=True)


def _target(src, image_size, encoding):
    """Stored size, channels and encoding, and a phrase saying why that size.

    Images keep their own size unless --image_size is given or the source is ImageNet (256, as
    the paper). Images of one size that is not square are stretched to the larger side, as the
    paper stretched every ImageNet photo to 256x256: the crops are square, and a square crop of
    an oblong image would leave out the ends of its longer side. Images of several sizes need --image_size (a folder is
    refused naming two of them); a TFDS dataset of several sizes, which cannot be measured
    without decoding it, is stored at 256.
    """
    h, w, c = src.image_shape
    if image_size is not None:
        size, why = image_size, f"--image_size={image_size}"
    elif src.dataset.startswith("imagenet"):
        size, why = PHOTO_SIZE, f"ImageNet, at the paper's {PHOTO_SIZE} px"
    else:
        if not (h and w):
            h, w = src.common_size() or (None, None)
        if h and w:
            size = max(h, w)
            why = ("the images' own size" if h == w else
                   f"every image is {h}x{w} (height x width), stretched to the larger side")
        else:
            size, why = PHOTO_SIZE, ("the images differ in size, resized to the paper's "
                                     f"{PHOTO_SIZE} px")
        why += "; --image_size=N for another"
    if encoding == "auto":
        encoding = "jpeg" if src.photos and size > sources.SMALL_IMAGE else "png"
    return imaging.Target(height=size, width=size, channels=c, encoding=encoding), why


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


def _is_leftover(name):
    """Whether a hidden name is one an interrupted run of data_prep left (see _remove_stale)."""
    stem, _, pid = name.rpartition("-")
    return (name.startswith(".") and pid.isdigit()
            and (stem.endswith((".partial", ".old")) or stem.startswith(".old-")))


def _check_split_folder(parent):
    """Refuses a split folder holding what data_prep did not write: publishing replaces the
    folder whole, and would lose it."""
    if not os.path.lexists(parent):
        return
    if not parent.is_dir():
        raise DataPrepError(f"{parent} exists and is not a directory; remove it or choose "
                            "another --out")
    foreign = sorted(p.name for p in parent.iterdir()
                     if p.name not in ("A", "B") and not _is_leftover(p.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise DataPrepError(
            f"{parent} holds {shown}, which data_prep did not write and would not keep when "
            "it publishes new halves; move them elsewhere, or choose another --out")


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
    tf = quiet_tensorflow.import_tensorflow()

    _check_interrupt()

    from data_prep import records

    total = sum(len(ix) for per_half in selection.values() for ix in per_half.values())
    if num_workers is None:
        num_workers = 1 if total < SMALL_JOB else len(os.sched_getaffinity(0))
    names = halves.names
    lut = {h: {int(c): k for k, c in enumerate(halves.classes(h))}
           for h in names}
    result = {h: {"writers": {}, "sum": None} for h in names}
    bar = _progress_bar(total, progress)
    pool = None
    # Ctrl-C is acted on between chunks (_check_interrupt), never raised inside the pool's
    # own threads' waits and locks.
    with _interrupts_polled():
        try:
            if num_workers > 1:
                with _interrupts_deferred():  # a pool half started is still stopped below
                    pool = _start_pool(num_workers)
            for split in sources.SPLITS:
                writers = {h: _ShardWriter(tmp[h], split, len(selection[split][h]), target)
                           for h in names}
                order, group = _write_order(src, split, selection[split])
                chunk = CHUNK_IMAGES[target.encoding == "jpeg"]
                tasks = _tasks(src.payloads(split, order), group, chunk, target, split == "train")
                pos = 0
                for encoded, sums in _run(tasks, pool, num_workers):
                    _check_interrupt()
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
                _stop(pool)
    _check_interrupt()
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
            yield _result(pending.popleft())
    while pending:
        yield _result(pending.popleft())


def _result(task):
    """A pool task's result, waited for in short steps so that a Ctrl-C (under
    _interrupts_polled) is raised within a fraction of a second."""
    while not task.ready():
        task.wait(POLL_SECONDS)
        _check_interrupt()
    return task.get()


def _finish_half(directory, header, result, target):
    """Writes mean.npy into a complete half and returns its manifest, less the
    preparation_id (the caller writes it, last)."""
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
    return body


def _preparation_id(bodies):
    """The id both halves' manifests carry: a hash of their contents (shards' and mean's
    sha256 included), so the same output has the same id and other output another."""
    text = json.dumps(bodies, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _remove_stale(parent):
    """Removes what interrupted runs left. Called under the split's lock, so none of it is a
    live run's: staging folders beside the split's (.<split>.partial-<pid>: new halves, or
    after the swap the old ones; .old-<split>-<pid> where the file system cannot swap) and,
    inside it, those of versions that published each half alone (.A.partial-<pid>,
    .old-A-<pid>, .A.old-<pid>)."""
    beside = [p for p in parent.parent.iterdir()
              if p.name.rpartition("-")[0] in (f".{parent.name}.partial", f".old-{parent.name}")]
    inside = list(parent.iterdir()) if parent.is_dir() else []
    for d in beside + inside:
        if _is_leftover(d.name):
            shutil.rmtree(d, ignore_errors=True)


def _ignore_interrupts():
    """Pool initializer: a worker leaves Ctrl-C to the parent, which stops it (no traceback
    from every worker). SIGINT is blocked while the workers start (see _start_pool), so one
    that came meanwhile is dropped here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _stop(pool):
    """Ends the worker pool, after a Ctrl-C or an error too: no new tasks, the workers finish
    the ones in flight (at most 2 each, see _run) and exit. Not Pool.terminate(): it can wait
    for ever, its task thread blocked writing a task for workers it has already killed
    (CPython issue 78178; seen here as a Ctrl-C after which data_prep never ended). This
    relies on Ctrl-C being raised only where the code checks (_interrupts_polled): raised
    inside apply_async, it could leave a task registered that no worker will ever run."""
    pool.close()
    pool.join()


def _start_pool(num_workers):
    """A spawn pool of workers that ignore SIGINT from their first instruction: they are started
    with SIGINT blocked (a child inherits the mask), and unblock it once it is ignored."""
    context = multiprocessing.get_context("spawn")
    # The pool's first lock starts multiprocessing's resource tracker, which unblocks SIGINT
    # after starting it: started first, it leaves the mask below alone.
    resource_tracker.ensure_running()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return context.Pool(num_workers, initializer=_ignore_interrupts)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _in_main_thread():
    return threading.current_thread() is threading.main_thread()


_interrupted = threading.Event()  # Ctrl-C came during the current _one_interrupt block


@contextlib.contextmanager
def _one_interrupt():
    """Ctrl-C raises KeyboardInterrupt once; a second one is ignored until the block ends, so
    the clean-up after the first runs to its end. The first is also remembered, and
    _check_interrupt raises it again, in case code it came through swallowed it (a library's
    bare `except:` while TensorFlow is imported). Only where Ctrl-C raises KeyboardInterrupt
    (Python's default handler, in the main thread)."""
    if not _in_main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    _interrupted.clear()
    previous = signal.signal(signal.SIGINT, _raise_first_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _interrupted.clear()


def _note_first_interrupt(signum, frame):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _interrupted.set()


def _raise_first_interrupt(signum, frame):
    _note_first_interrupt(signum, frame)
    raise KeyboardInterrupt


def _check_interrupt():
    """Raises KeyboardInterrupt if Ctrl-C came, even if it was swallowed where it came."""
    if _interrupted.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupts_polled():
    """Inside a _one_interrupt block: the first Ctrl-C only sets the flag that
    _check_interrupt raises (later ones are ignored), so it is raised where the code checks,
    not wherever it lands. Outside one (not the main thread, a caller's own handler) nothing
    changes."""
    if not _in_main_thread() or signal.getsignal(signal.SIGINT) is not _raise_first_interrupt:
        yield
        return
    signal.signal(signal.SIGINT, _note_first_interrupt)
    try:
        yield
    finally:
        if not _interrupted.is_set():
            signal.signal(signal.SIGINT, _raise_first_interrupt)


@contextlib.contextmanager
def _interrupts_deferred():
    """Holds Ctrl-C back during a short step that must happen whole (taking the lock, the
    swap that publishes) and acts on it after."""
    if not _in_main_thread():
        yield
        return
    came = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if came and callable(previous):
            previous(signal.SIGINT, None)


def _progress_bar(total, enabled):
    from tqdm import tqdm

    return tqdm(total=total, disable=not enabled, unit="img", desc="data_prep",
                file=sys.stderr, smoothing=0.1)
