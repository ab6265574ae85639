"""Atomic writes and reads of the study folder's files: a reader sees the old file or the new one, never a torn one.

The directory fsync is ``data/cache.py``'s (the dataset cache writes atomically too; ``data/`` never
imports ``search/``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from data.cache import fsync_path
from search.results.layout import WRITE_TEST

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "ensure_writable", "json_default", "read_json"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_path(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def json_default(o: Any) -> Any:
    """What ``json.dumps`` cannot write itself: numpy scalars as Python numbers, paths as strings."""
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def ensure_writable(folder: Path) -> None:
    """Make ``folder`` (and its parents) and prove a file can be written in it; raises OSError otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / WRITE_TEST
    probe.write_bytes(b"")
    probe.unlink()


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
