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
    AUTO,
    LOSSY_EXTENSIONS,
    SPLITS,
    DatasetIndex,
    LoadSettings,
    MaskRule,
    Pair,
    ReadPlan,
    check_sizes,
    decode_raw,
    describe_values,
    image_scale,
    is_gray,
    list_names,
    mask_rule,
    read_bytes,
    scan,
    to_gray,
    value_bits,
)
from data.errors import DatasetError

__all__ = [
    "FINGERPRINT_SCHEMA_VERSION",
    "CheckReport",
    "check_dataset",
    "content_hash",
    "fingerprint",
    "foreground_errors",
]

logger = logging.getLogger(__name__)

FINGERPRINT_SCHEMA_VERSION = 2
SCORED_SPLITS = ("train", "valid")  # a split the search learns from or scores with must hold foreground


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
    """Describe a dataset: counts, sizes, foreground and intensity statistics, content hash, settings and the
    dataset-wide reading decisions (resolved channels, mask rule, image bit depth).

    Every mask is decoded twice (once for the mask rule) and every image once. The result is JSON-serialisable.

    Raises:
        DatasetError: a file is unreadable or corrupt, an image and its mask differ in size, or 8- and 16-bit
            images are mixed.
    """
    rule = dataset_mask_rule(index, settings)
    builder = FingerprintBuilder(index, settings, rule)
    for split, pair in index.pairs():
        builder.add(examine(split, pair, rule)[0])
    for problem in builder.bit_depth_errors():
        raise DatasetError(problem)
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

    Errors: missing folders, unpaired or duplicate files, a stem in two splits, empty splits, unreadable files,
    size mismatches, 8- and 16-bit images mixed, a train or valid split without foreground after reading (what
    `run` refuses too). Warnings: empty masks, JPEG (lossy) masks, masks with more than two values, a test split
    without foreground or all foreground, 16-bit images (how they are scaled), identical images in two splits.
    """
    index, errors = scan(root, splits=splits)
    warnings: list[str] = []
    values, colour, _ = mask_values(index, skip_unreadable=True)  # the examine pass reports unreadable masks
    rule = mask_rule(values, settings, colour=colour)
    builder = FingerprintBuilder(index, settings, rule)
    for split, pairs in index.splits.items():
        infos: list[PairInfo] = []
        for pair in pairs:
            try:
                info = examine(split, pair, rule)[0]
            except DatasetError as exc:
                errors.append(str(exc))
                continue
            infos.append(info)
            builder.add(info)
            if info.mask_values.size > 2 and rule.classes is None:
                warnings.append(
                    f"mask {pair.mask} has {describe_values(info.mask_values)}; foreground >= {rule.threshold}"
                )
        warnings.extend(_split_warnings(split, infos, rule))
    warnings.extend(_class_map_hint(index.root, values, colour, rule))
    result = builder.result()
    errors.extend(builder.bit_depth_errors())
    errors.extend(foreground_errors(result))
    warnings.extend(_dataset_warnings(result))
    report = CheckReport(fingerprint=None if errors else result, errors=errors, warnings=warnings)
    logger.info("checked %s: %d errors, %d warnings", index.root, len(errors), len(warnings))
    return report


def foreground_errors(fp: dict[str, Any]) -> list[str]:
    """One error per train/valid split of a fingerprint without a single foreground pixel after reading.

    Such a split trains a model that predicts nothing, and scores it about 1.0 (an empty truth and an empty
    prediction agree), so neither `data check` nor `run` accepts it.
    """
    out = []
    rule = fp.get("mask_rule", {})
    for split in SCORED_SPLITS:
        summary = fp.get("splits", {}).get(split)
        if not summary or not summary["count"] or summary["foreground"]["max"] > 0.0:
            continue
        out.append(
            f"dataset {fp.get('root')}: split {split!r} has no foreground in any of its {summary['count']} masks "
            f"after reading (mask {summary['mask_values']}; rule: {rule.get('rule')}); expected some foreground: "
            "check the masks, or set data.mask_threshold (mask pixels >= it are foreground; `data check` --threshold)"
        )
    return out


# ---------------------------------------------------------------------------------------------------------------
# package-internal: the decode passes shared by fingerprint, check_dataset and the cache


def mask_values(index: DatasetIndex, *, skip_unreadable: bool = False) -> tuple[np.ndarray, bool, list[str]]:
    """The distinct (grey) values of every mask of the dataset, whether any mask is a colour image, and the
    masks that could not be read (when skipped).

    Raises:
        DatasetError: an unreadable or corrupt mask, unless ``skip_unreadable``.
    """
    seen = np.zeros(65536, bool)
    colour = False
    problems: list[str] = []
    for _, pair in index.pairs():
        try:
            raw = decode_raw(read_bytes(pair.mask, what="mask"), pair.mask, what="mask")
        except DatasetError as exc:
            if not skip_unreadable:
                raise
            problems.append(str(exc))
            continue
        colour = colour or not is_gray(raw)
        seen[_distinct(to_gray(raw))] = True
    return np.flatnonzero(seen), colour, problems


def dataset_mask_rule(index: DatasetIndex, settings: LoadSettings) -> MaskRule:
    """The mask rule of a whole dataset (one decode pass over its masks)."""
    values, colour, _ = mask_values(index)
    rule = mask_rule(values, settings, colour=colour)
    logger.info("dataset %s: %s", index.root, rule.rule)
    return rule


@dataclass(frozen=True, eq=False)
class PairInfo:
    """Per-pair facts gathered while decoding (original resolution)."""

    split: str
    pair: Pair
    hash_lines: tuple[bytes, bytes]
    image_sha: str
    width: int
    height: int
    file_channels: int
    gray: bool
    file_bits: int  # 8 or 16: the file's sample size
    value_bits: int  # significant bits of the image's values (at least 8)
    image_max: int
    foreground: float
    intensity_sum: float
    intensity_sumsq: float
    intensity_count: int
    mask_values: np.ndarray  # distinct values of the (grey) mask
    class_present: np.ndarray  # bool [K]: which classes the mask holds after reading (K = 2 for binary masks)


def examine(split: str, pair: Pair, rule: MaskRule) -> tuple[PairInfo, np.ndarray, np.ndarray]:
    """Read and decode one pair and gather its statistics.

    Returns:
        The PairInfo, the decoded image (uint8/uint16, file channels) and the mask read by ``rule``
        (uint8 class indices, {0, 1} for binary masks), both at the original resolution, for the cache to convert with the dataset's ReadPlan.
    """
    image_bytes = read_bytes(pair.image, what="image")
    mask_bytes = read_bytes(pair.mask, what="mask")
    raw_image = decode_raw(image_bytes, pair.image, what="image")
    raw_mask = decode_raw(mask_bytes, pair.mask, what="mask")
    check_sizes(pair, raw_image, raw_mask)
    gray_mask = to_gray(raw_mask)
    mask = rule.labels(raw_mask, pair.mask)
    pixels = raw_image.astype(np.float64)
    info = PairInfo(
        split=split,
        pair=pair,
        hash_lines=(
            _file_line(split, "images", pair.image, image_bytes),
            _file_line(split, "masks", pair.mask, mask_bytes),
        ),
        image_sha=hashlib.sha256(image_bytes).hexdigest(),
        width=int(raw_image.shape[1]),
        height=int(raw_image.shape[0]),
        file_channels=1 if raw_image.ndim == 2 else int(raw_image.shape[2]),
        gray=is_gray(raw_image),
        file_bits=8 * raw_image.itemsize,
        value_bits=value_bits(raw_image),
        image_max=int(raw_image.max()) if raw_image.size else 0,
        foreground=float(np.count_nonzero(mask) / mask.size) if mask.size else 0.0,
        intensity_sum=float(pixels.sum()),
        intensity_sumsq=float(np.square(pixels).sum()),
        intensity_count=int(pixels.size),
        mask_values=_distinct(gray_mask),
        class_present=np.bincount(mask.ravel(), minlength=rule.num_classes)[: rule.num_classes] > 0,
    )
    return info, raw_image, mask


class FingerprintBuilder:
    """Accumulates PairInfo records (in index order) into the fingerprint dict and the dataset's ReadPlan."""

    def __init__(self, index: DatasetIndex, settings: LoadSettings, rule: MaskRule) -> None:
        self._index = index
        self._settings = settings
        self._rule = rule
        self._infos: dict[str, list[PairInfo]] = {split: [] for split in index.splits}

    def add(self, info: PairInfo) -> None:
        self._infos[info.split].append(info)

    def _every(self) -> list[PairInfo]:
        return [info for infos in self._infos.values() for info in infos]

    @property
    def channels(self) -> int:
        """The settings' channels, or (``auto``) 1 when every image so far is greyscale, else 3."""
        if self._settings.channels != AUTO:
            return int(self._settings.channels)
        return 1 if all(info.gray for info in self._every()) else 3

    @property
    def image_bits(self) -> int:
        """Significant bits of the widest image so far (8 unless some 16-bit file holds values above 255)."""
        return max((info.value_bits for info in self._every()), default=8)

    def plan(self) -> ReadPlan:
        """How every pair of the dataset is read, from what has been added."""
        return ReadPlan(image_size=self._settings.image_size, channels=self.channels, mask=self._rule,
                        image_bits=self.image_bits)

    def bit_depth_errors(self) -> list[str]:
        """8-bit image files next to 16-bit ones with wider values: no single scale fits both."""
        bits = self.image_bits
        if bits <= 8:
            return []
        narrow = [info.pair.image.name for info in self._every() if info.file_bits == 8]
        if not narrow:
            return []
        wide = [info.pair.image.name for info in self._every() if info.value_bits > 8]
        return [
            f"dataset {self._index.root}: images mix {len(narrow)} 8-bit files ({list_names(narrow)}) with "
            f"{len(wide)} 16-bit files of {bits} significant bits ({list_names(wide)}); expected one bit depth "
            "for every image (convert them all to one, e.g. with `data prepare`'s HU window)"
        ]

    def result(self) -> dict[str, Any]:
        digest = hashlib.sha256()
        for infos in self._infos.values():
            for info in infos:
                digest.update(info.hash_lines[0])
                digest.update(info.hash_lines[1])
        every = self._every()
        bits = self.image_bits
        return {
            "schema_version": FINGERPRINT_SCHEMA_VERSION,
            "root": str(self._index.root),
            "content_hash": digest.hexdigest(),
            "settings": asdict(self._settings),
            "channels": self.channels,
            "image_bits": bits,
            "image_scale": image_scale(bits) if bits > 8 else 1.0,
            "mask_rule": self._rule.to_dict(),
            "splits": {split: self._summary(infos) for split, infos in self._infos.items()},
            "total": self._summary(every),
            "identical_across_splits": _identical_across_splits(every),
        }

    def _summary(self, infos: list[PairInfo]) -> dict[str, Any]:
        summary = _summary(infos)
        classes = self._rule.classes
        if classes is not None:  # how many images hold each class
            held = np.sum([info.class_present for info in infos], axis=0, initial=0)
            summary["class_images"] = {name: int(n) for name, n in zip(classes.names, np.broadcast_to(
                held, (classes.num_classes,)), strict=True)}
        return summary


def _distinct(gray: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a uint8/uint16 array (bincount: faster than np.unique for images)."""
    return np.flatnonzero(np.bincount(gray.ravel(), minlength=1)).astype(np.int64)


def _identical_across_splits(infos: list[PairInfo]) -> list[str]:
    """Groups of byte-identical image files that sit in more than one split, as ``train/images/a.png = …``."""
    groups: dict[str, list[PairInfo]] = {}
    for info in infos:
        groups.setdefault(info.image_sha, []).append(info)
    return [
        " = ".join(f"{i.split}/images/{i.pair.image.name}" for i in group)
        for group in groups.values()
        if len({i.split for i in group}) > 1
    ]


def _file_line(split: str, kind: str, path: Path, data: bytes) -> bytes:
    # The canonical split name (not the folder, which may be `val`) keeps the hash independent of the alias.
    return f"{split}/{kind}/{path.name}\0{len(data)}\0{hashlib.sha256(data).hexdigest()}\n".encode()


def _summary(infos: list[PairInfo]) -> dict[str, Any]:
    fg = [info.foreground for info in infos]
    count = sum(info.intensity_count for info in infos)
    mean = sum(info.intensity_sum for info in infos) / count if count else 0.0
    variance = sum(info.intensity_sumsq for info in infos) / count - mean * mean if count else 0.0
    values = np.unique(np.concatenate([info.mask_values for info in infos])) if infos else np.zeros(0, np.int64)
    return {
        "count": len(infos),
        "sizes": dict(sorted(Counter(f"{info.width}x{info.height}" for info in infos).items())),
        "file_channels": {
            str(k): v for k, v in sorted(Counter(info.file_channels for info in infos).items())
        },
        "file_bits": {str(k): v for k, v in sorted(Counter(info.file_bits for info in infos).items())},
        "foreground": {
            "mean": statistics.fmean(fg) if fg else 0.0,
            "median": statistics.median(fg) if fg else 0.0,
            "min": min(fg, default=0.0),
            "max": max(fg, default=0.0),
            "empty": sum(1 for value in fg if value == 0.0),
        },
        "intensity": {"mean": mean, "std": max(variance, 0.0) ** 0.5},  # in the files' own units
        "mask_values": describe_values(values),
        "non_binary_masks": sum(1 for info in infos if info.mask_values.size > 2),
    }


def _split_warnings(split: str, infos: list[PairInfo], rule: MaskRule) -> list[str]:
    warnings: list[str] = []
    if not infos:
        return warnings
    split_dir = infos[0].pair.mask.parent.parent
    empty = [info.pair.mask.name for info in infos if info.foreground == 0.0]
    full = [info.pair.mask.name for info in infos if info.foreground == 1.0]
    if len(empty) == len(infos):
        if split not in SCORED_SPLITS:  # train/valid: an error (foreground_errors)
            warnings.append(
                f"split {split_dir}: all {len(infos)} masks are empty after reading (rule: {rule.rule}); "
                "expected some foreground, or the test scores mean little"
            )
    elif empty:
        warnings.append(
            f"split {split_dir}: {len(empty)} of {len(infos)} masks are empty after reading ({list_names(empty)})"
        )
    if full and len(full) == len(infos):
        warnings.append(
            f"split {split_dir}: all {len(infos)} masks are entirely foreground after reading (rule: {rule.rule}); "
            "expected some background (inverted masks?)"
        )
    lossy = [info.pair.mask.name for info in infos if info.pair.mask.suffix.lower() in LOSSY_EXTENSIONS]
    if lossy:
        warnings.append(
            f"split {split_dir}: {len(lossy)} masks are JPEG ({list_names(lossy)}); JPEG is lossy and blurs mask "
            "edges; expected PNG masks"
        )
    return warnings


def _class_map_hint(root: Path, values: np.ndarray, colour: bool, rule: MaskRule) -> list[str]:
    """Grey masks of a few small levels (0, 1, 2, …) look like class indices read as one foreground."""
    if rule.classes is not None or values.size < 3 or int(values[0]) != 0 or int(values[-1]) >= 64:
        return []
    kind = "colour" if colour else "grey"
    return [f"dataset {root}: the {kind} masks hold {describe_values(values)}, read as one foreground ({rule.rule}); "
            f"if they are classes, add a labels.json beside the splits or set data.classes (README: \"Several "
            "structures per mask\")"]


def _dataset_warnings(fp: dict[str, Any]) -> list[str]:
    warnings: list[str] = []
    bits = fp["image_bits"]
    if bits > 8:
        warnings.append(
            f"dataset {fp['root']}: images are 16-bit files with {bits} significant bits: read as float32 scaled "
            f"by 255/{2**bits - 1} onto 0..255, every grey level kept (the cache takes 4 bytes per pixel); for CT, "
            "`data prepare`'s HU window (--hu-min/--hu-max) usually gives the structures more contrast"
        )
    same = fp["identical_across_splits"]
    if same:
        warnings.append(
            f"dataset {fp['root']}: {len(same)} images are byte-identical files in two splits ({list_names(same)}); "
            "expected each image in one split (a copy in valid or test inflates its scores)"
        )
    return warnings
