"""Turn 3D NIfTI image/label volumes into a 2D slice dataset with a patient-level split.

Unlike the reference converter: an HU window (not per-volume min-max), label selection on the integer labels (no
uint8 wrap), canonical (RAS+) orientation for every volume, sorted pairing by patient id, an optional seeded share
of label-free slices, and a split by patient recorded in ``split.csv``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage

from data.dataset import SPLITS, list_names, resize_image, resize_mask, split_counts
from data.errors import DatasetError
from data.labels import LABELS_FILE, resize_labels

__all__ = ["MANIFEST_NAME", "Manifest", "ManifestRow", "find_volume_pairs", "prepare_volumes"]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "split.csv"
SETTINGS_NAME = "prepare.json"
_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_ROLE_SUFFIXES = {"image": ("_image",), "label": ("_label",)}


@dataclass(frozen=True)
class ManifestRow:
    """One patient in ``split.csv``: its split, slices written and how many of them are labelled."""

    patient: str
    split: str
    n_slices: int
    n_labelled: int


@dataclass(frozen=True)
class Manifest:
    """What `prepare_volumes` wrote: the dataset folder, the manifest path, one row per patient, the settings."""

    out: Path
    path: Path
    rows: tuple[ManifestRow, ...]
    settings: dict[str, Any]

    def __str__(self) -> str:
        per_split = ", ".join(
            f"{name} {len(self.patients(name))} patients/{sum(r.n_slices for r in self.rows if r.split == name)} slices"
            for name in SPLITS
        )
        return f"{self.out}: {per_split}; manifest {self.path}"

    def patients(self, split: str) -> tuple[str, ...]:
        """The patients assigned to one split."""
        return tuple(row.patient for row in self.rows if row.split == split)


def find_volume_pairs(volumes_dir: Path | str) -> list[tuple[str, Path, Path]]:
    """Pair image and label volumes by patient id, sorted by id.

    Layouts: ``<dir>/images/<id>.nii.gz`` + ``<dir>/labels/<id>.nii.gz``, or ``<dir>/<id>_image.nii.gz`` +
    ``<dir>/<id>_label.nii.gz`` (``.nii`` also accepted; ``_image``/``_label`` suffixes are stripped in both).

    Raises:
        DatasetError: no volumes, an image without a label or a label without an image, or a duplicate id.
    """
    root = Path(volumes_dir).expanduser().absolute()
    if not root.is_dir():
        raise DatasetError(
            f"volumes {root}: folder not found; expected images/ and labels/ or *_image.nii.gz files"
        )
    if (root / "images").is_dir() and (root / "labels").is_dir():
        images = _by_patient(sorted((root / "images").iterdir()), role="image")
        labels = _by_patient(sorted((root / "labels").iterdir()), role="label")
        image_where, label_where = root / "images", root / "labels"
    else:
        files = sorted(root.iterdir())
        images = _by_patient([p for p in files if _strip_nifti(p.name).endswith("_image")], role="image")
        labels = _by_patient([p for p in files if _strip_nifti(p.name).endswith("_label")], role="label")
        image_where = label_where = root
    if not images and not labels:
        raise DatasetError(
            f"volumes {root}: no NIfTI volumes found; expected images/<id>.nii.gz + labels/<id>.nii.gz "
            "or <id>_image.nii.gz + <id>_label.nii.gz"
        )
    no_label = sorted(set(images) - set(labels))
    no_image = sorted(set(labels) - set(images))
    if no_label:
        raise DatasetError(
            f"volumes {label_where}: {len(no_label)} images have no label "
            f"({list_names([images[p].name for p in no_label])}); expected a label volume for every patient"
        )
    if no_image:
        raise DatasetError(
            f"volumes {image_where}: {len(no_image)} labels have no image "
            f"({list_names([labels[p].name for p in no_image])}); expected an image volume for every patient"
        )
    return [(patient, images[patient], labels[patient]) for patient in sorted(images)]


def prepare_volumes(
    volumes_dir: Path | str,
    out: Path | str,
    *,
    size: int = 512,
    hu_window: tuple[float, float] = (-200.0, 800.0),
    labels: Sequence[int] | None = None,
    empty_fraction: float = 0.1,
    split: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    axis: int = 2,
    classes: Mapping[str, Sequence[int]] | str | None = None,
) -> Manifest:
    """Slice NIfTI volumes into ``out/{train,valid,test}/{images,masks}/<patient>_<slice:04d>.png``.

    Args:
        volumes_dir: folder with image/label volumes (see `find_volume_pairs`).
        out: dataset folder to create; must be missing or empty.
        size: side of the square PNGs.
        hu_window: (low, high) intensities mapped to 0..255, values outside clipped.
        labels: label values forming the (binary) mask; None = every non-zero label.
        classes: several classes instead of one mask: ``{name: label values}`` (values of one name merged into one
            class, e.g. ``{"heart": [1, 2, 3], "aorta": [5]}``), or ``"all"`` (every non-zero label value its own
            class ``label_<v>``). Masks are then index masks (0 background, class i = i, in the given order) and
            ``out/labels.json`` holds the class map, which ``run`` and ``data check`` pick up.
        empty_fraction: share (0..1) of each volume's label-free slices that is kept, chosen with the seed.
        split: train/valid/test fractions of the patients (a patient is never in two splits).
        seed: seeds the patient split and the choice of label-free slices.
        axis: slicing axis of the canonical (RAS+) volume; 2 = axial.

    Returns:
        The Manifest; ``out/split.csv`` holds patient, split, n_slices, n_labelled, n_volume_slices, image, label.

    Raises:
        DatasetError: ``out`` is not empty, volumes are unpaired, unreadable or differ in shape, or a split ends up
            with no slices.
        ValueError: invalid arguments.
    """
    settings = _validated_settings(size, hu_window, labels, empty_fraction, split, seed, axis)
    if classes is not None and labels is not None:
        raise ValueError("labels and classes: expected one of them (labels: one binary mask; classes: several)")
    volumes_root = Path(volumes_dir).expanduser().absolute()
    out = Path(out).expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"prepare {out}: folder is not empty; expected a missing or empty output folder")
    pairs = find_volume_pairs(volumes_root)
    for _patient, image_path, label_path in pairs:
        _check_shapes(image_path, label_path)
    if classes is not None:
        settings["classes"] = _validated_classes(classes, pairs)
    if len(pairs) < len(SPLITS):
        raise DatasetError(
            f"volumes {volumes_root}: {len(pairs)} patients cannot fill the {len(SPLITS)} splits without sharing one; "
            f"expected at least {len(SPLITS)} patients"
        )
    assignment = _assign_splits([patient for patient, _, _ in pairs], split, seed)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for name in SPLITS:
            for kind in ("images", "masks"):
                (tmp / name / kind).mkdir(parents=True)
        rows: list[ManifestRow] = []
        extra: list[dict[str, Any]] = []
        for patient, image_path, label_path in pairs:
            row, n_volume = _slice_patient(
                patient, image_path, label_path, tmp / assignment[patient], settings=settings
            )
            rows.append(ManifestRow(patient, assignment[patient], *row))
            extra.append(
                {
                    "n_volume_slices": n_volume,
                    "image": str(image_path.relative_to(volumes_root)),
                    "label": str(label_path.relative_to(volumes_root)),
                }
            )
        for name in SPLITS:
            if not any(row.n_slices for row in rows if row.split == name):
                raise DatasetError(
                    f"prepare {out}: split {name!r} got no slices (patients {list_names([r.patient for r in rows if r.split == name])} "
                    "have no selected labels); expected labelled slices in every split (check labels=, empty_fraction=)"
                )
        _write_manifest(tmp / MANIFEST_NAME, rows, extra)
        _write_settings(tmp, settings, volumes_root)
        if out.is_dir():
            out.rmdir()  # empty, checked above
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = sum(row.n_slices for row in rows)
    logger.info("prepared %d slices from %d patients into %s", total, len(rows), out)
    return Manifest(out=out, path=out / MANIFEST_NAME, rows=tuple(rows), settings=settings)


# ---------------------------------------------------------------------------------------------------------------


def _validated_settings(
    size: int,
    hu_window: tuple[float, float],
    labels: Sequence[int] | None,
    empty_fraction: float,
    split: Sequence[float],
    seed: int,
    axis: int,
) -> dict[str, Any]:
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int. Received: size={size!r}")
    low, high = (float(v) for v in hu_window)
    if not low < high:
        raise ValueError(
            f"hu_window must be (low, high) with low < high. Received: hu_window={tuple(hu_window)}"
        )
    if labels is not None:
        labels = [int(v) for v in labels]
        if not labels or any(v == 0 for v in labels):
            raise ValueError(
                f"labels must be non-zero label values, or None for all. Received: labels={labels}"
            )
    if not 0.0 <= empty_fraction <= 1.0:
        raise ValueError(f"empty_fraction must be in [0, 1]. Received: empty_fraction={empty_fraction}")
    if len(split) != len(SPLITS):
        raise ValueError(f"split must give {len(SPLITS)} fractions {SPLITS}. Received: split={tuple(split)}")
    split_counts(len(SPLITS), list(split))  # validates the fractions
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2. Received: axis={axis!r}")
    return {
        "size": size,
        "hu_window": [low, high],
        "labels": sorted(set(labels)) if labels is not None else None,
        "empty_fraction": float(empty_fraction),
        "split": [float(f) for f in split],
        "seed": int(seed),
        "axis": axis,
        "orientation": "RAS+ (nibabel.as_closest_canonical)",
    }


def _strip_nifti(name: str) -> str:
    for suffix in _NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _by_patient(paths: Sequence[Path], *, role: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        if path.name.startswith(".") or not path.is_file() or not path.name.lower().endswith(_NIFTI_SUFFIXES):
            continue
        patient = _strip_nifti(path.name)
        for suffix in _ROLE_SUFFIXES[role]:
            if patient.endswith(suffix):
                patient = patient[: -len(suffix)]
        if patient in found:
            raise DatasetError(
                f"volumes {path.parent}: patient {patient!r} has two {role} volumes ({found[patient].name}, {path.name}); "
                "expected one per patient"
            )
        found[patient] = path
    return found


def _load(path: Path, *, what: str) -> SpatialImage:
    try:
        image = nib.load(path)
    except Exception as exc:  # nibabel raises several unrelated types for damaged files
        raise DatasetError(
            f"{what} {path}: cannot be read as NIfTI ({exc}); expected a .nii or .nii.gz volume"
        ) from exc
    if not isinstance(image, SpatialImage):
        raise DatasetError(
            f"{what} {path}: is not a volume ({type(image).__name__}); expected a NIfTI volume"
        )
    shape = tuple(int(v) for v in image.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise DatasetError(f"{what} {path}: has shape {tuple(image.shape)}; expected a 3D volume")
    return image


def _check_shapes(image_path: Path, label_path: Path) -> None:
    image = _load(image_path, what="image")
    label = _load(label_path, what="label")
    if image.shape[:3] != label.shape[:3]:
        raise DatasetError(
            f"volumes: image {image_path} has shape {tuple(image.shape)} but label {label_path} has shape "
            f"{tuple(label.shape)}; expected the same shape"
        )
    if not np.allclose(image.affine, label.affine, atol=1e-3):
        logger.warning(
            "volumes: image %s and label %s have different affines; slicing them voxel by voxel",
            image_path,
            label_path,
        )


def _canonical(image: SpatialImage, path: Path, *, what: str) -> tuple[np.ndarray, float, float]:
    """The unscaled voxel array in canonical RAS+ order, with the scaling (slope, intercept) to apply per slice.

    Same reordering as ``nib.as_closest_canonical`` (``io_orientation`` of the affine), but without materialising a
    scaled float64 copy of the whole volume.
    """
    try:
        proxy: Any = image.dataobj
        if nib.is_proxy(proxy):
            raw, slope, inter = proxy.get_unscaled(), float(proxy.slope), float(proxy.inter)
        else:
            raw, slope, inter = np.asanyarray(proxy), 1.0, 0.0
        raw = raw.reshape(raw.shape[:3])
        return (
            nib.orientations.apply_orientation(raw, nib.orientations.io_orientation(image.affine)),
            slope,
            inter,
        )
    except Exception as exc:  # truncated gzip, bad header values
        raise DatasetError(
            f"{what} {path}: cannot be read as NIfTI ({exc}); expected a .nii or .nii.gz volume"
        ) from exc


def _slice_patient(
    patient: str, image_path: Path, label_path: Path, split_dir: Path, *, settings: dict[str, Any]
) -> tuple[tuple[int, int], int]:
    """Write one patient's selected slices; returns ((n_slices, n_labelled), n_volume_slices)."""
    hu, slope, inter = _canonical(_load(image_path, what="image"), image_path, what="image")
    lab, lab_slope, lab_inter = _canonical(_load(label_path, what="label"), label_path, what="label")
    if lab.dtype.kind == "f" or (lab_slope, lab_inter) != (1.0, 0.0):
        lab = np.rint(lab * lab_slope + lab_inter)
    axis, size = settings["axis"], settings["size"]
    low, high = settings["hu_window"]
    # Labels compared as numbers in their own dtype: no cast to uint8 (the reference's label*255 wrapped them).
    index = _class_index(lab, settings.get("classes"))
    selected = (index > 0) if index is not None else (
        lab != 0 if settings["labels"] is None else np.isin(lab, settings["labels"]))
    other_axes = tuple(a for a in range(3) if a != axis)
    labelled = np.flatnonzero(selected.any(axis=other_axes))
    empty = np.setdiff1d(np.arange(hu.shape[axis]), labelled)
    rng = np.random.default_rng([settings["seed"], zlib.crc32(patient.encode())])
    n_keep = int(round(settings["empty_fraction"] * empty.size))
    kept_empty = rng.choice(empty, size=n_keep, replace=False) if n_keep else np.empty(0, dtype=np.int64)
    keep = np.sort(np.concatenate([labelled, kept_empty]).astype(np.int64))
    for k in keep:
        plane = np.take(hu, int(k), axis=axis).astype(np.float32) * np.float32(slope) + np.float32(inter)
        gray = np.rint(np.clip((plane - low) / (high - low), 0.0, 1.0) * 255.0).astype(np.uint8)
        mask = np.take(selected if index is None else index, int(k), axis=axis).astype(np.uint8)
        gray, mask = _display(gray), _display(mask)
        image = resize_image(gray[:, :, None], size)[:, :, 0]
        if index is None:
            mask = resize_mask(mask, size) * np.uint8(255)
        else:
            mask = resize_labels(mask, size, len(settings["classes"]) + 1)
        name = f"{patient}_{int(k):04d}.png"
        for kind, array in (("images", image), ("masks", mask)):
            ok, encoded = cv2.imencode(".png", array)
            if not ok:
                raise DatasetError(f"prepare {split_dir / kind / name}: PNG encoding failed")
            (split_dir / kind / name).write_bytes(encoded.tobytes())
    logger.info(
        "patient %s: %d labelled + %d of %d label-free slices -> %s",
        patient,
        labelled.size,
        n_keep,
        empty.size,
        split_dir.name,
    )
    return (int(keep.size), int(labelled.size)), int(hu.shape[axis])


def _write_settings(folder: Path, settings: dict[str, Any], volumes_root: Path) -> None:
    """The settings file, and with classes the labels.json (index masks: class i is grey level i)."""
    (folder / SETTINGS_NAME).write_text(json.dumps({**settings, "volumes_dir": str(volumes_root)}, indent=1))
    if settings.get("classes"):
        names = ["background", *settings["classes"]]
        (folder / LABELS_FILE).write_text(json.dumps({"labels": {n: i for i, n in enumerate(names)}}, indent=1))


def _assign_splits(patients: Sequence[str], split: Sequence[float], seed: int) -> dict[str, str]:
    """Each patient's split: a seeded permutation cut by the split fractions."""
    counts = split_counts(len(patients), list(split))
    order = np.random.default_rng(seed).permutation(len(patients))
    assignment: dict[str, str] = {}
    start = 0
    for name, count in zip(SPLITS, counts, strict=True):
        for i in sorted(order[start : start + count]):
            assignment[patients[i]] = name
        start += count
    return assignment


def _validated_classes(classes: Mapping[str, Sequence[int]] | str, pairs: Sequence[tuple[str, Path, Path]]
                       ) -> dict[str, list[int]]:
    """``{name: sorted label values}``; ``"all"``: every non-zero label value of the volumes, one class each."""
    if classes == "all":
        found: set[int] = set()
        for _patient, _image, label_path in pairs:
            lab, slope, inter = _canonical(_load(label_path, what="label"), label_path, what="label")
            found.update(int(v) for v in np.unique(np.rint(lab * slope + inter)) if v != 0)
        if not found:
            raise DatasetError("volumes: no non-zero label value in any label volume; expected labelled volumes")
        return {f"label_{v}": [v] for v in sorted(found)}
    if isinstance(classes, str) or not classes:
        raise ValueError(f"classes must be 'all' or a mapping of class name to label values. Received: {classes!r}")
    out: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for name, values in classes.items():
        values = sorted({int(v) for v in values})
        if not values or 0 in values or name == "background":
            raise ValueError(f"classes: {name!r} must name non-zero label values (0 is the background). "
                             f"Received: {name}={values}")
        for v in values:
            if v in owner:
                raise ValueError(f"classes: label {v} is in both {owner[v]!r} and {name!r}; expected each in one class")
            owner[v] = name
        out[str(name)] = values
    return out


def _class_index(lab: np.ndarray, classes: dict[str, list[int]] | None) -> np.ndarray | None:
    """The volume's labels as class indices (0 background, class i = i), or None for a binary mask."""
    if not classes:
        return None
    index = np.zeros(lab.shape, np.uint8)
    for i, values in enumerate(classes.values(), start=1):
        index[np.isin(lab, values)] = i
    return index


def _display(plane: np.ndarray) -> np.ndarray:
    """Canonical plane [first, second] → image rows = second axis reversed, columns = first axis reversed.

    Axial (axis 2): anterior at the top, patient right on the image left (radiological convention); coronal and
    sagittal: superior at the top.
    """
    return np.ascontiguousarray(plane[::-1, ::-1].T)


def _write_manifest(path: Path, rows: Sequence[ManifestRow], extra: Sequence[dict[str, Any]]) -> None:
    fields = ["patient", "split", "n_slices", "n_labelled", "n_volume_slices", "image", "label"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row, more in zip(rows, extra, strict=True):
            writer.writerow(
                {
                    "patient": row.patient,
                    "split": row.split,
                    "n_slices": row.n_slices,
                    "n_labelled": row.n_labelled,
                    **more,
                }
            )
