"""Class maps (data/labels.py): index and RGB colour masks read as class indices, labels.json picked up, bad maps
and values outside the map refused with the file and the value named."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from tiny import MULTICLASS_COLOURS, multiclass_arrays, write_multiclass_dataset

from data import DatasetError, LoadSettings, check_dataset, discover, load_cached, read_pair
from data.labels import ClassMap, class_map_from, labels_file_map, resize_labels, resolve_class_map


def test_colour_masks_become_the_class_of_their_colour(tmp_path: Path) -> None:
    root = write_multiclass_dataset(tmp_path / "ds")
    classes = resolve_class_map(root, "auto")
    assert classes is not None and classes.names == tuple(MULTICLASS_COLOURS) and classes.kind == "colour"
    _, expected = multiclass_arrays(8, size=32, seed=0)
    pair = discover(root).splits["train"][0]
    _, labels = read_pair(pair, LoadSettings(image_size=32, channels=1, classes=classes))
    np.testing.assert_array_equal(labels, expected[0])
    assert set(np.unique(labels)) == {0, 1, 2, 3}


def test_index_masks_are_read_by_their_grey_levels(tmp_path: Path) -> None:
    root = write_multiclass_dataset(tmp_path / "ds", colour=False, labels_json=False)
    classes = class_map_from({"background": 0, "ring": 1, "disc": 2, "spot": 3}, source="data.classes")
    pair = discover(root).splits["train"][0]
    _, labels = read_pair(pair, LoadSettings(image_size=32, channels=1, classes=classes))
    np.testing.assert_array_equal(labels, multiclass_arrays(8, size=32, seed=0)[1][0])


def test_any_grey_levels_and_16_bit_index_masks_map_to_consecutive_classes(tmp_path: Path) -> None:
    mask = np.zeros((8, 8), np.uint16)
    mask[:4] = 5
    mask[6:] = 1000  # a 16-bit label value
    path = tmp_path / "m.png"
    cv2.imwrite(str(path), mask)
    classes = class_map_from({"bg": 0, "aorta": 5, "other": 1000}, source="test")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    labels = classes.read(raw, path)
    assert labels.dtype == np.uint8
    assert (labels[:4] == 1).all() and (labels[4:6] == 0).all() and (labels[6:] == 2).all()


def test_without_a_class_map_masks_stay_binary(tmp_path: Path) -> None:
    root = write_multiclass_dataset(tmp_path / "ds", labels_json=False)
    assert resolve_class_map(root, "auto") is None
    pair = discover(root).splits["train"][0]
    _, mask = read_pair(pair, LoadSettings(image_size=32, channels=1))
    assert set(np.unique(mask)) == {0, 1}  # the union of the structures, as before


def test_binary_ignores_a_labels_json(tmp_path: Path) -> None:
    root = write_multiclass_dataset(tmp_path / "ds")
    assert resolve_class_map(root, "binary") is None


def test_a_colour_outside_the_map_is_an_error_naming_file_colour_and_map(tmp_path: Path) -> None:
    root = write_multiclass_dataset(tmp_path / "ds")
    bad = root / "valid" / "masks" / "valid_001.png"
    mask = cv2.imread(str(bad))
    mask[0, 0] = (7, 8, 9)  # BGR: RGB (9, 8, 7)
    cv2.imwrite(str(bad), mask)
    classes = resolve_class_map(root, "auto")
    with pytest.raises(DatasetError) as err:
        load_cached(discover(root), LoadSettings(image_size=32, channels=1, classes=classes),
                    cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert str(bad) in message and "(9, 8, 7)" in message and "at 1 pixels" in message and "ring=(255, 0, 0)" in message
    assert not any((tmp_path / "cache").glob("[!.]*")), "no cache may be left half-written"


def test_an_index_outside_the_map_is_an_error(tmp_path: Path) -> None:
    root = write_multiclass_dataset(tmp_path / "ds", colour=False, labels_json=False)
    classes = class_map_from({"background": 0, "ring": 1, "disc": 2}, source="data.classes")  # 3 is not mapped
    report = check_dataset(root, LoadSettings(image_size=32, channels=1, classes=classes))
    assert report.errors and "value 3 not in the class map (data.classes)" in report.errors[0]
    assert "expected only values 0, 1, 2" in report.errors[0]


@pytest.mark.parametrize(
    ("mapping", "fragment"),
    [
        ({"bg": [0, 0, 0], "a": [255, 0, 0], "b": [255, 0, 0]}, "classes 'a' and 'b' have one colour [255, 0, 0]"),
        ({"bg": 0, "a": 1, "b": 1}, "classes 'a' and 'b' have one value 1"),
        ({"bg": 0, "a": [255, 0, 0]}, "mixes grey levels and colours"),
        ({"bg": 0}, "expected 2..255 classes"),
        ({"bg": 0, "a": -1}, "class 'a' has value -1"),
        ({"bg": [0, 0, 0], "a": [256, 0, 0]}, "class 'a' has value [256, 0, 0]"),
        ("three", "expected a mapping"),
    ],
)
def test_bad_class_maps_are_refused_naming_the_entry(mapping: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=None) as err:
        class_map_from(mapping, source="data.classes")  # type: ignore[arg-type]
    assert fragment in str(err.value) and "data.classes" in str(err.value)


def test_a_bad_labels_json_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text(json.dumps({"labels": {"bg": [0, 0, 0], "a": [0, 0, 0]}}))
    with pytest.raises(DatasetError, match="labels.json: classes 'bg' and 'a' have one colour"):
        labels_file_map(tmp_path)
    (tmp_path / "labels.json").write_text("{not json")
    with pytest.raises(DatasetError, match="labels.json: cannot be read as JSON"):
        labels_file_map(tmp_path)


def test_resized_labels_follow_the_image_geometry_and_keep_thin_classes() -> None:
    labels = np.zeros((64, 64), np.uint8)
    labels[8:40, 8:40] = 1
    labels[20:28, 20:28] = 2  # a small structure inside the first
    small = resize_labels(labels, 16, 3)
    assert small.dtype == np.uint8 and set(np.unique(small)) == {0, 1, 2}
    # Each class covers the same share of the image after resizing (area interpolation, majority per pixel).
    for k in (1, 2):
        assert (small == k).mean() == pytest.approx((labels == k).mean(), abs=0.01)
    assert (resize_labels(small, 64, 3) == labels).mean() > 0.97


def test_the_cache_and_check_count_the_images_that_hold_each_class(tmp_path: Path) -> None:
    root = write_multiclass_dataset(tmp_path / "ds")
    settings = LoadSettings(image_size=16, channels=1, classes=resolve_class_map(root, "auto"))
    report = check_dataset(root, settings)
    assert not report.errors and report.fingerprint is not None
    held = report.fingerprint["total"]["class_images"]
    assert held == {"background": 16, "ring": 16, "disc": 16, "spot": 8}  # the spot is in every other image
    cached = load_cached(discover(root), settings, cache_dir=tmp_path / "cache")
    assert cached.classes == settings.classes and cached.classes.foreground == ("ring", "disc", "spot")
    assert int(np.asarray(cached.split("train").masks).max()) == 3
    assert cached.plan.mask.num_classes == 4


def test_a_class_map_round_trips_through_its_dict() -> None:
    classes = class_map_from(MULTICLASS_COLOURS, source="x")
    assert ClassMap.from_dict(classes.to_dict()) == classes
    assert classes.mapping() == MULTICLASS_COLOURS
    assert classes.colours().tolist() == list(MULTICLASS_COLOURS.values())


def test_check_hints_at_a_class_map_for_index_masks_read_as_one_foreground(tmp_path: Path) -> None:
    root = write_multiclass_dataset(tmp_path / "ds", colour=False, labels_json=False)
    report = check_dataset(root, LoadSettings(image_size=32, channels=1))
    assert any("values 0, 1, 2, 3, read as one foreground" in w and "labels.json" in w for w in report.warnings)
    (root / "labels.json").write_text(json.dumps({"labels": {"background": 0, "ring": 1, "disc": 2, "spot": 3}}))
    classes = resolve_class_map(root, "auto")
    report = check_dataset(root, LoadSettings(image_size=32, channels=1, classes=classes))
    assert not any("read as one foreground" in w for w in report.warnings) and not report.errors
