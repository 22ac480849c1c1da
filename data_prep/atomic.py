"""Atomic file and folder writes: a reader sees the old file or the new one, never half of one.

Every stage writes its records (manifests, config.json, result.json, reports, job scripts) this
way, so a crash or a full disk never leaves a file that looks finished; the module lives in the
lowest package so that data_prep and keras_transfer share it.
"""
import contextlib
import ctypes
import errno
import functools
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


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


@functools.cache
def _renameat2():
    """Linux's renameat2 from the C library, or None where there is none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def exchange(a, b) -> bool:
    """Swaps two existing paths in one step (renameat2's RENAME_EXCHANGE): a reader sees the
    one or the other at each name, never neither. False, with nothing changed, where the
    system or the file system cannot (not Linux, NFS)."""
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))


def swap_dir(new, target):
    """Puts folder `new` at `target` and returns the folder now holding what was at `target`
    (for the caller to remove), or None if nothing was there.

    Where the file system can swap two folders (Linux's local file systems) this is one step:
    a reader sees the old folder or the new one at `target`, whole. Elsewhere the old one is
    first moved aside, so for a moment there is nothing at `target` (a reader finds no data,
    never half of the old and half of the new)."""
    target = Path(target)
    if not os.path.lexists(target):
        os.rename(new, target)
        return None
    if exchange(new, target):
        return Path(new)
    old = target.parent / f".old-{target.name}-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    os.replace(new, target)
    return old


def replace_dir(new, target):
    """Moves folder `new` to `target`, replacing a folder there whole (see swap_dir); the old
    one is removed once the new one is in place."""
    old = swap_dir(new, target)
    if old is not None:
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
