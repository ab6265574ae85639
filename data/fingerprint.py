"""Dataset fingerprint (counts, sizes, foreground and intensity statistics, content hash) and `data check`."""

from __future__ import annotations

import hashlib
import logging
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data.dataset import (
    LOSSY_EXTENSIONS,
    SPLITS,
    DatasetIndex,
    LoadSettings,
    Pair,
    binarise,
    check_sizes,
    decode_raw,
    list_names,
    read_bytes,
    resize_image,
    resize_mask,
    scan,
    to_channels,
    to_gray,
)
from data.errors import DatasetError

__all__ = ["FINGERPRINT_SCHEMA_VERSION", "CheckReport", "check_dataset", "content_hash", "fingerprint"]

logger = logging.getLogger(__name__)

FINGERPRINT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CheckReport:
    """What `check_dataset` found: the fingerprint (None when there are errors), every error and warning."""

    fingerprint: dict[str, Any] | None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there are no errors (warnings allowed)."""
        return not self.errors


def fingerprint(index: DatasetIndex, settings: LoadSettings) -> dict[str, Any]:
    """Describe a dataset: counts, sizes, foreground and intensity statistics, content hash and settings.

    Every file is read and decoded once. The result is JSON-serialisable.

    Raises:
        DatasetError: a file is unreadable or corrupt, or an image and its mask differ in size.
    """
    builder = FingerprintBuilder(index, settings)
    for split, pair in index.pairs():
        info, _, _ = examine(split, pair, settings, resize=False)
        builder.add(info)
    return builder.result()


def content_hash(index: DatasetIndex) -> str:
    """sha256 over the sorted relative paths, sizes and content hashes of every file (reads bytes, no decoding)."""
    digest = hashlib.sha256()
    for split, pair in index.pairs():
        for kind, path in (("images", pair.image), ("masks", pair.mask)):
            digest.update(_file_line(split, kind, path, read_bytes(path, what=kind[:-1])))
    return digest.hexdigest()


def check_dataset(root: Path | str, settings: LoadSettings, *, splits: Sequence[str] = SPLITS) -> CheckReport:
    """Check a dataset folder and collect every problem instead of stopping at the first.

    Errors: missing folders, unpaired or duplicate files, empty splits, unreadable files, size mismatches.
    Warnings: empty masks, JPEG (lossy) masks, masks with more than two values, a split whose binarised masks are
    all background (or all foreground).
    """
    index, errors = scan(root, splits=splits)
    warnings: list[str] = []
    builder = FingerprintBuilder(index, settings)
    threshold = settings.mask_threshold
    for split, pairs in index.splits.items():
        infos: list[PairInfo] = []
        for pair in pairs:
            try:
                info, _, _ = examine(split, pair, settings, resize=False)
            except DatasetError as exc:
                errors.append(str(exc))
                continue
            infos.append(info)
            builder.add(info)
            if info.mask_distinct > 2:
                warnings.append(
                    f"mask {pair.mask} has {info.mask_distinct} distinct values "
                    f"({info.mask_min}..{info.mask_max}); binarised at {threshold}"
                )
        warnings.extend(_split_warnings(infos, threshold))
    report = CheckReport(fingerprint=None if errors else builder.result(), errors=errors, warnings=warnings)
    logger.info("checked %s: %d errors, %d warnings", index.root, len(errors), len(warnings))
    return report


# ---------------------------------------------------------------------------------------------------------------
# package-internal: one decode pass shared by fingerprint, check_dataset and the cache


@dataclass(frozen=True)
class PairInfo:
    """Per-pair facts gathered while decoding (original resolution)."""

    split: str
    pair: Pair
    hash_lines: tuple[bytes, bytes]
    width: int
    height: int
    file_channels: int
    foreground: float
    intensity_sum: float
    intensity_sumsq: float
    intensity_count: int
    mask_distinct: int
    mask_min: int
    mask_max: int


def examine(
    split: str, pair: Pair, settings: LoadSettings, *, resize: bool
) -> tuple[PairInfo, np.ndarray | None, np.ndarray | None]:
    """Read and decode one pair, gather its statistics and, with ``resize``, return the arrays `read_pair` gives."""
    image_bytes = read_bytes(pair.image, what="image")
    mask_bytes = read_bytes(pair.mask, what="mask")
    raw_image = decode_raw(image_bytes, pair.image, what="image")
    raw_mask = decode_raw(mask_bytes, pair.mask, what="mask")
    check_sizes(pair, raw_image, raw_mask)
    image = to_channels(raw_image, settings.channels)
    gray_mask = to_gray(raw_mask)
    histogram = np.bincount(gray_mask.ravel(), minlength=256)
    values = np.flatnonzero(histogram)
    mask = binarise(gray_mask, settings.mask_threshold)
    pixels = image.astype(np.float64)
    info = PairInfo(
        split=split,
        pair=pair,
        hash_lines=(
            _file_line(split, "images", pair.image, image_bytes),
            _file_line(split, "masks", pair.mask, mask_bytes),
        ),
        width=int(raw_image.shape[1]),
        height=int(raw_image.shape[0]),
        file_channels=1 if raw_image.ndim == 2 else int(raw_image.shape[2]),
        foreground=float(histogram[settings.mask_threshold :].sum()) / gray_mask.size,
        intensity_sum=float(pixels.sum()),
        intensity_sumsq=float(np.square(pixels).sum()),
        intensity_count=int(pixels.size),
        mask_distinct=int(values.size),
        mask_min=int(values[0]),
        mask_max=int(values[-1]),
    )
    if not resize:
        return info, None, None
    return info, resize_image(image, settings.image_size), resize_mask(mask, settings.image_size)


class FingerprintBuilder:
    """Accumulates PairInfo records (in index order) into the fingerprint dict."""

    def __init__(self, index: DatasetIndex, settings: LoadSettings) -> None:
        self._index = index
        self._settings = settings
        self._infos: dict[str, list[PairInfo]] = {split: [] for split in index.splits}

    def add(self, info: PairInfo) -> None:
        self._infos[info.split].append(info)

    def result(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for infos in self._infos.values():
            for info in infos:
                digest.update(info.hash_lines[0])
                digest.update(info.hash_lines[1])
        every = [info for infos in self._infos.values() for info in infos]
        return {
            "schema_version": FINGERPRINT_SCHEMA_VERSION,
            "root": str(self._index.root),
            "content_hash": digest.hexdigest(),
            "settings": asdict(self._settings),
            "splits": {split: _summary(infos) for split, infos in self._infos.items()},
            "total": _summary(every),
        }


def _file_line(split: str, kind: str, path: Path, data: bytes) -> bytes:
    # The canonical split name (not the folder, which may be `val`) keeps the hash independent of the alias.
    return f"{split}/{kind}/{path.name}\0{len(data)}\0{hashlib.sha256(data).hexdigest()}\n".encode()


def _summary(infos: list[PairInfo]) -> dict[str, Any]:
    fg = [info.foreground for info in infos]
    count = sum(info.intensity_count for info in infos)
    mean = sum(info.intensity_sum for info in infos) / count if count else 0.0
    variance = sum(info.intensity_sumsq for info in infos) / count - mean * mean if count else 0.0
    return {
        "count": len(infos),
        "sizes": dict(sorted(Counter(f"{info.width}x{info.height}" for info in infos).items())),
        "file_channels": {
            str(k): v for k, v in sorted(Counter(info.file_channels for info in infos).items())
        },
        "foreground": {
            "mean": statistics.fmean(fg) if fg else 0.0,
            "median": statistics.median(fg) if fg else 0.0,
            "min": min(fg, default=0.0),
            "max": max(fg, default=0.0),
            "empty": sum(1 for value in fg if value == 0.0),
        },
        "intensity": {"mean": mean, "std": max(variance, 0.0) ** 0.5},
        "non_binary_masks": sum(1 for info in infos if info.mask_distinct > 2),
    }


def _split_warnings(infos: list[PairInfo], threshold: int) -> list[str]:
    warnings: list[str] = []
    if not infos:
        return warnings
    split_dir = infos[0].pair.mask.parent.parent
    empty = [info.pair.mask.name for info in infos if info.foreground == 0.0]
    full = [info.pair.mask.name for info in infos if info.foreground == 1.0]
    highest = max(info.mask_max for info in infos)
    if len(empty) == len(infos):
        hint = (
            f"; masks stored as 0/{highest} need mask_threshold<={highest}" if 0 < highest < threshold else ""
        )
        warnings.append(
            f"split {split_dir}: all {len(infos)} masks are empty after binarising at {threshold} "
            f"(highest mask value {highest}){hint}; expected some foreground"
        )
    elif empty:
        warnings.append(
            f"split {split_dir}: {len(empty)} of {len(infos)} masks are empty after binarising at {threshold} "
            f"({list_names(empty)})"
        )
    if full and len(full) == len(infos):
        warnings.append(
            f"split {split_dir}: all {len(infos)} masks are entirely foreground after binarising at {threshold}; "
            "expected some background (inverted masks?)"
        )
    lossy = [info.pair.mask.name for info in infos if info.pair.mask.suffix.lower() in LOSSY_EXTENSIONS]
    if lossy:
        warnings.append(
            f"split {split_dir}: {len(lossy)} masks are JPEG ({list_names(lossy)}); JPEG is lossy and blurs mask "
            "edges; expected PNG masks"
        )
    return warnings
