"""Per-run locks, so two processes never train the same net at once."""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path


class RunLock:
    """An exclusive flock on the run's lock file.

    The lock lives on the open file, which the training process inherits, so it is held while the
    launcher or its run is alive and released by the kernel when both are gone: a killed launcher
    never leaves a net locked. The file holds the holder's pid and host for people to read.
    """

    def __init__(self, path: Path):
        self.path = path
        self.fd = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
