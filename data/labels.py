"""Class maps: how the pixels of a multi-class mask become class indices 0..K-1.

A dataset is binary (the default: every mask is read by the dataset's mask rule, data/dataset.py) unless it has a
class map: an ordered ``name → value`` mapping whose first entry is the background (class 0). A value is either

- a grey level (**index masks**: 8- or 16-bit masks holding 0, 1, …; any grey levels work, e.g. NIfTI labels
  5 and 7), or
- an RGB triple (**colour masks**, as the reference tool's sibling projects and the shared `chd-ct-multiclass` set).

The map comes from the config (``data.classes``) or, with ``data.classes: auto`` (the default), from a
``labels.json`` beside the split folders (``{"labels": {"background": [0, 0, 0], "aorta": [0, 255, 255], …}}`` or
the mapping alone). A map of two classes (background and one structure) is a binary dataset with that one
structure; ``data.classes: binary`` ignores a ``labels.json``.

Every pixel must hold a value of the map: a colour or level outside it is a :class:`DatasetError` naming the file,
the value and the values expected, never a silently guessed class.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from data.errors import DatasetError

__all__ = ["LABELS_FILE", "ClassMap", "class_map_from", "labels_file_map", "palette", "resize_labels", "resolve_class_map"]

LABELS_FILE = "labels.json"
MAX_CLASSES = 255  # class indices are stored as uint8
_SHOWN = 8  # values named in an error message


@dataclass(frozen=True)
class ClassMap:
    """An ordered class map: ``names[i]`` is class ``i`` and pixels of ``values[i]`` belong to it.

    ``kind`` "index": values are grey levels; "colour": values are (R, G, B) triples. ``source`` says where the
    map came from (for messages and the fingerprint).
    """

    names: tuple[str, ...]
    values: tuple[Any, ...]  # int grey levels, or (r, g, b) tuples
    kind: Literal["index", "colour"]
    source: str = "data.classes"

    @property
    def num_classes(self) -> int:
        """K, the background included."""
        return len(self.names)

    @property
    def foreground(self) -> tuple[str, ...]:
        """The names of classes 1..K-1."""
        return self.names[1:]

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "values": [v if isinstance(v, int) else list(v) for v in self.values],
                "kind": self.kind, "source": self.source}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassMap:
        values = tuple(int(v) if d["kind"] == "index" else tuple(int(c) for c in v) for v in d["values"])
        return cls(names=tuple(str(n) for n in d["names"]), values=values, kind=d["kind"],
                   source=str(d.get("source", "data.classes")))

    def mapping(self) -> dict[str, Any]:
        """``name → value`` as a config holds it (YAML/JSON friendly)."""
        return {name: (v if isinstance(v, int) else list(v)) for name, v in zip(self.names, self.values, strict=True)}

    def colours(self) -> np.ndarray:
        """uint8 [K, 3] RGB colours to draw each class: the map's own colours, or a fixed palette for index maps."""
        if self.kind == "colour":
            return np.array(self.values, dtype=np.uint8)
        return palette(self.num_classes)

    def read(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """A decoded mask (grey, or BGR as OpenCV decodes colour) → uint8 class indices [H, W].

        Raises:
            DatasetError: a pixel value outside the map (naming the file, the value and the values expected).
        """
        if self.kind == "colour":
            return self._read_colour(raw, path)
        return self._read_index(raw if raw.ndim == 2 else _grey_or_error(raw, path), path)

    def _read_index(self, gray: np.ndarray, path: Path) -> np.ndarray:
        lookup = np.full(65536 if gray.dtype == np.uint16 else 256, -1, dtype=np.int16)
        for index, value in enumerate(self.values):
            if value < lookup.size:
                lookup[value] = index
        labels = lookup[gray]
        if (labels < 0).any():
            unknown = np.unique(gray[labels < 0])
            raise DatasetError(
                f"mask {path}: holds {_list(unknown)} not in the class map ({self.source}); expected only "
                f"{_list(np.array(self.values))} ({', '.join(f'{n}={v}' for n, v in zip(self.names, self.values, strict=True))})"
            )
        return labels.astype(np.uint8)

    def _read_colour(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.dtype != np.uint8:
            raise DatasetError(f"mask {path}: is a 16-bit image; expected 8-bit colour masks for the colour class "
                               f"map ({self.source})")
        rgb = np.repeat(raw[:, :, None], 3, axis=2) if raw.ndim == 2 else raw[:, :, ::-1]
        packed = _pack(rgb)
        keys = np.array([_pack(np.array(v, dtype=np.uint8)[None, None, :])[0, 0] for v in self.values])
        order = np.argsort(keys)
        position = np.clip(np.searchsorted(keys[order], packed), 0, len(keys) - 1)
        found = keys[order][position] == packed
        if not found.all():
            unknown = np.unique(packed[~found])
            shown = [((int(p) >> 16) & 255, (int(p) >> 8) & 255, int(p) & 255) for p in unknown[:3]]
            raise DatasetError(
                f"mask {path}: holds {unknown.size} colour(s) not in the class map ({self.source}), "
                f"e.g. RGB {', '.join(map(str, shown))} at {int((~found).sum())} pixels; expected only the "
                f"map's colours ({', '.join(f'{n}={tuple(v)}' for n, v in zip(self.names, self.values, strict=True))})"
            )
        return order[position].astype(np.uint8)


def class_map_from(value: Mapping[str, Any], *, source: str) -> ClassMap:
    """A ClassMap from ``name → grey level`` or ``name → [r, g, b]`` (first entry: background).

    Raises:
        ValueError: naming ``source``, the entry and what was expected (mixed kinds, values out of range, two
            classes with one value, fewer than two or more than 255 classes).
    """
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{source}: expected a mapping of class name to a grey level or an [R, G, B] colour, the "
                         f"background first. Received: {value!r}")
    if not 2 <= len(value) <= MAX_CLASSES:
        raise ValueError(f"{source}: expected 2..{MAX_CLASSES} classes, the background first. Received: "
                         f"{len(value)} ({', '.join(map(str, value))})")
    kinds = {name: _kind_of(v) for name, v in value.items()}
    bad = [name for name, kind in kinds.items() if kind is None]
    if bad:
        raise ValueError(f"{source}: class {bad[0]!r} has value {value[bad[0]]!r}; expected a grey level 0..65535 "
                         "or an [R, G, B] colour of 0..255 each")
    if len(set(kinds.values())) > 1:
        raise ValueError(f"{source}: mixes grey levels and colours ({kinds}); expected one kind for every class")
    kind: Literal["index", "colour"] = "index" if next(iter(kinds.values())) == "index" else "colour"
    values = tuple(int(v) if kind == "index" else tuple(int(c) for c in v) for v in value.values())
    seen: dict[Any, str] = {}
    for name, v in zip(value, values, strict=True):
        if v in seen:
            what = f"colour {list(v)}" if isinstance(v, tuple) else f"value {v}"
            raise ValueError(f"{source}: classes {seen[v]!r} and {name!r} have one {what}; expected one value per "
                             "class")
        seen[v] = str(name)
    return ClassMap(names=tuple(str(n) for n in value), values=values, kind=kind, source=source)


def labels_file_map(root: Path) -> ClassMap | None:
    """The class map of ``<root>/labels.json``, or None without one.

    Raises:
        DatasetError: the file is unreadable, not JSON, or not a valid class map (naming the file).
    """
    path = Path(root) / LABELS_FILE
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot be read as JSON ({exc}); expected {{\"labels\": {{name: [R, G, B] or "
                           "grey level, …}}}, the background first") from exc
    mapping = payload.get("labels", payload) if isinstance(payload, dict) else payload
    try:
        return class_map_from(mapping, source=str(path))
    except ValueError as exc:
        raise DatasetError(str(exc)) from None


def resize_labels(labels: np.ndarray, size: int, num_classes: int) -> np.ndarray:
    """Resize class indices [H, W] to [size, size] with the image's geometry: each class's coverage is resampled
    as the binary masks are (area when shrinking, bilinear when enlarging) and a pixel takes the class that
    covers most of it (the lower index on a tie)."""
    if labels.shape == (size, size):
        return np.ascontiguousarray(labels)
    h, w = labels.shape
    interpolation = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_LINEAR
    best = np.full((size, size), -1.0, dtype=np.float32)
    out = np.zeros((size, size), dtype=np.uint8)
    for k in range(num_classes):
        cover = cv2.resize((labels == k).astype(np.float32), (size, size), interpolation=interpolation)
        better = cover > best + 1e-6
        best = np.where(better, cover, best)
        out[better] = k
    return out


def palette(n: int) -> np.ndarray:
    """uint8 [n, 3] distinct RGB colours: black for class 0, then well-separated hues."""
    base = np.array([(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48),
                     (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
                     (0, 128, 128), (170, 110, 40), (128, 0, 0), (128, 128, 0), (0, 0, 128)], dtype=np.uint8)
    if n <= len(base):
        return base[:n].copy()
    hues = np.linspace(0, 179, n - len(base), endpoint=False).astype(np.uint8)
    extra = cv2.cvtColor(np.stack([hues, np.full_like(hues, 200), np.full_like(hues, 230)], axis=1)[None], cv2.COLOR_HSV2RGB)[0]
    return np.concatenate([base, extra]).astype(np.uint8)


def _kind_of(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        return "index" if 0 <= int(value) <= 65535 else None
    if isinstance(value, list | tuple) and len(value) == 3 and all(
            isinstance(c, int | np.integer) and not isinstance(c, bool) and 0 <= int(c) <= 255 for c in value):
        return "colour"
    return None


def _grey_or_error(raw: np.ndarray, path: Path) -> np.ndarray:
    if np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 1], raw[..., 2]):
        return np.ascontiguousarray(raw[..., 0])
    raise DatasetError(f"mask {path}: is a colour image; expected grey index masks for the class map of grey levels "
                       "(or give the classes as [R, G, B] colours)")


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _list(values: np.ndarray) -> str:
    values = np.unique(np.asarray(values).astype(np.int64))
    shown = ", ".join(str(int(v)) for v in values[:_SHOWN])
    more = f" and {values.size - _SHOWN} more" if values.size > _SHOWN else ""
    return f"value{'s' if values.size > 1 else ''} {shown}{more}"


def resolve_class_map(root: Path | str, setting: Any) -> ClassMap | None:
    """The class map a dataset is read with: ``data.classes`` as a mapping, else (``auto``) the dataset's
    ``labels.json``, else None (binary masks). ``binary`` ignores a ``labels.json``.

    A map of two classes (background and one structure) is returned as is: the masks are read by it, and the
    model is binary.

    Raises:
        ValueError: a bad mapping in the config (exit 2 at the CLI).
        DatasetError: a bad ``labels.json`` (exit 3 at the CLI).
    """
    if setting in (None, "auto"):
        return labels_file_map(Path(root))
    if setting == "binary":
        return None
    if isinstance(setting, ClassMap):
        return setting
    return class_map_from(setting, source="data.classes")
