"""Atomic file and folder writes: a reader sees the old file or the new one, never half of one.

Every stage writes its records (manifests, config.json, result.json, reports, job scripts) this
way, so a crash or a full disk never leaves a file that looks finished; the module lives in the
lowest package so that data_prep and keras_transfer share it.
"""
import contextlib
import ctypes
import errno
import functools
import glob
import json
import os
import shutil
import socket
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


# Linux's renameat2 flag that swaps two paths in one step (ext4, xfs, btrfs, tmpfs; not NFS).
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_NOT_SUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


def exchange(a, b) -> bool:
    """Swaps the folders `a` and `b` in one atomic step; False where the system or the file
    system cannot (then nothing has changed)."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NOT_SUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


@functools.lru_cache(maxsize=1)
def _renameat2():
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def owner_tag() -> str:
    """<host>-<pid> of this process, for the names of the folders it leaves while it works, so
    that a later process can tell the leftovers of a dead one (`remove_stale`)."""
    return f"{socket.gethostname().replace('/', '_')}-{os.getpid()}"


def _owner_is_dead(tag: str) -> bool:
    """Whether the process of an `owner_tag` is gone; False when it cannot tell (another host's
    process, a pid of another user)."""
    host, _, pid = tag.rpartition("-")
    if host != socket.gethostname().replace("/", "_") or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def replace_dir(new, target):
    """Moves folder `new` to `target`, replacing a folder there whole: in one atomic exchange
    where the file system allows it, else by two renames, the old folder kept as
    .old-<target>-<host>-<pid> until the new one is in place (`remove_stale` restores it if the
    process died between the two). The old folder is removed last."""
    new, target = Path(new), Path(target)
    if target.exists() and exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # now the old folder
        return
    old = target.parent / f".old-{target.name}-{owner_tag()}"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old.exists() and not target.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def swap_dir(new, target):
    """Puts folder `new` at `target` and returns the folder now holding what was at `target`
    (for the caller to remove), or None if nothing was there. In one step where the file system
    can swap two folders (`exchange`); elsewhere the old one is first moved aside as
    .old-<target>-<host>-<pid>, so for a moment there is nothing at `target` (a reader finds no
    data, never half of the old and half of the new; `remove_stale` puts it back if the process
    died in between)."""
    target = Path(target)
    if not os.path.lexists(target):
        os.rename(new, target)
        return None
    if exchange(new, target):
        return Path(new)
    old = target.parent / f".old-{target.name}-{owner_tag()}"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    os.replace(new, target)
    return old


def remove_stale(target) -> list[Path]:
    """Removes what dead processes of this host left beside `target` while replacing it: their
    staging folders (`staged_directory`) and old folders (`replace_dir`); an old folder is put
    back first if `target` is missing (the process died between its two renames). Returns the
    removed paths. Leftovers of live processes and of other hosts are left alone."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    name = glob.escape(target.name)
    for path in sorted(target.parent.glob(f".old-{name}-*")):
        if _owner_is_dead(path.name[len(f".old-{target.name}-"):]):
            if not target.exists():
                os.replace(path, target)
            else:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    for path in sorted(target.parent.glob(f".staging-{name}-*")):
        tag, _, _ = path.name[len(f".staging-{target.name}-"):].rpartition("-")
        if _owner_is_dead(tag):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def staged_directory(target):
    """Yields an empty folder beside `target` (.staging-<target>-<host>-<pid>-<random>); on
    success it replaces `target` whole, on an error it is removed and `target` is left as it was.
    Leftovers of dead processes beside `target` are removed first (`remove_stale`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    # mkdir, not mkdtemp: the folder gets the umask's permissions (mkdtemp's are 0700), as the
    # folder it replaces did.
    staging = target.parent / f".staging-{target.name}-{owner_tag()}-{uuid.uuid4().hex[:8]}"
    try:  # a Ctrl-C just after mkdir removes the folder too
        staging.mkdir()
        yield staging
        replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
