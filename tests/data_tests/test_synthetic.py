"""Synthetic CT-like phantoms and the synthetic dataset writer (data/synthetic.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from data.dataset import SPLITS, LoadSettings, discover, read_pair
from data.errors import DatasetError
from data.fingerprint import check_dataset
from data.synthetic import make_phantom, synthetic_arrays, write_synthetic_dataset


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("channels", [1, 3])
def test_phantom_shapes_and_mask_sanity(channels: int) -> None:
    fractions, components = [], []
    for seed in range(24):
        image, mask = make_phantom(size=64, rng=np.random.default_rng(seed), channels=channels)
        assert image.shape == (64, 64, channels) and image.dtype == np.uint8
        assert mask.shape == (64, 64) and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 1}
        if channels == 3:
            assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(
                image[..., 0], image[..., 2]
            )
        gray = image[..., 0].astype(float)
        # the target is bright: brighter than the average body pixel by a clear margin
        body = gray > 40
        assert gray[mask == 1].mean() > gray[body & (mask == 0)].mean() + 60
        fractions.append(mask.mean())
        components.append(cv2.connectedComponents(mask)[0] - 1)
    assert 0.005 <= min(fractions) and max(fractions) <= 0.06
    assert min(fractions) < 0.015  # sometimes small, like the aorta
    assert set(components) == {1, 2}  # ascending aorta alone, or with the descending aorta


def test_phantoms_vary_and_are_deterministic() -> None:
    a_images, a_masks = synthetic_arrays(n=6, size=32, seed=3)
    b_images, b_masks = synthetic_arrays(n=6, size=32, seed=3)
    assert np.array_equal(a_images, b_images) and np.array_equal(a_masks, b_masks)
    c_images, _ = synthetic_arrays(n=6, size=32, seed=4)
    assert not np.array_equal(a_images, c_images)
    assert len({m.tobytes() for m in a_masks}) == 6  # every phantom differs
    # phantom i depends on (seed, i) only
    more_images, _ = synthetic_arrays(n=8, size=32, seed=3)
    assert np.array_equal(more_images[:6], a_images)


@pytest.mark.parametrize("channels", [1, 3])
def test_written_dataset_is_deterministic_valid_and_equals_arrays(tmp_path: Path, channels: int) -> None:
    a = write_synthetic_dataset(tmp_path / "a", n=10, size=32, seed=11, channels=channels)
    b = write_synthetic_dataset(tmp_path / "b", n=10, size=32, seed=11, channels=channels)
    assert a == tmp_path / "a"
    assert _tree(a) == _tree(b)  # same bytes
    index = discover(a)
    assert [len(index.splits[s]) for s in SPLITS] == [7, 2, 1]
    report = check_dataset(a, LoadSettings(image_size=32, channels=channels))
    assert report.errors == [] and report.warnings == []
    images, masks = synthetic_arrays(n=10, size=32, seed=11, channels=channels)
    for i, (_, pair) in enumerate(index.pairs()):
        assert pair.image.suffix == ".png"
        image, mask = read_pair(pair, LoadSettings(image_size=32, channels=channels))
        assert np.array_equal(image, images[i]) and np.array_equal(mask, masks[i])
    assert _tree(write_synthetic_dataset(tmp_path / "c", n=10, size=32, seed=12, channels=channels)) != _tree(
        a
    )


def test_reuse_same_parameters_refuse_otherwise(tmp_path: Path) -> None:
    out = write_synthetic_dataset(tmp_path / "ds", n=4, size=16, seed=0)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert write_synthetic_dataset(out, n=4, size=16, seed=0) == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps
    with pytest.raises(DatasetError, match=r"other parameters \(.*seed=0 \(asked 1\)"):
        write_synthetic_dataset(out, n=4, size=16, seed=1)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match=rf"{foreign}: folder is not empty"):
        write_synthetic_dataset(foreign, n=4, size=16, seed=0)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(discover(write_synthetic_dataset(empty, n=3, size=16, seed=0)).pairs()) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "empty", "foreign"]  # no temporaries left


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 2, "size": 32},
        {"n": 5, "size": 8},
        {"n": 5, "size": 32, "channels": 2},
        {"n": 5, "size": 32, "split": (0.5, 0.5)},
    ],
)
def test_invalid_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError, match="Received"):
        write_synthetic_dataset(tmp_path / "ds", seed=0, **kwargs)
    assert not (tmp_path / "ds").exists()
