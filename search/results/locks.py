"""The one file lock of the project: ``flock`` on a lock file, released by the kernel when its holder dies.

Used for the study folder (search/study/folder.py), Optuna's journal and the creation of the Optuna study
(search/engines/optuna_engine/). Not the ``filelock`` package: its ``UnixFileLock`` opens the lock file with
``O_TRUNC`` before it tries the lock, so a driver that merely checks the study's lock would erase the pid
its holder wrote there (``status`` names the holder); and Optuna's own journal lock is a symlink, which a
killed driver leaves behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["lock_file", "locked", "unlock_file"]


def lock_file(path: Path, *, blocking: bool = True) -> int | None:
    """Open (create) ``path`` and take its exclusive lock: the open descriptor, or None if another process
    holds it and ``blocking`` is False. Raises FileNotFoundError when the folder is gone."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlock_file(fd: int) -> None:
    """Release a lock that :func:`lock_file` took, and close its descriptor."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold ``path``'s lock for the ``with`` block (waiting for it)."""
    fd = lock_file(path)
    assert fd is not None  # a blocking lock returns only once it is held
    try:
        yield
    finally:
        unlock_file(fd)
