"""Discovery, reading, fingerprint and `data check` of 2D datasets (data/dataset.py, data/fingerprint.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATA

from data.dataset import SPLITS, DatasetIndex, LoadSettings, Pair, discover, read_pair, split_counts
from data.errors import DatasetError
from data.fingerprint import check_dataset, content_hash, fingerprint

REAL_DATA = SHARED_DATA
REAL_COUNTS = {"chd-ct-aorta": (25, 5, 6), "isbi-em-membrane": (21, 4, 5)}


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def _pair_arrays(seed: int, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    mask[4 : 4 + seed % 5 + 3, 6:14] = 255
    return image, mask


def _dataset(root: Path, counts: dict[str, int] | None = None, *, size: int = 24) -> Path:
    """A valid dataset: stems s00.., grayscale images, 0/255 masks with a small rectangle."""
    counts = counts or {"train": 3, "valid": 2, "test": 2}
    k = 0
    for split, n in counts.items():
        for _ in range(n):
            image, mask = _pair_arrays(k, size)
            _png(root / split / "images" / f"s{k:02d}.png", image)
            _png(root / split / "masks" / f"s{k:02d}.png", mask)
            k += 1
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(root.rglob("*"))
    }


# --------------------------------------------------------------------------------------------- discovery


def test_discover_pairs_sorted_by_stem_across_extensions(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for split in SPLITS:
        for stem in ("b", "a", "c10", "c2"):
            image, mask = _pair_arrays(len(stem))
            _png(root / split / "images" / f"{split}_{stem}.jpg", image)
            _png(root / split / "masks" / f"{split}_{stem}.PNG", mask)
        (root / split / "images" / ".hidden.png").write_bytes(b"junk")
        (root / split / "masks" / "._a.png").write_bytes(b"junk")
        (root / split / "images" / "notes.txt").write_text("ignored")
    index = discover(root)
    assert isinstance(index, DatasetIndex)
    assert tuple(index.splits) == SPLITS
    for split in SPLITS:
        stems = [pair.stem for pair in index.splits[split]]
        assert stems == [f"{split}_{s}" for s in ("a", "b", "c10", "c2")]
        first = index.splits[split][0]
        assert first == Pair(
            f"{split}_a", root / split / "images" / f"{split}_a.jpg", root / split / "masks" / f"{split}_a.PNG"
        )
    assert discover(root) == index  # deterministic


def test_discover_accepts_val_alias(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds", {"train": 2, "val": 1, "test": 1})
    index = discover(root)
    assert tuple(index.splits) == SPLITS
    assert index.splits["valid"][0].image.parent == root / "val" / "images"


def test_discover_subset_of_splits(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds", {"train": 2, "valid": 1})
    assert tuple(discover(root, splits=("train", "valid")).splits) == ("train", "valid")


def test_both_val_and_valid_is_an_error(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds", {"train": 1, "valid": 1, "val": 1, "test": 1})
    with pytest.raises(DatasetError, match=r"both valid and val exist"):
        discover(root)


def _bad_missing_root(tmp_path: Path) -> tuple[Path, str]:
    return tmp_path / "nope", str(tmp_path / "nope")


def _bad_missing_split(tmp_path: Path) -> tuple[Path, str]:
    root = _dataset(tmp_path / "ds", {"train": 1, "test": 1})
    return root, "split folder 'valid' not found"


def _bad_missing_masks(tmp_path: Path) -> tuple[Path, str]:
    root = _dataset(tmp_path / "ds", {"train": 1, "valid": 1, "test": 1})
    for path in (root / "test" / "masks").iterdir():
        path.unlink()
    (root / "test" / "masks").rmdir()
    return root, f"{root / 'test'}: no masks/ folder"


def _bad_image_without_mask(tmp_path: Path) -> tuple[Path, str]:
    root = _dataset(tmp_path / "ds")
    for stem in ("zz1", "zz2", "zz3"):
        _png(root / "train" / "images" / f"{stem}.png", np.zeros((24, 24), np.uint8))
    return root, f"{root / 'train' / 'masks'}: 3 images have no mask (zz1.png, zz2.png, zz3.png)"


def _bad_mask_without_image(tmp_path: Path) -> tuple[Path, str]:
    root = _dataset(tmp_path / "ds")
    _png(root / "valid" / "masks" / "orphan.png", np.zeros((24, 24), np.uint8))
    return root, f"{root / 'valid' / 'images'}: 1 masks have no image (orphan.png)"


def _bad_empty_split(tmp_path: Path) -> tuple[Path, str]:
    root = _dataset(tmp_path / "ds", {"train": 1, "valid": 1})
    (root / "test" / "images").mkdir(parents=True)
    (root / "test" / "masks").mkdir(parents=True)
    return root, f"{root / 'test'}: split is empty"


def _bad_duplicate_stem(tmp_path: Path) -> tuple[Path, str]:
    root = _dataset(tmp_path / "ds")
    _png(root / "train" / "images" / "s00.bmp", np.zeros((24, 24), np.uint8))
    return root, "s00: s00.bmp, s00.png"


def _bad_folder_named_like_an_image(tmp_path: Path) -> tuple[Path, str]:
    root = _dataset(tmp_path / "ds")
    _png(root / "train" / "images" / "scan.png" / "inner.png", np.zeros((24, 24), np.uint8))
    (root / "train" / "masks" / "scan.png").mkdir()
    return root, f"{root / 'train' / 'images'}: 1 entries named like images are not files (scan.png)"


def _bad_dangling_link(tmp_path: Path) -> tuple[Path, str]:
    root = _dataset(tmp_path / "ds")
    (root / "valid" / "masks" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    return root, f"{root / 'valid' / 'masks'}: 1 entries named like images are not files (gone.png)"


@pytest.mark.parametrize(
    "make",
    [
        _bad_folder_named_like_an_image,
        _bad_dangling_link,
        _bad_missing_root,
        _bad_missing_split,
        _bad_missing_masks,
        _bad_image_without_mask,
        _bad_mask_without_image,
        _bad_empty_split,
        _bad_duplicate_stem,
    ],
)
def test_discover_errors_name_the_problem_and_write_nothing(tmp_path: Path, make) -> None:
    root, expected = make(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(DatasetError) as info:
        discover(root)
    message = str(info.value)
    assert expected in message
    assert "expected" in message and "\n" not in message
    report = check_dataset(root, LoadSettings(image_size=16))
    assert report.fingerprint is None and any(expected in e for e in report.errors)
    assert _snapshot(tmp_path) == before


def test_unpaired_list_is_capped_with_count(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds")
    for i in range(13):
        (root / "train" / "images" / f"x{i:02d}.png").write_bytes(b"")
    with pytest.raises(DatasetError) as info:
        discover(root)
    message = str(info.value)
    assert "13 images have no mask" in message
    assert "x09.png and 3 more" in message and "x10.png" not in message


# --------------------------------------------------------------------------------------------- read_pair


def test_read_pair_shapes_channels_and_binarisation(tmp_path: Path) -> None:
    image = np.arange(32 * 32, dtype=np.uint32).reshape(32, 32).astype(np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[:, :16] = 127
    mask[:, 16:] = 128
    pair = Pair("a", _png(tmp_path / "a.png", image), _png(tmp_path / "m.png", mask))
    for channels in (1, 3):
        got_image, got_mask = read_pair(pair, LoadSettings(image_size=32, channels=channels))
        assert got_image.shape == (32, 32, channels) and got_image.dtype == np.uint8
        assert all(np.array_equal(got_image[..., c], image) for c in range(channels))
        assert got_mask.dtype == np.uint8 and got_mask.shape == (32, 32)
        assert np.array_equal(got_mask, (mask >= 128).astype(np.uint8))
    _, low_threshold = read_pair(pair, LoadSettings(image_size=32, mask_threshold=1))
    assert low_threshold.all()


def test_read_pair_resize_interpolations(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(40, 40), dtype=np.uint8)
    mask = (rng.random((40, 40)) > 0.5).astype(np.uint8) * 255
    pair = Pair("a", _png(tmp_path / "a.png", image), _png(tmp_path / "m.png", mask))
    binary = (mask >= 128).astype(np.float32)
    small, small_mask = read_pair(pair, LoadSettings(image_size=16, channels=1))
    assert np.array_equal(small[..., 0], cv2.resize(image, (16, 16), interpolation=cv2.INTER_AREA))
    # masks: the image's interpolation on the float mask, then at least half covered = foreground
    area = cv2.resize(binary, (16, 16), interpolation=cv2.INTER_AREA)
    assert np.array_equal(small_mask[np.abs(area - 0.5) > 1e-3], (area >= 0.5)[np.abs(area - 0.5) > 1e-3])
    big, big_mask = read_pair(pair, LoadSettings(image_size=64, channels=1))
    assert np.array_equal(big[..., 0], cv2.resize(image, (64, 64), interpolation=cv2.INTER_LINEAR))
    linear = cv2.resize(binary, (64, 64), interpolation=cv2.INTER_LINEAR)
    assert set(np.unique(big_mask)) <= {0, 1}
    assert np.array_equal(big_mask[np.abs(linear - 0.5) > 1e-3], (linear >= 0.5)[np.abs(linear - 0.5) > 1e-3])


def test_read_pair_colour_to_rgb_and_gray(tmp_path: Path) -> None:
    bgr = np.zeros((16, 16, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    pair = Pair("c", _png(tmp_path / "c.png", bgr), _png(tmp_path / "m.png", np.zeros((16, 16), np.uint8)))
    rgb, _ = read_pair(pair, LoadSettings(image_size=16, channels=3))
    assert (rgb[..., 2] == 200).all() and (rgb[..., 0] == 0).all()
    gray, _ = read_pair(pair, LoadSettings(image_size=16, channels=1))
    assert np.array_equal(gray[..., 0], cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    good = _png(tmp_path / "m.png", np.zeros((16, 16), np.uint8))
    bad = tmp_path / "broken.png"
    bad.write_bytes(good.read_bytes()[:40])
    before = _snapshot(tmp_path)
    with pytest.raises(DatasetError, match=r"image .*broken\.png: cannot be decoded"):
        read_pair(Pair("broken", bad, good), LoadSettings(image_size=16))
    with pytest.raises(DatasetError, match=r"mask .*missing\.png: cannot be read"):
        read_pair(Pair("x", good, tmp_path / "missing.png"), LoadSettings(image_size=16))
    assert _snapshot(tmp_path) == before


def test_size_mismatch_names_both_files_and_sizes(tmp_path: Path) -> None:
    image = _png(tmp_path / "images" / "a.png", np.zeros((20, 30), np.uint8))
    mask = _png(tmp_path / "masks" / "a.png", np.zeros((20, 20), np.uint8))
    with pytest.raises(DatasetError) as info:
        read_pair(Pair("a", image, mask), LoadSettings(image_size=16))
    message = str(info.value)
    assert str(image) in message and str(mask) in message
    assert "30x20" in message and "20x20" in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"image_size": 0},
        {"image_size": 16.0},
        {"image_size": 16, "channels": 2},
        {"image_size": 16, "mask_threshold": 0},
        {"image_size": 16, "mask_threshold": 256},
        {"image_size": True},
    ],
)
def test_load_settings_validate(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="Received"):
        LoadSettings(**kwargs)


def test_load_settings_accept_numpy_ints() -> None:
    settings = LoadSettings(image_size=np.int64(32), channels=np.int32(1))
    assert type(settings.image_size) is int and json.dumps(settings.__dict__)
    assert settings == LoadSettings(image_size=32, channels=1)


def test_split_counts() -> None:
    assert split_counts(10, [0.7, 0.15, 0.15]) == [7, 2, 1]
    assert split_counts(3, [0.7, 0.15, 0.15]) == [1, 1, 1]
    for n in range(3, 50):
        counts = split_counts(n, [0.7, 0.15, 0.15])
        assert sum(counts) == n and min(counts) >= 1
    with pytest.raises(ValueError):
        split_counts(2, [0.7, 0.15, 0.15])


# --------------------------------------------------------------------------------------------- fingerprint


def test_fingerprint_contents_stable_and_content_sensitive(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds")
    settings = LoadSettings(image_size=16, channels=1)
    index = discover(root)
    first = fingerprint(index, settings)
    assert json.loads(json.dumps(first)) == first
    assert first == fingerprint(discover(root), settings)
    assert first["content_hash"] == content_hash(index)
    assert first["settings"] == {"image_size": 16, "channels": 1, "mask_threshold": None, "classes": None}
    assert first["mask_rule"]["threshold"] == 255 and first["channels"] == 1 and first["image_bits"] == 8
    assert {s: first["splits"][s]["count"] for s in SPLITS} == {"train": 3, "valid": 2, "test": 2}
    assert first["total"]["sizes"] == {"24x24": 7}
    masks = [cv2.imread(str(p.mask), cv2.IMREAD_GRAYSCALE) for p in index.splits["train"]]
    fractions = [float((m >= 128).mean()) for m in masks]
    fg = first["splits"]["train"]["foreground"]
    assert (
        fg["mean"] == pytest.approx(np.mean(fractions)) and fg["min"] == min(fractions) and fg["empty"] == 0
    )
    images = np.stack([cv2.imread(str(p.image), cv2.IMREAD_GRAYSCALE) for _, p in index.pairs()]).astype(
        float
    )
    assert first["total"]["intensity"]["mean"] == pytest.approx(images.mean())
    assert first["total"]["intensity"]["std"] == pytest.approx(images.std())

    # mtime alone does not change the fingerprint; content does
    touched = index.splits["test"][0].image
    os.utime(touched, ns=(1, 1))
    assert fingerprint(discover(root), settings) == first
    _png(touched, np.full((24, 24), 7, np.uint8))
    changed = fingerprint(discover(root), settings)
    assert changed["content_hash"] != first["content_hash"]
    assert (
        fingerprint(index, LoadSettings(image_size=32, channels=1))["content_hash"] == changed["content_hash"]
    )


def test_val_alias_has_same_content_hash(tmp_path: Path) -> None:
    a = _dataset(tmp_path / "a", {"train": 1, "valid": 1, "test": 1})
    b = _dataset(tmp_path / "b", {"train": 1, "val": 1, "test": 1})
    assert content_hash(discover(a)) == content_hash(discover(b))


# --------------------------------------------------------------------------------------------- check_dataset


def test_check_collects_every_error(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds", {"train": 3, "valid": 2, "test": 2})
    _png(root / "train" / "images" / "lonely.png", np.zeros((24, 24), np.uint8))
    corrupt = root / "valid" / "images" / "s03.png"
    corrupt.write_bytes(b"\x89PNG not really")
    mismatch = _png(root / "test" / "masks" / "s05.png", np.zeros((10, 24), np.uint8))
    before = _snapshot(tmp_path)
    report = check_dataset(root, LoadSettings(image_size=16))
    assert report.fingerprint is None and not report.ok
    assert len(report.errors) == 3
    joined = "\n".join(report.errors)
    assert "lonely.png" in joined and str(corrupt) in joined and str(mismatch) in joined
    assert _snapshot(tmp_path) == before


def test_check_warnings(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds", {"train": 3, "valid": 2, "test": 2})
    # train: one empty mask and one JPEG mask with many values
    _png(root / "train" / "masks" / "s00.png", np.zeros((24, 24), np.uint8))
    (root / "train" / "masks" / "s01.png").unlink()
    ramp = np.tile(np.linspace(0, 255, 24).astype(np.uint8), (24, 1))
    _png(root / "train" / "masks" / "s01.jpg", ramp)
    # test: every mask empty (a warning; in train or valid it is an error, see the tests above)
    for pair in discover(root).splits["test"]:
        _png(pair.mask, np.zeros((24, 24), np.uint8))
    report = check_dataset(root, LoadSettings(image_size=16))
    assert report.ok and report.fingerprint is not None
    warnings = "\n".join(report.warnings)
    assert "1 of 3 masks are empty after reading (s00.png)" in warnings
    assert "masks are JPEG (s01.jpg)" in warnings
    assert "s01.jpg has" in warnings and "values 0..255; foreground >= 128" in warnings
    assert "all 2 masks are empty after reading" in warnings
    assert report.fingerprint["splits"]["test"]["foreground"]["empty"] == 2


@pytest.mark.parametrize("name", sorted(REAL_COUNTS))
def test_real_dataset_discovered_and_checked(name: str) -> None:
    root = REAL_DATA / name
    if not root.is_dir():
        pytest.skip(f"real dataset {root} is absent on this machine")
    index = discover(root)
    assert tuple(len(index.splits[s]) for s in SPLITS) == REAL_COUNTS[name]
    report = check_dataset(root, LoadSettings(image_size=64))
    assert report.errors == [] and report.warnings == []
    assert report.fingerprint is not None
    assert report.fingerprint["total"]["sizes"] == {"512x512": sum(REAL_COUNTS[name])}
    assert report.fingerprint["total"]["foreground"]["empty"] == 0


# --------------------------------------------------------------------------------------------- masks as meant


def _rect(size: int = 24) -> np.ndarray:
    """The foreground every encoding below stores: a 8x8 rectangle (64 of 576 pixels)."""
    mask = np.zeros((size, size), bool)
    mask[4:12, 6:14] = True
    return mask


def _anti_aliased(rect: np.ndarray) -> np.ndarray:
    """0/255 with a soft edge: 90 just outside the rectangle (background), 200 on its border (foreground)."""
    out = rect.astype(np.uint8) * 255
    grown = cv2.dilate(rect.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    shrunk = cv2.erode(rect.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    out[grown & ~rect] = 90
    out[rect & ~shrunk] = 200
    return out


MASK_ENCODINGS = {
    "0-1 8-bit": lambda m: m.astype(np.uint8),
    "0-1 16-bit": lambda m: m.astype(np.uint16),
    "0-255": lambda m: m.astype(np.uint8) * 255,
    "0-38": lambda m: m.astype(np.uint8) * 38,
    "0-65535 16-bit": lambda m: m.astype(np.uint16) * 65535,
    "0-1000 16-bit": lambda m: m.astype(np.uint16) * 1000,
    "anti-aliased 8-bit": _anti_aliased,
    "anti-aliased 16-bit": lambda m: _anti_aliased(m).astype(np.uint16) * 257,
}


def _masked_dataset(root: Path, encode, *, size: int = 24) -> Path:
    """train: an all-background mask and two rectangles; valid and test: one rectangle each."""
    rect, k = _rect(size), 0
    for split, n in (("train", 3), ("valid", 1), ("test", 1)):
        for _ in range(n):
            image, _ = _pair_arrays(k, size)
            _png(root / split / "images" / f"s{k:02d}.png", image)
            _png(root / split / "masks" / f"s{k:02d}.png", encode(rect if k else np.zeros_like(rect)))
            k += 1
    return root


@pytest.mark.parametrize("encoding", sorted(MASK_ENCODINGS))
def test_masks_are_read_as_meant_whatever_their_encoding(tmp_path: Path, encoding: str) -> None:
    from data.cache import load_cached

    root = _masked_dataset(tmp_path / "ds", MASK_ENCODINGS[encoding])
    settings = LoadSettings(image_size=24, channels=1)
    report = check_dataset(root, settings)
    assert report.errors == [] and report.fingerprint is not None
    train = report.fingerprint["splits"]["train"]["foreground"]
    assert train["empty"] == 1 and train["max"] == pytest.approx(64 / 576)
    assert report.fingerprint["splits"]["valid"]["foreground"]["min"] == pytest.approx(64 / 576)
    cached = load_cached(discover(root), settings, cache_dir=tmp_path / "cache")
    masks = cached.split("train").masks
    assert not masks[0].any()  # the all-background mask stays empty (decided per dataset, not per image)
    assert np.array_equal(masks[1], _rect().astype(np.uint8)) and np.array_equal(masks[2], masks[1])
    assert cached.fingerprint["mask_rule"]["threshold"] >= 1


def _colour_coded(rect: np.ndarray) -> np.ndarray:
    """A colour-coded label map (BGR): three structures, a dark blue (grey 29), a green (grey 150) and a red
    (grey 76) one, in one rectangle, as the chd-ct-multiclass masks hold them."""
    out = np.zeros((*rect.shape, 3), np.uint8)
    ys, xs = np.nonzero(rect)
    third = len(ys) // 3
    for part, colour in zip(range(3), [(255, 0, 0), (0, 255, 0), (0, 0, 255)], strict=True):
        sl = slice(part * third, None if part == 2 else (part + 1) * third)
        out[ys[sl], xs[sl]] = colour
    return out


def test_colour_coded_masks_are_read_as_the_union_of_their_structures(tmp_path: Path) -> None:
    """Grey >= 128 kept the green structure and silently dropped the blue and red ones of colour label maps."""
    from data.cache import load_cached

    root = _masked_dataset(tmp_path / "ds", _colour_coded)
    settings = LoadSettings(image_size=24, channels=1)
    report = check_dataset(root, settings)
    assert report.errors == [] and report.fingerprint is not None
    assert "colour" in report.fingerprint["mask_rule"]["rule"] and "union" in report.fingerprint["mask_rule"]["rule"]
    assert report.fingerprint["splits"]["valid"]["foreground"]["max"] == pytest.approx(64 / 576)
    masks = load_cached(discover(root), settings, cache_dir=tmp_path / "cache").split("train").masks
    assert not masks[0].any() and np.array_equal(masks[1], _rect().astype(np.uint8))


def test_an_explicit_mask_threshold_wins(tmp_path: Path) -> None:
    root = _masked_dataset(tmp_path / "ds", _anti_aliased)
    ring = _anti_aliased(_rect()) >= 50
    fp = check_dataset(root, LoadSettings(image_size=24, channels=1, mask_threshold=50)).fingerprint
    assert fp is not None and fp["splits"]["valid"]["foreground"]["max"] == pytest.approx(ring.mean())
    assert fp["mask_rule"]["threshold"] == 50 and "mask_threshold" in fp["mask_rule"]["rule"]
    # 0/38 masks with an explicit 128: the user's threshold is kept, and the empty splits are an error
    report = check_dataset(_masked_dataset(tmp_path / "b", MASK_ENCODINGS["0-38"]),
                           LoadSettings(image_size=24, mask_threshold=128))
    assert any("split 'train'" in e and "0, 38" in e for e in report.errors)


@pytest.mark.parametrize("empty_split", ["train", "valid"])
def test_a_split_without_foreground_is_an_error_naming_split_and_values(tmp_path: Path, empty_split: str) -> None:
    # label maps of three classes {0, 1, 2}: more than two values, so foreground is >= 128, which none reaches
    def labels(m: np.ndarray) -> np.ndarray:
        out = m.astype(np.uint8)
        out[m.nonzero()[0][:4], m.nonzero()[1][:4]] = 2
        return out

    root = _masked_dataset(tmp_path / "ds", labels)
    other = "valid" if empty_split == "train" else "train"
    for pair in discover(root).splits[other]:  # the other split has real foreground
        _png(pair.mask, _rect().astype(np.uint8) * 255)
    report = check_dataset(root, LoadSettings(image_size=24))
    errors = [e for e in report.errors if f"split {empty_split!r}" in e]
    assert len(errors) == 1 and report.fingerprint is None
    assert "0, 1, 2" in errors[0] and "mask_threshold" in errors[0] and "\n" not in errors[0]


# --------------------------------------------------------------------------------------------- resize geometry


def _centroid(weights: np.ndarray) -> np.ndarray:
    ys, xs = np.indices(weights.shape)
    total = weights.sum()
    return np.array([(xs * weights).sum() / total, (ys * weights).sum() / total])


@pytest.mark.parametrize(("source", "target"), [(512, 128), (500, 128), (96, 128)])
def test_masks_are_resized_with_the_images_geometry(source: int, target: int) -> None:
    from data.dataset import resize_image, resize_mask

    rng = np.random.default_rng(5)
    ys, xs = np.indices((source, source))
    shifts = []
    for _ in range(24):
        cx, cy = rng.uniform(0.3 * source, 0.7 * source, 2)
        radius = rng.uniform(0.03, 0.06) * source
        disk = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2
        image = resize_image(disk.astype(np.uint8)[:, :, None] * 255, target)[:, :, 0].astype(float)
        mask = resize_mask(disk.astype(np.uint8), target)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        shifts.append(_centroid(mask.astype(float)) - _centroid(image))
    mean_shift = np.abs(np.mean(shifts, axis=0))
    assert mean_shift.max() <= 0.05, f"mask-minus-image centroid shift {mean_shift} px"


# --------------------------------------------------------------------------------------------- one split per image


def test_the_same_stem_in_two_splits_is_an_error(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds")
    image, mask = _pair_arrays(9)
    _png(root / "valid" / "images" / "s00.png", image)  # s00 is a training image too
    _png(root / "valid" / "masks" / "s00.png", mask)
    with pytest.raises(DatasetError) as info:
        discover(root)
    assert "s00" in str(info.value) and "train" in str(info.value) and "valid" in str(info.value)
    report = check_dataset(root, LoadSettings(image_size=16))
    assert any("s00" in e and "train" in e and "valid" in e for e in report.errors)


def test_identical_image_files_in_two_splits_are_warned(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds")
    index = discover(root)
    copy = root / "test" / "images" / "zz.png"
    copy.write_bytes(index.splits["train"][0].image.read_bytes())
    _png(root / "test" / "masks" / "zz.png", _pair_arrays(0)[1])
    report = check_dataset(root, LoadSettings(image_size=16))
    assert report.ok
    assert any("train/images/s00.png" in w and "test/images/zz.png" in w for w in report.warnings)


# --------------------------------------------------------------------------------------------- 16-bit images


def _ct_slice(seed: int, size: int = 64) -> np.ndarray:
    """A 12-bit CT-like slice stored in 16 bits: every value 0..4095 occurs."""
    values = np.random.default_rng(seed).permutation(4096)
    return np.resize(values, (size, size)).astype(np.uint16)


def test_16_bit_images_keep_their_grey_levels(tmp_path: Path) -> None:
    from data.cache import load_cached

    root = _dataset(tmp_path / "ds", size=64)
    for _, pair in discover(root).pairs():
        _png(pair.image, _ct_slice(len(pair.stem) + int(pair.stem[1:])))
    settings = LoadSettings(image_size=64, channels=1)
    report = check_dataset(root, settings)
    assert report.ok and any("16-bit" in w and "12" in w for w in report.warnings)
    cached = load_cached(discover(root), settings, cache_dir=tmp_path / "cache")
    images = np.asarray(cached.split("train").images)
    assert images.dtype == np.float32 and cached.fingerprint["image_bits"] == 12
    assert len(np.unique(images[0])) >= 1000
    assert images.min() == 0.0 and images.max() == pytest.approx(255.0)  # 4095 -> 255: the model's scale
    image, _ = read_pair(discover(root).splits["train"][0], settings)
    assert np.allclose(image, images[0], atol=1e-3)


def test_8_and_16_bit_images_in_one_dataset_are_an_error(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds", size=64)
    wide = discover(root).splits["valid"][0].image
    _png(wide, _ct_slice(0))
    report = check_dataset(root, LoadSettings(image_size=32))
    assert any("16-bit" in e and "8-bit" in e and wide.name in e for e in report.errors)
