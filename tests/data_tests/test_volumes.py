"""NIfTI volumes → 2D slice dataset (data/volumes.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest

from data.dataset import SPLITS, LoadSettings, discover
from data.errors import DatasetError
from data.fingerprint import check_dataset
from data.labels import resolve_class_map
from data.volumes import find_volume_pairs, prepare_volumes

N = 16  # in-plane size, so size=N means no resizing
DEPTH = 6
LAS = np.diag([-1.0, 1.0, 1.0, 1.0])


def _hu() -> np.ndarray:
    """HU rising along x (-400 .. 1100), the same on every slice."""
    x = np.arange(N, dtype=np.int16)[:, None, None]
    return np.broadcast_to(-400 + 100 * x, (N, N, DEPTH)).astype(np.int16)


def _labels() -> np.ndarray:
    """z=0,5 empty; z=1 label 1; z=2 label 2; z=3 label 256 (wraps to 0 as uint8); z=4 labels 1 and 2."""
    lab = np.zeros((N, N, DEPTH), np.int16)
    lab[2:6, 3:7, 1] = 1
    lab[8:12, 3:7, 2] = 2
    lab[4:9, 9:13, 3] = 256
    lab[2:6, 3:7, 4] = 1
    lab[8:12, 9:12, 4] = 2
    return lab


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def _volumes(root: Path, patients: list[str], *, layout: str = "folders") -> Path:
    for patient in patients:
        if layout == "folders":
            _save(root / "images" / f"{patient}.nii.gz", _hu())
            _save(root / "labels" / f"{patient}.nii.gz", _labels())
        else:
            _save(root / f"{patient}_image.nii.gz", _hu())
            _save(root / f"{patient}_label.nii.gz", _labels())
    return root


def _png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _files_by_patient(out: Path) -> dict[str, set[str]]:
    where: dict[str, set[str]] = {}
    for split in SPLITS:
        for path in (out / split / "images").glob("*.png"):
            where.setdefault(path.stem.rsplit("_", 1)[0], set()).add(split)
    return where


def test_hu_window_orientation_and_names(tmp_path: Path) -> None:
    root = _volumes(tmp_path / "vol", ["p1", "p2", "p3"])
    manifest = prepare_volumes(root, tmp_path / "out", size=N, empty_fraction=0.0, hu_window=(-200.0, 800.0))
    out = manifest.out
    split = manifest.rows[0].split
    names = sorted(p.name for p in (out / split / "images").iterdir())
    assert names == ["p1_0001.png", "p1_0002.png", "p1_0003.png", "p1_0004.png"]
    image = _png(out / split / "images" / "p1_0001.png")
    assert image.dtype == np.uint8 and image.shape == (N, N)
    # display: columns run from patient right (x = N-1) to left (x = 0); rows from anterior (y = N-1) down
    for col in range(N):
        hu = -400 + 100 * (N - 1 - col)
        expected = np.rint(np.clip((hu + 200) / 1000, 0, 1) * 255)
        assert (image[:, col] == expected).all()
    assert image[:, -1].max() == 0 and image[:, 0].min() == 255
    mask = _png(out / split / "masks" / "p1_0001.png")
    assert set(np.unique(mask)) == {0, 255}
    expected_mask = (_labels()[:, :, 1] != 0)[::-1, ::-1].T
    assert np.array_equal(mask == 255, expected_mask)


def test_label_union_versus_chosen_and_no_uint8_wrap(tmp_path: Path) -> None:
    root = _volumes(tmp_path / "vol", ["p1", "p2", "p3"])
    union = prepare_volumes(root, tmp_path / "union", size=N, empty_fraction=0.0)
    assert {row.n_labelled for row in union.rows} == {4}
    split = union.rows[0].split
    wrapped = _png(tmp_path / "union" / split / "masks" / "p1_0003.png")  # only label 256 on this slice
    assert (wrapped == 255).sum() == 5 * 4

    only_two = prepare_volumes(root, tmp_path / "two", size=N, labels=[2], empty_fraction=0.0)
    assert {(row.n_slices, row.n_labelled) for row in only_two.rows} == {(2, 2)}
    split = only_two.rows[0].split
    assert sorted(p.name for p in (tmp_path / "two" / split / "masks").glob("p1_*")) == [
        "p1_0002.png",
        "p1_0004.png",
    ]
    mixed = _png(tmp_path / "two" / split / "masks" / "p1_0004.png") == 255
    assert np.array_equal(mixed, (_labels()[:, :, 4] == 2)[::-1, ::-1].T)

    big = prepare_volumes(root, tmp_path / "big", size=N, labels=[256], empty_fraction=0.0)
    assert {(row.n_slices, row.n_labelled) for row in big.rows} == {(1, 1)}


def test_empty_fraction_is_seeded(tmp_path: Path) -> None:
    root = _volumes(tmp_path / "vol", ["p1", "p2", "p3"])
    every = prepare_volumes(root, tmp_path / "all", size=N, empty_fraction=1.0)
    assert {(row.n_slices, row.n_labelled) for row in every.rows} == {(6, 4)}
    half_a = prepare_volumes(root, tmp_path / "half_a", size=N, empty_fraction=0.5, seed=5)
    half_b = prepare_volumes(root, tmp_path / "half_b", size=N, empty_fraction=0.5, seed=5)
    assert {row.n_slices for row in half_a.rows} == {5}
    listing = [sorted(p.relative_to(m.out) for p in m.out.rglob("*.png")) for m in (half_a, half_b)]
    assert listing[0] == listing[1]
    empty_masks = [p for p in (tmp_path / "all").rglob("masks/*.png") if _png(p).max() == 0]
    assert sorted({p.stem.rsplit("_", 1)[1] for p in empty_masks}) == ["0000", "0005"]


def test_patient_level_split_and_manifest(tmp_path: Path) -> None:
    patients = [f"p{i:02d}" for i in range(1, 8)]
    root = _volumes(tmp_path / "vol", patients)
    manifest = prepare_volumes(root, tmp_path / "out", size=8, empty_fraction=0.0, seed=3)
    assert [row.patient for row in manifest.rows] == patients
    assert [len(manifest.patients(s)) for s in SPLITS] == [5, 1, 1]
    where = _files_by_patient(manifest.out)
    assert sorted(where) == patients
    assert all(len(splits) == 1 for splits in where.values())  # no patient in two splits
    for row in manifest.rows:
        assert where[row.patient] == {row.split}
        written = list((manifest.out / row.split / "images").glob(f"{row.patient}_*.png"))
        assert len(written) == row.n_slices == 4 and row.n_labelled == 4
        assert _png(written[0]).shape == (8, 8)
    with manifest.path.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert manifest.path == manifest.out / "split.csv"
    assert list(table[0])[:4] == ["patient", "split", "n_slices", "n_labelled"]
    assert [(r["patient"], r["split"], int(r["n_slices"]), int(r["n_labelled"])) for r in table] == [
        (row.patient, row.split, row.n_slices, row.n_labelled) for row in manifest.rows
    ]
    assert table[0]["n_volume_slices"] == str(DEPTH) and table[0]["image"] == "images/p01.nii.gz"
    assert "train 5 patients/20 slices" in str(manifest)
    # the same seed gives the same split, another seed (here) a different one
    again = prepare_volumes(root, tmp_path / "again", size=8, empty_fraction=0.0, seed=3)
    assert again.rows == manifest.rows
    other = prepare_volumes(root, tmp_path / "other", size=8, empty_fraction=0.0, seed=4)
    assert [r.split for r in other.rows] != [r.split for r in manifest.rows]
    report = check_dataset(manifest.out, LoadSettings(image_size=8))
    assert report.errors == [] and report.fingerprint is not None


def test_orientation_is_canonical(tmp_path: Path) -> None:
    root = tmp_path / "vol"
    for patient in ("a", "c"):
        _save(root / f"{patient}_image.nii.gz", _hu())
        _save(root / f"{patient}_label.nii.gz", _labels())
    # patient b is stored left-to-right (LAS): same anatomy, x axis reversed in the file
    flipped = _save(root / "b_image.nii.gz", _hu()[::-1].copy(), LAS)
    _save(root / "b_label.nii.gz", _labels()[::-1].copy(), LAS)
    assert np.array_equal(nib.as_closest_canonical(nib.load(flipped)).get_fdata(), _hu())
    manifest = prepare_volumes(root, tmp_path / "out", size=N, empty_fraction=0.0, split=(0.34, 0.33, 0.33))
    split_of = {row.patient: row.split for row in manifest.rows}
    for kind in ("images", "masks"):
        for z in range(1, 5):
            a = _png(manifest.out / split_of["a"] / kind / f"a_{z:04d}.png")
            b = _png(manifest.out / split_of["b"] / kind / f"b_{z:04d}.png")
            assert np.array_equal(a, b)


def test_scaled_volumes_and_other_axis(tmp_path: Path) -> None:
    root = tmp_path / "vol"
    for patient in ("a", "b", "c"):
        raw = (_hu().astype(np.int32) + 1024).astype(np.int16)
        image = nib.Nifti1Image(raw, np.eye(4))
        image.header.set_slope_inter(1.0, -1024.0)
        (root / "images").mkdir(parents=True, exist_ok=True)
        nib.save(image, root / "images" / f"{patient}.nii")
        _save(root / "labels" / f"{patient}.nii", _labels().astype(np.float32))
    manifest = prepare_volumes(root, tmp_path / "out", size=N, empty_fraction=0.0, hu_window=(-400.0, 1100.0))
    split = manifest.rows[0].split
    image = _png(manifest.out / split / "images" / "a_0001.png")
    assert image[0, -1] == 0 and image[0, 0] == 255
    coronal = prepare_volumes(root, tmp_path / "coronal", size=N, empty_fraction=0.0, axis=1)
    # labels occupy y = 3..6 and 9..12 → eight coronal slices per patient
    assert {(row.n_slices, row.n_labelled) for row in coronal.rows} == {(8, 8)}


def test_pairing_layouts(tmp_path: Path) -> None:
    folders = _volumes(tmp_path / "f", ["b", "a"])
    assert [p for p, _, _ in find_volume_pairs(folders)] == ["a", "b"]
    flat = _volumes(tmp_path / "flat", ["x2", "x1"], layout="flat")
    pairs = find_volume_pairs(flat)
    assert [(p, i.name, m.name) for p, i, m in pairs] == [
        ("x1", "x1_image.nii.gz", "x1_label.nii.gz"),
        ("x2", "x2_image.nii.gz", "x2_label.nii.gz"),
    ]


def _bad_unmatched_image(root: Path) -> str:
    _volumes(root, ["p1", "p2", "p3"])
    _save(root / "images" / "p4.nii.gz", _hu())
    return "1 images have no label (p4.nii.gz)"


def _bad_unmatched_label(root: Path) -> str:
    _volumes(root, ["p1", "p2", "p3"], layout="flat")
    _save(root / "p9_label.nii.gz", _labels())
    return "1 labels have no image (p9_label.nii.gz)"


def _bad_shape(root: Path) -> str:
    _volumes(root, ["p1", "p2", "p3"])
    _save(root / "labels" / "p2.nii.gz", _labels()[:, :, :5].copy())
    return f"image {root / 'images' / 'p2.nii.gz'} has shape (16, 16, 6) but label {root / 'labels' / 'p2.nii.gz'} has shape (16, 16, 5)"


def _bad_corrupt(root: Path) -> str:
    _volumes(root, ["p1", "p2", "p3"])
    (root / "images" / "p3.nii.gz").write_bytes(b"not a nifti")
    return f"image {root / 'images' / 'p3.nii.gz'}: cannot be read as NIfTI"


def _bad_no_volumes(root: Path) -> str:
    root.mkdir()
    return "no NIfTI volumes found"


def _bad_too_few_patients(root: Path) -> str:
    _volumes(root, ["p1", "p2"])
    return "2 patients cannot fill the 3 splits"


@pytest.mark.parametrize(
    "make",
    [
        _bad_unmatched_image,
        _bad_unmatched_label,
        _bad_shape,
        _bad_corrupt,
        _bad_no_volumes,
        _bad_too_few_patients,
    ],
)
def test_bad_volumes_are_named_and_nothing_is_written(tmp_path: Path, make) -> None:
    expected = make(tmp_path / "vol")
    with pytest.raises(DatasetError) as info:
        prepare_volumes(tmp_path / "vol", tmp_path / "out", size=N)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["vol"]


def test_refuses_non_empty_out_and_bad_arguments(tmp_path: Path) -> None:
    root = _volumes(tmp_path / "vol", ["p1", "p2", "p3"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="folder is not empty"):
        prepare_volumes(root, out, size=N)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    for kwargs in ({"hu_window": (800.0, -200.0)}, {"empty_fraction": 1.5}, {"labels": [0]}, {"axis": 3}):
        with pytest.raises(ValueError, match="Received"):
            prepare_volumes(root, tmp_path / "new", size=N, **kwargs)
    assert not (tmp_path / "new").exists()
    empty_out = tmp_path / "empty_out"
    empty_out.mkdir()
    assert discover(prepare_volumes(root, empty_out, size=N).out).root == empty_out


def test_split_without_slices_is_an_error(tmp_path: Path) -> None:
    root = _volumes(tmp_path / "vol", ["p1", "p2", "p3"])
    with pytest.raises(DatasetError, match="got no slices"):
        prepare_volumes(root, tmp_path / "out", size=N, labels=[7], empty_fraction=0.0)
    assert not (tmp_path / "out").exists()


def test_named_classes_keep_label_values_as_index_masks_with_a_labels_json(tmp_path: Path) -> None:
    root = _volumes(tmp_path / "vol", ["p1", "p2", "p3"])
    manifest = prepare_volumes(root, tmp_path / "out", size=N, empty_fraction=0.0,
                               classes={"two": [2], "one_and_big": [1, 256]})
    out = manifest.out
    assert json.loads((out / "labels.json").read_text()) == {"labels": {"background": 0, "two": 1, "one_and_big": 2}}
    split = manifest.rows[0].split
    mixed = _png(out / split / "masks" / "p1_0004.png")  # labels 1 and 2 on this slice
    expected = np.zeros((N, N), np.uint8)
    lab = _labels()[:, :, 4]
    expected[lab == 2] = 1
    expected[lab == 1] = 2
    assert np.array_equal(mixed, expected[::-1, ::-1].T)
    # the dataset reads back as three classes with no flag
    classes = resolve_class_map(out, "auto")
    assert classes is not None and classes.names == ("background", "two", "one_and_big")
    report = check_dataset(out, LoadSettings(image_size=N, channels=1, classes=classes))
    assert not report.errors and report.fingerprint["total"]["class_images"]["two"] == 6


def test_all_labels_become_classes_and_bad_class_maps_are_refused(tmp_path: Path) -> None:
    root = _volumes(tmp_path / "vol", ["p1", "p2", "p3"])
    manifest = prepare_volumes(root, tmp_path / "all", size=N, empty_fraction=0.0, classes="all")
    labels = json.loads((manifest.out / "labels.json").read_text())["labels"]
    assert labels == {"background": 0, "label_1": 1, "label_2": 2, "label_256": 3}
    for classes, fragment in (({"a": [1], "b": [1, 2]}, "label 1 is in both 'a' and 'b'"),
                              ({"a": [0]}, "non-zero label values"), ({"background": [3]}, "non-zero")):
        with pytest.raises(ValueError, match=fragment):
            prepare_volumes(root, tmp_path / "bad", size=N, classes=classes)
    with pytest.raises(ValueError, match="labels and classes"):
        prepare_volumes(root, tmp_path / "bad", size=N, labels=[1], classes={"a": [1]})
    assert not (tmp_path / "bad").exists()
