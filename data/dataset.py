"""Discover a 2D segmentation dataset on disk and read its image/mask pairs.

Layout: ``<root>/<split>/images/*`` and ``<root>/<split>/masks/*`` for the splits ``train``, ``valid`` (or
``val``) and ``test``; an image and its mask share a file stem, and a stem belongs to one split only. Only numpy
and OpenCV are used here, so the CLI's data commands stay fast.

What is decided per dataset, never per image (so that every pair is read the same way), is a :class:`ReadPlan`:
the image channels (``channels: auto`` is 1 when every image is greyscale), the mask rule (:func:`mask_rule`)
and the images' bit depth (8-bit images stay uint8; wider ones become float32 on the same 0..255 scale).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from data.errors import DatasetError
from data.labels import ClassMap, resize_labels

__all__ = [
    "AUTO",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "DatasetIndex",
    "LoadSettings",
    "MaskRule",
    "Pair",
    "ReadPlan",
    "discover",
    "mask_rule",
    "prepare_image",
    "read_pair",
    "value_bits",
]

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "valid", "test")
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LOSSY_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg")
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {"valid": ("val",)}
MAX_LISTED = 10
AUTO = "auto"
MASK_HALF = 128  # the default mask threshold on the 0..255 scale (half the range)
WIDE_FACTOR = 257  # 65535 / 255: an 8-bit threshold on the 16-bit scale
_LAYOUT = "<root>/{train,valid,test}/{images,masks}/<stem>.png"


@dataclass(frozen=True)
class Pair:
    """One image and its mask, matched by file stem."""

    stem: str
    image: Path
    mask: Path


@dataclass(frozen=True)
class DatasetIndex:
    """The pairs of every split of a dataset, sorted by stem."""

    root: Path
    splits: dict[str, tuple[Pair, ...]]

    def pairs(self) -> list[tuple[str, Pair]]:
        """All (split, pair) tuples in split order then stem order."""
        return [(name, pair) for name, pairs in self.splits.items() for pair in pairs]


@dataclass(frozen=True)
class LoadSettings:
    """What the user asked for: square size, image channels (1, 3 or ``"auto"``), the mask threshold
    (None: the dataset's mask rule, see :func:`mask_rule`) and the class map (None: binary masks; see
    data/labels.py)."""

    image_size: int
    channels: int | str = AUTO
    mask_threshold: int | None = None
    classes: ClassMap | None = None

    def __post_init__(self) -> None:
        if isinstance(self.classes, dict):  # read back from JSON (the cache's marker)
            object.__setattr__(self, "classes", ClassMap.from_dict(self.classes))
        limits = {"image_size": (1, None), "channels": (1, 3), "mask_threshold": (1, 255)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if (name, value) in (("channels", AUTO), ("mask_threshold", None)):
                continue
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"LoadSettings.{name} must be an int. Received: {name}={value!r}")
            # numpy ints become Python ints so the settings stay JSON-serialisable (fingerprint, cache key).
            object.__setattr__(self, name, int(value))
            if value < low or (high is not None and value > high):
                bounds = f">= {low}" if high is None else f"in {low}..{high}"
                raise ValueError(f"LoadSettings.{name} must be {bounds}. Received: {name}={value!r}")
        if self.channels not in (1, 3, AUTO):
            raise ValueError(f"LoadSettings.channels must be 1, 3 or 'auto'. Received: channels={self.channels!r}")


@dataclass(frozen=True)
class MaskRule:
    """How a dataset's mask pixels become class indices: binary masks (no ``classes``) become {0, 1}, a pixel
    ``>= threshold`` (on the file's own scale) being foreground; with a class map, 0..K-1 by the map.

    ``rule`` says in words which rule chose the threshold or the map; it is recorded in the fingerprint and the
    cache.
    """

    threshold: int
    rule: str
    classes: ClassMap | None = None

    @property
    def num_classes(self) -> int:
        """K, the background included (2 for binary masks)."""
        return 2 if self.classes is None else self.classes.num_classes

    def apply(self, gray: np.ndarray) -> np.ndarray:
        """Binary masks: uint8/uint16 [H, W] → uint8 {0, 1}."""
        return (gray >= self.threshold).astype(np.uint8)

    def labels(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """A decoded mask (grey or BGR) → uint8 class indices [H, W] (DatasetError for a value outside the map)."""
        if self.classes is None:
            return self.apply(to_gray(raw))
        return self.classes.read(raw, path)

    def resize(self, labels: np.ndarray, size: int) -> np.ndarray:
        """Class indices at ``size`` with the image's geometry."""
        if self.classes is None:
            return resize_mask(labels, size)
        return resize_labels(labels, size, self.classes.num_classes)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"threshold": self.threshold, "rule": self.rule}
        if self.classes is not None:
            out["classes"] = self.classes.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaskRule:
        classes = d.get("classes")
        return cls(int(d["threshold"]), str(d["rule"]), ClassMap.from_dict(classes) if classes else None)


def mask_rule(values: np.ndarray, settings: LoadSettings, *, colour: bool = False) -> MaskRule:
    """The mask rule of a dataset whose masks hold the distinct ``values`` (all masks of all splits together).

    - ``settings.mask_threshold`` set: it wins (on the 0..255 scale; masks with values above 255, i.e. 16-bit
      masks, compare at threshold × 257).
    - Exactly two values (label maps 0/1, 0/255, 0/38, 16-bit too): the lower is background, the higher
      foreground.
    - ``colour`` (some mask is a colour image, as colour-coded label maps are) with more values: every colour
      but the darkest (black) is foreground, the union of the structures; a grey threshold would keep the
      bright colours and silently drop the dark ones.
    - Otherwise (anti-aliased or JPEG masks, or one value only): foreground is ``>= 128`` (× 257 for 16-bit).

    Deciding once per dataset keeps an all-background mask empty, whatever values it holds.
    """
    if settings.classes is not None:
        k = settings.classes
        return MaskRule(1, f"class map of {k.num_classes} classes ({k.kind} masks, {k.source}): "
                           f"{', '.join(k.names)}", classes=k)
    values = np.unique(np.asarray(values, dtype=np.int64))
    wide = bool(values.size) and int(values[-1]) > 255
    factor = WIDE_FACTOR if wide else 1
    scale = "16-bit masks, × 257" if wide else "0..255"
    if settings.mask_threshold is not None:
        t = settings.mask_threshold * factor
        return MaskRule(t, f"data.mask_threshold {settings.mask_threshold} ({scale}): foreground >= {t}")
    if values.size == 2:
        low, high = int(values[0]), int(values[1])
        return MaskRule(high, f"two mask values: {low} is background, {high} foreground")
    if colour and values.size > 2:
        low, first = int(values[0]), int(values[1])
        return MaskRule(first, f"colour masks with {values.size} grey levels: {low} (black) is background, every "
                               f"colour is foreground (the union of the structures; one structure per model)")
    t = MASK_HALF * factor
    return MaskRule(t, f"{describe_values(values)} in the masks: foreground >= {t} (half of {scale})")


@dataclass(frozen=True)
class ReadPlan:
    """How every pair of one dataset is read: resolved channels, mask rule and image bit depth.

    ``image_bits`` 8: images are uint8 (8-bit files, or 16-bit files whose values fit in 8 bits); 9..16: every
    image is a 16-bit file and becomes float32 scaled by 255 / (2^bits − 1), so the model sees the 0..255 range
    it expects (its Rescaling(1/255) unchanged) with every grey level kept.
    """

    image_size: int
    channels: int
    mask: MaskRule
    image_bits: int = 8

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "channels": self.channels, "image_bits": self.image_bits,
                "mask": self.mask.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReadPlan:
        return cls(image_size=int(d["image_size"]), channels=int(d["channels"]), mask=MaskRule.from_dict(d["mask"]),
                   image_bits=int(d["image_bits"]))

    @classmethod
    def for_pair(cls, pair: Pair, settings: LoadSettings) -> ReadPlan:
        """The plan of a dataset made of this one pair (what `read_pair` uses when given LoadSettings)."""
        raw_image = decode_raw(read_bytes(pair.image, what="image"), pair.image, what="image")
        raw_mask = decode_raw(read_bytes(pair.mask, what="mask"), pair.mask, what="mask")
        gray = to_gray(raw_mask)
        channels = settings.channels if isinstance(settings.channels, int) else (1 if is_gray(raw_image) else 3)
        return cls(image_size=settings.image_size, channels=channels,
                   mask=mask_rule(np.unique(gray), settings, colour=not is_gray(raw_mask)),
                   image_bits=value_bits(raw_image))


def discover(root: Path | str, *, splits: Sequence[str] = SPLITS) -> DatasetIndex:
    """Index ``<root>/<split>/{images,masks}`` and pair images with masks by file stem.

    Args:
        root: the dataset folder.
        splits: the split folders to index (``valid`` also accepts a folder named ``val``).

    Returns:
        A DatasetIndex whose splits are keyed by the canonical split names, pairs sorted by stem.

    Raises:
        DatasetError: for the first problem found (missing folders, unpaired or duplicate files, empty split,
            a stem in two splits).
    """
    index, problems = scan(root, splits=splits)
    if problems:
        more = (
            f" (+{len(problems) - 1} more problems; `data check` lists them all)" if len(problems) > 1 else ""
        )
        raise DatasetError(problems[0] + more)
    return index


def scan(root: Path | str, *, splits: Sequence[str] = SPLITS) -> tuple[DatasetIndex, list[str]]:
    """Like `discover`, but return every problem instead of raising; the index holds the pairs that matched."""
    root = Path(root).expanduser().absolute()
    problems: list[str] = []
    found: dict[str, tuple[Pair, ...]] = {}
    if not root.exists():
        return DatasetIndex(root, found), [f"dataset {root}: folder not found; expected {_LAYOUT}"]
    if not root.is_dir():
        return DatasetIndex(root, found), [f"dataset {root}: is not a folder; expected {_LAYOUT}"]
    for split in splits:
        split_dir, problem = _split_folder(root, split)
        if split_dir is None:
            problems.append(problem)
            continue
        pairs, split_problems = _scan_split(split_dir)
        problems.extend(split_problems)
        if pairs:
            found[split] = pairs
    problems.extend(_stems_in_several_splits(root, found))
    return DatasetIndex(root, found), problems


def _stems_in_several_splits(root: Path, found: dict[str, tuple[Pair, ...]]) -> list[str]:
    """One problem listing the stems that more than one split holds (k-fold pools and scores key images by stem,
    so two images of one name would collapse into one)."""
    splits_of: dict[str, list[str]] = {}
    for split, pairs in found.items():
        for pair in pairs:
            splits_of.setdefault(pair.stem, []).append(split)
    shared = [f"{stem} ({' and '.join(names)})" for stem, names in sorted(splits_of.items()) if len(names) > 1]
    if not shared:
        return []
    return [
        f"dataset {root}: {len(shared)} stems are in more than one split ({list_names(shared)}); "
        "expected each image name in one split only (rename or move the copies)"
    ]


def read_pair(pair: Pair, plan: ReadPlan | LoadSettings) -> tuple[np.ndarray, np.ndarray]:
    """Decode one pair at the plan's size, as the cache does.

    Args:
        pair: the image and mask files.
        plan: the dataset's ReadPlan (the cache's ``plan``); LoadSettings read the pair as a dataset of its own.

    Returns:
        image: [S, S, C] (RGB when C == 3), uint8, or float32 on 0..255 for 16-bit data (`prepare_image`);
        mask: uint8 [S, S], class indices ({0, 1} for binary masks, 0..K-1 with a class map).

    Raises:
        DatasetError: a file is unreadable or corrupt, or the image and mask sizes differ.
    """
    if isinstance(plan, LoadSettings):
        plan = ReadPlan.for_pair(pair, plan)
    raw_image = decode_raw(read_bytes(pair.image, what="image"), pair.image, what="image")
    raw_mask = decode_raw(read_bytes(pair.mask, what="mask"), pair.mask, what="mask")
    check_sizes(pair, raw_image, raw_mask)
    image = prepare_image(raw_image, channels=plan.channels, size=plan.image_size, image_bits=plan.image_bits)
    mask = plan.mask.resize(plan.mask.labels(raw_mask, pair.mask), plan.image_size)
    return image, mask


def prepare_image(raw: np.ndarray, *, channels: int, size: int, image_bits: int = 8) -> np.ndarray:
    """A decoded image as the model takes it, at ``size``: the one conversion used by the cache and `predict`.

    ``image_bits`` 8: uint8 (a 16-bit file must then hold values up to 255); 9..16: float32, scaled by
    255 / (2^image_bits − 1), so the 0..255 range is the same as for 8-bit data and every level is kept.
    """
    pixels = resized_pixels(raw, channels=channels, size=size, wide=image_bits > 8)
    if image_bits > 8:
        pixels *= np.float32(image_scale(image_bits))
    return pixels


def resized_pixels(raw: np.ndarray, *, channels: int, size: int, wide: bool) -> np.ndarray:
    """``raw`` in ``channels`` at ``size``: uint8, or (``wide``) float32 in the file's own units, not yet scaled."""
    image = to_channels(raw, channels)
    if wide:
        return resize_image(image.astype(np.float32), size)
    if image.dtype != np.uint8:
        if image.size and int(image.max()) > 255:
            raise ValueError(f"expected 8-bit values. Received: a {image.dtype} image with values up to {int(image.max())}")
        image = image.astype(np.uint8)
    return resize_image(image, size)


def image_scale(image_bits: int) -> float:
    """The factor that maps an image of ``image_bits`` significant bits onto 0..255."""
    return 255.0 / float(2**image_bits - 1)


def value_bits(raw: np.ndarray) -> int:
    """Significant bits of an image's values (at least 8): 12 for a 12-bit CT slice stored in 16 bits."""
    return max(8, int(raw.max()).bit_length()) if raw.size else 8


def is_gray(raw: np.ndarray) -> bool:
    """True for a one-channel image, or three equal channels (a greyscale image saved as colour)."""
    if raw.ndim == 2:
        return True
    return bool(np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 1], raw[..., 2]))


def describe_values(values: np.ndarray, limit: int = 8) -> str:
    """``values 0, 1, 2`` or ``256 values 0..255`` for messages and the fingerprint."""
    values = np.asarray(values)
    if values.size == 0:
        return "no values"
    if values.size <= limit:
        return f"value{'s' if values.size > 1 else ''} {', '.join(str(int(v)) for v in values)}"
    return f"{values.size} values {int(values[0])}..{int(values[-1])}"


# ---------------------------------------------------------------------------------------------------------------
# package-internal helpers (used by fingerprint and cache)


def read_bytes(path: Path, *, what: str) -> bytes:
    """Read a file's bytes; an OSError becomes a DatasetError naming the file."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DatasetError(
            f"{what} {path}: cannot be read ({exc.strerror or exc}); expected a readable file"
        ) from exc


def decode_raw(data: bytes, path: Path, *, what: str) -> np.ndarray:
    """Decode image bytes to uint8 or uint16 (as stored): 2D for grayscale, [H, W, 3] BGR for colour (alpha
    dropped). 16-bit files keep every level; the ReadPlan decides how they are scaled (images) or binarised
    (masks)."""
    array: np.ndarray | None
    try:
        array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    except cv2.error:
        array = None
    if array is None or array.size == 0:
        raise DatasetError(
            f"{what} {path}: cannot be decoded (corrupt, truncated or not an image); "
            f"expected a readable {'/'.join(IMAGE_EXTENSIONS)} file"
        )
    if array.dtype not in (np.uint8, np.uint16):
        raise DatasetError(
            f"{what} {path}: pixel type {array.dtype} is not supported; expected 8- or 16-bit pixels"
        )
    if array.ndim == 3:
        n = array.shape[2]
        if n == 1:
            array = array[:, :, 0]
        elif n == 4:
            array = cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
        elif n != 3:
            raise DatasetError(
                f"{what} {path}: has {n} channels; expected 1 (grayscale), 3 (colour) or 4 (with alpha)"
            )
    return np.ascontiguousarray(array)


def check_sizes(pair: Pair, image: np.ndarray, mask: np.ndarray) -> None:
    """Raise a DatasetError naming both files when the image and mask sizes differ."""
    if image.shape[:2] != mask.shape[:2]:
        raise DatasetError(
            f"pair {pair.stem!r}: image {pair.image} is {_wh(image)} but mask {pair.mask} is {_wh(mask)} (WxH); "
            "expected the same size"
        )


def to_channels(raw: np.ndarray, channels: int) -> np.ndarray:
    """Grayscale or BGR → [H, W, channels] of the same dtype (grayscale repeated, colour converted to RGB or gray)."""
    if channels == 1:
        gray = raw if raw.ndim == 2 else cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY)
        return gray[:, :, None]
    if raw.ndim == 2:
        return np.repeat(raw[:, :, None], channels, axis=2)
    return cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)


def to_gray(raw: np.ndarray) -> np.ndarray:
    """Grayscale or BGR → [H, W] of the same dtype."""
    return raw if raw.ndim == 2 else cv2.cvtColor(raw, cv2.COLOR_BGR2GRAY)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize [H, W, C] to [size, size, C]: INTER_AREA when shrinking, INTER_LINEAR when enlarging."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(image)
    out = cv2.resize(image, (size, size), interpolation=_interpolation(h, w, size))
    return out[:, :, None] if out.ndim == 2 else out


MASK_COVER = 0.5 - 1e-4  # a resized mask pixel is foreground when at least half of it was (float rounding aside)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a {0, 1} mask [H, W] to [size, size] with the image's geometry, staying in {0, 1}.

    The mask is resampled as float with the image's interpolation (area when shrinking, bilinear when
    enlarging), then thresholded at one half. Nearest neighbour samples ``floor(x · scale)`` instead of the pixel
    centres the image uses, which moved masks by up to half an output pixel against their image (0.38 px at
    512 → 128).
    """
    if mask.shape == (size, size):
        return np.ascontiguousarray(mask)
    h, w = mask.shape
    cover = cv2.resize(mask.astype(np.float32), (size, size), interpolation=_interpolation(h, w, size))
    return (cover >= MASK_COVER).astype(np.uint8)


def _interpolation(h: int, w: int, size: int) -> int:
    return cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_LINEAR


def list_names(names: Sequence[str], limit: int = MAX_LISTED) -> str:
    """``a, b, c`` or ``a, …, j and 5 more`` for messages."""
    shown = ", ".join(names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


# ---------------------------------------------------------------------------------------------------------------


def _wh(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]}"


def _split_folder(root: Path, split: str) -> tuple[Path | None, str]:
    candidates = [root / split, *(root / alias for alias in SPLIT_ALIASES.get(split, ()))]
    present = [path for path in candidates if path.is_dir()]
    if len(present) > 1:
        names = " and ".join(path.name for path in present)
        return None, f"dataset {root}: both {names} exist for split {split!r}; expected only one of them"
    if not present:
        also = SPLIT_ALIASES.get(split, ())
        alias_note = f" (nor {', '.join(also)})" if also else ""
        return None, (
            f"dataset {root}: split folder {split!r} not found{alias_note}; "
            f"expected {root / split}/images and {root / split}/masks"
        )
    return present[0], ""


def _scan_split(split_dir: Path) -> tuple[tuple[Pair, ...], list[str]]:
    problems: list[str] = []
    files: dict[str, dict[str, Path]] = {}
    for kind in ("images", "masks"):
        folder = split_dir / kind
        if not folder.is_dir():
            problems.append(
                f"dataset {split_dir}: no {kind}/ folder; expected {folder} holding the {kind[:-1]} files"
            )
            continue
        by_stem, duplicates, not_files = _image_files(folder)
        if duplicates:
            problems.append(
                f"dataset {folder}: {len(duplicates)} stems appear with several extensions "
                f"({list_names(duplicates)}); expected one file per stem"
            )
        if not_files:
            problems.append(
                f"dataset {folder}: {len(not_files)} entries named like images are not files "
                f"({list_names(not_files)}); expected image files (a folder or a dangling link here is a mistake)"
            )
        files[kind] = by_stem
    if problems:
        return (), problems
    images, masks = files["images"], files["masks"]
    if not images and not masks:
        return (), [
            f"dataset {split_dir}: split is empty (no {'/'.join(IMAGE_EXTENSIONS)} files in images/ and masks/); "
            "expected at least one image/mask pair"
        ]
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    if no_mask:
        problems.append(
            f"dataset {split_dir / 'masks'}: {len(no_mask)} images have no mask "
            f"({list_names([images[s].name for s in no_mask])}); expected a mask with the same stem for every image"
        )
    if no_image:
        problems.append(
            f"dataset {split_dir / 'images'}: {len(no_image)} masks have no image "
            f"({list_names([masks[s].name for s in no_image])}); expected an image with the same stem for every mask"
        )
    pairs = tuple(Pair(stem, images[stem], masks[stem]) for stem in sorted(set(images) & set(masks)))
    return pairs, problems


def _image_files(folder: Path) -> tuple[dict[str, Path], list[str], list[str]]:
    """Image files by stem (hidden and non-image entries ignored), the stems seen twice, and the entries
    named like images that are not files (folders, dangling links)."""
    by_stem: dict[str, Path] = {}
    clashes: dict[str, list[str]] = {}
    ignored: list[str] = []
    not_files: list[str] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            ignored.append(path.name)
            continue
        if not path.is_file():
            not_files.append(path.name)
            continue
        if path.stem in by_stem:
            clashes.setdefault(path.stem, [by_stem[path.stem].name]).append(path.name)
        else:
            by_stem[path.stem] = path
    if ignored:
        logger.debug(
            "dataset %s: ignoring %d non-image entries (%s)", folder, len(ignored), list_names(ignored)
        )
    return by_stem, [f"{stem}: {', '.join(names)}" for stem, names in sorted(clashes.items())], not_files


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` items by ``fractions`` (largest remainder), every share at least one item.

    Raises:
        ValueError: fractions not positive or not summing to 1, or fewer items than shares.
    """
    if not fractions or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be positive and sum to 1. Received: split={tuple(fractions)}")
    if n < len(fractions):
        raise ValueError(
            f"need at least {len(fractions)} items to fill {len(fractions)} splits. Received: n={n}"
        )
    exact = [n * f for f in fractions]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i in range(len(counts)):
        while counts[i] < 1:
            donor = max(range(len(counts)), key=lambda j: counts[j])
            counts[donor] -= 1
            counts[i] += 1
    return counts
