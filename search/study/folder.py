"""The study folder ``results/<study>/``: open or resume it, refuse incompatible changes, lock it.

A new folder is only a candidate until its driver holds the :class:`StudyLock`; ``study.yaml`` (what
"the study exists" means) is written once the data is prepared, and only the lock holder may remove
a folder it created (search/study/runner.py).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from data.labels import ClassMap
from search.config import AUTO, Config, config_from_dict
from search.errors import ConfigError
from search.results import StudyDir, read_json, read_study_config
from search.results.io import ensure_writable
from search.results.locks import lock_file, unlock_file

__all__ = [
    "RESUMABLE_CHANGES",
    "StudyLock",
    "blocking_differences",
    "check_same_dataset",
    "check_stored_config",
    "config_differences",
    "open_study_dir",
    "refuse_differences",
    "sweep_temp_files",
]

# Settings that may change when a study resumes without --allow-changes.
RESUMABLE_CHANGES = {
    "study.max_trials",
    "study.timeout_s",
    "study.workers",
    "study.recycle_after",
    "study.max_consecutive_failures",
    "study.storage",
    "study.heartbeat_s",
    "data.cache_dir",
    "data.root",
    "final.retrain",
    "final.train_on_valid",
    "final.num_predictions",
    "final.reevaluate_top_k",
    "final.seeds",
    "final.select",
    "train.tensorboard",
}


def open_study_dir(cfg: Config, results_root: Path, *, allow_changes: bool = False) -> tuple[StudyDir, bool]:
    """Create ``results/<study>/`` or check that the existing one may resume with ``cfg``.

    Returns the study folder and whether the study already existed (its study.yaml, written once its data
    is prepared). A new folder is only a candidate: ``run_study`` claims it with the study lock.
    """
    study = StudyDir(results_root / cfg.study.name)
    if study.exists():
        old = read_study_config(study)
        if not allow_changes:
            refuse_differences(cfg, old, where=str(study.root))
        return study, True
    try:
        ensure_writable(study.root)
    except OSError as e:
        raise ConfigError(f"results folder {study.root} is not writable ({e.strerror})") from None
    return study, False


def refuse_differences(new: Config, old: Config, *, where: str) -> None:
    """One-line ConfigError listing what a resume may not change (see blocking_differences)."""
    blocking = blocking_differences(old, new)
    if blocking:
        raise ConfigError(
            f"study {new.study.name!r} exists in {where} with another configuration: "
            + "; ".join(blocking[:8])
            + (f" (+{len(blocking) - 8} more)" if len(blocking) > 8 else "")
            + ". Use another --study name, or --allow-changes if the change is compatible"
        )


def blocking_differences(old: Config, new: Config) -> list[str]:
    """Differences that a resume may not make silently (see RESUMABLE_CHANGES).

    The storage URL may change (another host name for the same database), but not between the
    local journal and a database: the trials would be numbered again from 0 in the new one.
    """
    out = []
    for d in config_differences(old, new):
        key = d.split(":")[0]
        if key == "data.channels" and "auto" in (old.data.channels, new.data.channels):
            continue  # study.yaml records auto resolved; the data fingerprint check catches changed images
        if key.split(".")[:2] == ["data", "classes"] and "auto" in (old.data.classes, new.data.classes):
            continue  # recorded resolved too; check_same_dataset compares the class maps
        if key.startswith("train.") and getattr(new.train, key[len("train."):], None) == AUTO:
            continue  # a rule left to the budget: the study keeps the one it was created with
        if key == "study.storage" and (old.study.storage is None) != (new.study.storage is None):
            out.append("study.storage: between the local journal and a database (the engine state "
                       "does not move; use another --study name)")
        elif key not in RESUMABLE_CHANGES:
            out.append(d)
    return out


def config_differences(old: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ, as ``key: old -> new``."""
    a, b = _flatten(old.to_dict()), _flatten(new.to_dict())
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and prefix != "search_space.":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v, sort_keys=True) if isinstance(v, dict) else v
    return out


def check_stored_config(cfg: Config, *, allow_changes: bool = False) -> None:
    """Refuse a study that exists in ``study.storage`` with another configuration (reads only)."""
    from search.engines.optuna_engine import redact_url, stored_config

    stored = stored_config(cfg)
    if not stored:
        return
    old = config_from_dict(stored, source=f"{redact_url(str(cfg.study.storage))} study {cfg.study.name!r}")
    if not allow_changes:
        refuse_differences(cfg, old, where=redact_url(str(cfg.study.storage)))


def check_same_dataset(study: StudyDir, fingerprint: dict[str, Any], *, allow_changes: bool = False) -> None:
    """Refuse to resume a study on a dataset whose content hash differs from the one it was made with."""
    if allow_changes or not study.fingerprint_json.is_file():
        return
    old = read_json(study.fingerprint_json)
    if old.get("content_hash") != fingerprint.get("content_hash"):
        raise ConfigError(
            f"study {study.name!r} was made with another dataset (content hash "
            f"{str(old.get('content_hash'))[:12]} != {str(fingerprint.get('content_hash'))[:12]}); "
            f"use another --study name or --allow-changes"
        )
    before, now = _class_map_of(old), _class_map_of(fingerprint)
    if before != now:
        raise ConfigError(
            f"study {study.name!r} was made with the class map {before or 'binary'}, the data are now read with "
            f"{now or 'binary'} (data.classes or the dataset's labels.json changed); use another --study name"
        )


def _class_map_of(fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """The class map a fingerprint's masks were read with, without where it came from (None: binary)."""
    classes = (fingerprint.get("mask_rule") or {}).get("classes")
    return ClassMap.from_dict(classes).mapping() if classes else None


class StudyLock:
    """An advisory lock on the study folder, held while a driver runs it."""

    def __init__(self, study: StudyDir) -> None:
        self.path = study.lock_path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        try:
            fd = lock_file(self.path, blocking=False)
        except FileNotFoundError:  # the folder was just removed by the driver that failed to create it
            return False
        if fd is None:
            return False
        try:
            # A creator that fails removes the folder, lock file included, while holding the lock:
            # a lock on the removed file would claim nothing.
            removed = os.fstat(fd).st_ino != os.stat(self.path).st_ino
        except FileNotFoundError:
            removed = True
        if removed:
            unlock_file(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def is_held(self) -> bool:
        """Whether a driver holds the lock now (for readers such as ``status``); takes no lock itself.

        Linux lists every flock in ``/proc/locks`` by device and inode. Elsewhere the holder's pid,
        which the lock file keeps, is checked for a live process.
        """
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        try:
            lines = Path("/proc/locks").read_text().splitlines()
        except OSError:
            pid = self.holder()
            if not pid.isdigit():
                return False
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass
            return True
        want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
        for line in lines:
            fields = line.split()
            if "->" in fields or "FLOCK" not in fields:  # "->": a waiter, not a holder
                continue
            try:
                major, minor, inode = fields[fields.index("FLOCK") + 4].split(":")
                if (int(major, 16), int(minor, 16), int(inode)) == want:
                    return True
            except (IndexError, ValueError):
                continue
        return False

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fd is not None:
            unlock_file(self._fd)
            self._fd = None


def sweep_temp_files(study: StudyDir, *, older_than_s: float = 60.0) -> None:
    """Remove the temp files of atomic writes that a kill interrupted (``.NAME.XXXX.tmp``).

    Only old ones: a driver of the study that is still finishing an epoch may be writing one now.
    """
    now = time.time()
    for path in study.root.rglob(".*.tmp"):
        try:
            if path.is_file() and now - path.stat().st_mtime > older_than_s:
                path.unlink()
        except OSError:
            pass
