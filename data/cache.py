"""Decoded cache of a dataset, shared by every process that trains on it.

``cache_dir/<key>/`` holds ``<split>_images.npy`` [N, S, S, C], ``<split>_masks.npy`` [N, S, S] (values 0/1),
``stems.json``, ``fingerprint.json`` and, written last, ``COMPLETE`` (with the dataset's ReadPlan: resolved
channels, mask rule, image bit depth). Images are uint8, or float32 on 0..255 for 16-bit datasets (every grey
level kept). The key hashes the dataset's content hash, the load settings and CACHE_VERSION (the reading rules),
so a changed file, setting or rule gives a new cache. A cache is built in a private temporary folder and renamed
into place in one step; when two processes build the same key, the first rename wins and the other discards its
copy. Readers verify ``COMPLETE`` before use, so a torn or mixed cache is never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from data.dataset import AUTO, DatasetIndex, LoadSettings, ReadPlan, image_scale, resized_pixels
from data.errors import DatasetError
from data.fingerprint import FingerprintBuilder, content_hash, dataset_mask_rule, examine
from data.labels import ClassMap

__all__ = ["CACHE_VERSION", "CachedDataset", "SplitArrays", "cache_key", "fsync_path", "load_cached", "open_cache"]

logger = logging.getLogger(__name__)

# 2: masks read by the dataset's mask rule and resized with the image's geometry; channels "auto"; 16-bit images
# kept as float32 (1 binarised every mask at 128, resized masks with nearest neighbour and cut 16 bits to 8).
CACHE_VERSION = 2
_COMPLETE = "COMPLETE"
_STEMS = "stems.json"
_FINGERPRINT = "fingerprint.json"
_TMP_PREFIX = ".tmp-"
_STALE_TMP_S = 24 * 3600.0
_PROGRESS_EVERY_S = 5.0
_ATTEMPTS = 3


@dataclass(frozen=True, eq=False)
class SplitArrays:
    """One split's decoded arrays (read-only memory maps) and stems, in the same order."""

    images: np.ndarray
    masks: np.ndarray
    stems: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.stems)


@dataclass(frozen=True, eq=False)
class CachedDataset:
    """A verified cache: its key and folder, the dataset fingerprint, the load settings, how the pairs were read
    (the ReadPlan) and the split arrays."""

    key: str
    path: Path
    fingerprint: dict[str, Any]
    settings: LoadSettings
    plan: ReadPlan
    splits: dict[str, SplitArrays]

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(self.splits)

    @property
    def channels(self) -> int:
        """The image channels in the cache (``channels: auto`` resolved)."""
        return self.plan.channels

    @property
    def classes(self) -> ClassMap | None:
        """The class map the masks were read with (None: binary masks)."""
        return self.plan.mask.classes

    def split(self, name: str) -> SplitArrays:
        """The arrays of one split; a KeyError lists the cached splits."""
        try:
            return self.splits[name]
        except KeyError:
            raise KeyError(
                f"split {name!r} is not in cache {self.path}; expected one of {list(self.splits)}"
            ) from None


def cache_key(index: DatasetIndex, settings: LoadSettings) -> str:
    """The cache key of a dataset under some settings (reads every file's bytes, decodes nothing)."""
    return _key(content_hash(index), index, settings)


def load_cached(index: DatasetIndex, settings: LoadSettings, *, cache_dir: Path | str) -> CachedDataset:
    """Load the decoded cache of ``index`` at ``settings``, building it first when missing or outdated.

    Args:
        index: the discovered dataset.
        settings: decoding settings; part of the key.
        cache_dir: parent folder of the caches (created if needed), shared by processes.

    Returns:
        The verified CachedDataset, arrays memory-mapped read-only.

    Raises:
        DatasetError: a file is unreadable or corrupt, sizes mismatch, or the files kept changing while caching.
    """
    cache_dir = Path(cache_dir).expanduser().absolute()
    cache_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(_ATTEMPTS):
        expected_hash = content_hash(index)
        key = _key(expected_hash, index, settings)
        target = cache_dir / key
        cached = _open(target, key) or _resolved_auto(cache_dir, expected_hash, index, settings)
        if cached is not None:
            logger.debug("cache %s reused", cached.path)
            cached.fingerprint["root"] = str(index.root)
            return cached
        if target.exists():
            logger.warning("cache %s is incomplete or damaged; rebuilding it", target)
            _discard(target)
        _remove_stale_temporaries(cache_dir)
        if _build(index, settings, cache_dir=cache_dir, key=key, expected_hash=expected_hash):
            cached = _open(target, key)
            if cached is not None:
                cached.fingerprint["root"] = str(index.root)
                return cached
    raise DatasetError(
        f"dataset {index.root}: files kept changing while being cached into {cache_dir}; "
        "expected the dataset to stay unchanged while caching"
    )


def open_cache(path: Path | str) -> CachedDataset:
    """Open an existing cache folder (``CachedDataset.path``) without the dataset, e.g. in a worker process.

    Raises:
        DatasetError: the folder is not a complete, consistent cache.
    """
    folder = Path(path).expanduser().absolute()
    try:
        json.loads((folder / _COMPLETE).read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(
            f"cache {folder}: no valid {_COMPLETE} marker ({exc}); expected a complete cache built by load_cached"
        ) from None
    cached = _open(folder, folder.name)
    if cached is None:
        raise DatasetError(
            f"cache {folder}: files are missing or inconsistent; expected a complete cache built by load_cached"
        )
    return cached


# ---------------------------------------------------------------------------------------------------------------


def _key(content: str, index: DatasetIndex, settings: LoadSettings) -> str:
    payload = {
        "cache_version": CACHE_VERSION,
        "content_hash": content,
        "settings": _settings_key(settings),
        "splits": list(index.splits),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _settings_key(settings: LoadSettings) -> dict[str, Any]:
    """The settings as they decide the arrays: a class map's ``source`` (config or labels.json) does not."""
    out = asdict(settings)
    if out.get("classes"):
        out["classes"].pop("source", None)
    return out


def _resolved_auto(
    cache_dir: Path, content: str, index: DatasetIndex, settings: LoadSettings
) -> CachedDataset | None:
    """The ``channels: auto`` cache when it resolved to the channels asked for, so that a study that recorded
    its resolved channels (study.yaml) reads the cache it was built with instead of decoding the dataset again."""
    if settings.channels == AUTO:
        return None
    auto = replace(settings, channels=AUTO)
    key = _key(content, index, auto)
    cached = _open(cache_dir / key, key)
    return cached if cached is not None and cached.channels == settings.channels else None


def _array_names(split: str) -> tuple[str, str]:
    return f"{split}_images.npy", f"{split}_masks.npy"


def _build(
    index: DatasetIndex, settings: LoadSettings, *, cache_dir: Path, key: str, expected_hash: str
) -> bool:
    """Build the cache in a temporary folder and rename it into place; False when the files changed meanwhile."""
    target = cache_dir / key
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{key}-", dir=cache_dir))
    try:
        fingerprint, plan = _write_arrays(index, settings, tmp)
        if fingerprint["content_hash"] != expected_hash:
            logger.warning("dataset %s changed while caching; starting again", index.root)
            return False
        _write_json(
            tmp / _STEMS, {split: [pair.stem for pair in pairs] for split, pairs in index.splits.items()}
        )
        _write_json(tmp / _FINGERPRINT, fingerprint)
        files = {path.name: path.stat().st_size for path in sorted(tmp.iterdir())}
        for name in files:
            fsync_path(tmp / name)
        marker = {
            "key": key,
            "cache_version": CACHE_VERSION,
            "settings": asdict(settings),
            "plan": plan.to_dict(),
            "counts": {split: len(pairs) for split, pairs in index.splits.items()},
            "files": files,
        }
        _write_json(tmp / _COMPLETE, marker)
        fsync_path(tmp / _COMPLETE)
        fsync_path(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.exists():
                raise
            # Another process finished first; its cache has the same key, so it holds the same content.
            logger.debug("cache %s appeared while building; discarding this copy", target)
        else:
            fsync_path(cache_dir)
            logger.info("cache %s ready", target)
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Relayout(Exception):
    """The data needs another array layout than the one being written (found colour, or 16-bit values)."""

    def __init__(self, channels: int, wide: bool) -> None:
        super().__init__(f"channels={channels}, wide={wide}")
        self.channels, self.wide = channels, wide


def _write_arrays(index: DatasetIndex, settings: LoadSettings, folder: Path) -> tuple[dict[str, Any], ReadPlan]:
    """Decode every pair into ``folder``; returns the fingerprint and the ReadPlan it was read with.

    The layout is guessed (one channel for ``channels: auto``, uint8) and written again from the start when a
    pair contradicts it (a colour image, a 16-bit image with values above 255): usually the first pair does.
    """
    rule = dataset_mask_rule(index, settings)
    channels, wide = (1 if settings.channels == AUTO else int(settings.channels)), False
    while True:
        try:
            return _write_layout(index, settings, folder, rule=rule, channels=channels, wide=wide)
        except _Relayout as exc:
            logger.info("dataset %s needs %s; caching it again", index.root, exc)
            channels, wide = exc.channels, exc.wide


def _write_layout(
    index: DatasetIndex, settings: LoadSettings, folder: Path, *, rule: Any, channels: int, wide: bool
) -> tuple[dict[str, Any], ReadPlan]:
    size = settings.image_size
    total = sum(len(pairs) for pairs in index.splits.values())
    logger.info(
        "caching %d pairs of %s at %dx%dx%d%s into %s",
        total, index.root, size, size, channels, " (float32)" if wide else "", folder.parent,
    )
    builder = FingerprintBuilder(index, settings, rule)
    started = last_report = time.monotonic()
    done = 0
    for split, pairs in index.splits.items():
        image_name, mask_name = _array_names(split)
        images = np.lib.format.open_memmap(
            folder / image_name, mode="w+", dtype=np.float32 if wide else np.uint8,
            shape=(len(pairs), size, size, channels),
        )
        masks = np.lib.format.open_memmap(
            folder / mask_name, mode="w+", dtype=np.uint8, shape=(len(pairs), size, size)
        )
        for i, pair in enumerate(pairs):
            info, raw, mask = examine(split, pair, rule)
            if channels == 1 and settings.channels == AUTO and not info.gray:
                raise _Relayout(3, wide)
            if not wide and info.value_bits > 8:
                raise _Relayout(channels, True)
            images[i] = resized_pixels(raw, channels=channels, size=size, wide=wide)
            masks[i] = rule.resize(mask, size)
            builder.add(info)
            done += 1
            now = time.monotonic()
            if now - last_report >= _PROGRESS_EVERY_S:
                logger.info("cached %d/%d pairs (%.0f s)", done, total, now - started)
                last_report = now
        images.flush()
        masks.flush()
        del images, masks
    for problem in builder.bit_depth_errors():
        raise DatasetError(problem)
    plan = builder.plan()
    if wide:  # the scale needs the whole dataset's bit depth, known only now
        _scale_images(index, folder, np.float32(image_scale(plan.image_bits)))
    logger.info("decoded %d pairs in %.1f s", total, time.monotonic() - started)
    return builder.result(), plan


def _scale_images(index: DatasetIndex, folder: Path, scale: np.float32) -> None:
    for split in index.splits:
        images = np.load(folder / _array_names(split)[0], mmap_mode="r+")
        for start in range(0, len(images), 64):
            images[start : start + 64] *= scale
        images.flush()
        del images


def _open(folder: Path, key: str) -> CachedDataset | None:
    """The cache in ``folder`` if it is complete and consistent, else None."""
    try:
        marker = json.loads((folder / _COMPLETE).read_text())
        if marker.get("key") != key or marker.get("cache_version") != CACHE_VERSION:
            return None
        for name, size in marker["files"].items():
            if (folder / name).stat().st_size != size:
                return None
        settings = LoadSettings(**marker["settings"])
        plan = ReadPlan.from_dict(marker["plan"])
        stems = json.loads((folder / _STEMS).read_text())
        fingerprint = json.loads((folder / _FINGERPRINT).read_text())
        s, c = plan.image_size, plan.channels
        dtype = np.float32 if plan.image_bits > 8 else np.uint8
        splits: dict[str, SplitArrays] = {}
        for split, count in marker["counts"].items():
            image_name, mask_name = _array_names(split)
            images = np.load(folder / image_name, mmap_mode="r")
            masks = np.load(folder / mask_name, mmap_mode="r")
            if (
                images.shape != (count, s, s, c)
                or masks.shape != (count, s, s)
                or images.dtype != dtype
                or masks.dtype != np.uint8
                or len(stems.get(split, ())) != count
            ):
                return None
            splits[split] = SplitArrays(images=images, masks=masks, stems=tuple(stems[split]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return CachedDataset(key=key, path=folder, fingerprint=fingerprint, settings=settings, plan=plan, splits=splits)


def _discard(folder: Path) -> None:
    """Move a damaged cache aside (one atomic step, so a concurrent reader never sees half of it) and delete it."""
    aside = folder.with_name(f"{_TMP_PREFIX}broken-{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _remove_stale_temporaries(cache_dir: Path) -> None:
    """Delete temporary build folders left by crashed processes (older than a day)."""
    now = time.time()
    for path in cache_dir.glob(f"{_TMP_PREFIX}*"):
        try:
            if now - path.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=1))


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (its entries), best effort: a file system that cannot is not an error."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
