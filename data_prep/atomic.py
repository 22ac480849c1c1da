"""Atomic file and folder writes: a reader sees the old file or the new one, never half of one.

Every stage writes its records (manifests, config.json, result.json, reports, job scripts) this
way, so a crash or a full disk never leaves a file that looks finished; the module lives in the
lowest package so that data_prep and keras_transfer share it.
"""
import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path


def write_bytes_atomic(path, payload: bytes, mode: int | None = None):
    """Writes bytes via a temp file in the same directory and os.replace: old file or new, never
    half a file. `mode` sets the permissions (default: the umask's)."""
    path = Path(path)
    # open(..., "x") rather than mkstemp: the file gets the umask's permissions, not 0600.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "xb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path, obj):
    """Writes JSON atomically (see write_bytes_atomic). Key order is kept (no sorting), 2-space
    indent, trailing newline."""
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def replace_dir(new, target):
    """Moves folder `new` to `target`, replacing a folder there whole; the old one is removed
    only once the new one is in place."""
    target = Path(target)
    old = target.parent / f".old-{target.name}-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(target):
    """Yields an empty folder beside `target`; on success it replaces `target` whole, on an
    error it is removed and `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".staging-{target.name}-"))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_dir(staging, target)
