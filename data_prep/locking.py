"""File locks, so two processes never write the same output at once: data_prep one split of a
dataset, main and the grid one net. The module lives in the lowest package so that data_prep
and keras_transfer share it."""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path


class FileLock:
    """An exclusive flock on a lock file.

    The lock lives on the open file, which a child process inherits, so it is held while the
    process that took it (or a child it started) is alive and released by the kernel when they
    are gone: a killed process never leaves its output locked. The file holds the holder's pid
    and host for people (and `holder`) to read. With `remove_on_release` the file goes when the
    lock is let go, so a finished run leaves nothing beside its output; `acquire` then makes
    sure it holds the file that is on disk, not one a holder removed as it let go.
    """

    def __init__(self, path: Path, *, remove_on_release: bool = False):
        self.path = Path(path)
        self.remove_on_release = remove_on_release
        self.fd = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            try:
                on_disk = os.stat(self.path)
            except FileNotFoundError:
                on_disk = None
            mine = os.fstat(fd)
            if on_disk is not None and (on_disk.st_dev, on_disk.st_ino) == (mine.st_dev,
                                                                           mine.st_ino):
                break
            os.close(fd)  # removed by the holder before us as it let go: lock the new file
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self.fd = fd
        return True

    def holder(self) -> str:
        """Who holds the lock, from the file: 'pid N on HOST' ('another process' if unsaid)."""
        try:
            pid, host = self.path.read_text().split()
        except (OSError, ValueError):
            return "another process"
        return f"pid {pid} on {host}"

    def release(self) -> None:
        """Lets go of the lock (removing the file if asked); again, or when not held: nothing."""
        fd = self.fd
        if fd is None:
            return
        if self.remove_on_release:
            try:
                if os.path.samestat(os.stat(self.path), os.fstat(fd)):  # not a successor's
                    os.unlink(self.path)
            except FileNotFoundError:
                pass
        self.fd = None
        os.close(fd)
