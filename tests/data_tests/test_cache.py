"""The decoded dataset cache (data/cache.py): reuse, rebuild, verification and concurrent builders."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import data.fingerprint
from data.cache import CachedDataset, cache_key, load_cached, open_cache
from data.dataset import SPLITS, LoadSettings, discover, read_pair
from data.errors import DatasetError
from data.fingerprint import fingerprint

SETTINGS = LoadSettings(image_size=16, channels=3)


def _dataset(root: Path, counts: tuple[int, int, int] = (3, 2, 2), *, size: int = 20) -> Path:
    k = 0
    for split, n in zip(SPLITS, counts, strict=True):
        for _ in range(n):
            rng = np.random.default_rng(k)
            image = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
            mask = np.zeros((size, size), np.uint8)
            mask[2 : 5 + k, 3:12] = 255
            for kind, array in (("images", image), ("masks", mask)):
                (root / split / kind).mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(root / split / kind / f"p{k:02d}.png"), array)
            k += 1
    return root


class _CountingDecoder:
    """Wraps the decoder used by the cache builder and counts calls (optionally slowed down)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self.original = data.fingerprint.decode_raw

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return self.original(*args, **kwargs)


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def _assert_matches_read_pair(cached: CachedDataset, root: Path, settings: LoadSettings) -> None:
    index = discover(root)
    for split, pairs in index.splits.items():
        arrays = cached.split(split)
        assert arrays.stems == tuple(p.stem for p in pairs)
        assert arrays.images.shape == (
            len(pairs),
            settings.image_size,
            settings.image_size,
            settings.channels,
        )
        assert arrays.masks.shape == (len(pairs), settings.image_size, settings.image_size)
        assert arrays.images.dtype == np.uint8 and arrays.masks.dtype == np.uint8
        for i, pair in enumerate(pairs):
            image, mask = read_pair(pair, settings)
            assert np.array_equal(arrays.images[i], image) and np.array_equal(arrays.masks[i], mask)


def test_cache_is_built_once_then_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _dataset(tmp_path / "ds")
    cache_dir = tmp_path / "cache"
    decoder = _CountingDecoder()
    monkeypatch.setattr(data.fingerprint, "decode_raw", decoder)
    index = discover(root)
    first = load_cached(index, SETTINGS, cache_dir=cache_dir)
    assert decoder.calls == 3 * 7  # every mask twice (the dataset's mask rule first), every image once
    assert first.path == cache_dir / first.key and first.key == cache_key(index, SETTINGS)
    assert first.settings == SETTINGS
    assert first.fingerprint == fingerprint(index, SETTINGS)
    assert not first.split("train").images.flags.writeable  # read-only memory map
    _assert_matches_read_pair(first, root, SETTINGS)
    stamps = _mtimes(first.path)

    decoder.calls = 0
    second = load_cached(discover(root), SETTINGS, cache_dir=cache_dir)
    assert decoder.calls == 0
    assert second.key == first.key and _mtimes(second.path) == stamps
    assert [p.name for p in cache_dir.iterdir()] == [first.key]
    with pytest.raises(KeyError, match="expected one of"):
        second.split("nope")


def test_cache_rebuilt_when_a_file_or_setting_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _dataset(tmp_path / "ds")
    cache_dir = tmp_path / "cache"
    first = load_cached(discover(root), SETTINGS, cache_dir=cache_dir)
    changed_mask = root / "valid" / "masks" / "p03.png"
    assert cv2.imwrite(str(changed_mask), np.full((20, 20), 255, np.uint8))
    decoder = _CountingDecoder()
    monkeypatch.setattr(data.fingerprint, "decode_raw", decoder)
    second = load_cached(discover(root), SETTINGS, cache_dir=cache_dir)
    assert decoder.calls == 3 * 7 and second.key != first.key
    assert second.split("valid").masks[0].all()
    assert first.split("valid").masks[0].mean() < 1  # the old cache is untouched
    gray = LoadSettings(image_size=16, channels=1)
    third = load_cached(discover(root), gray, cache_dir=cache_dir)
    assert third.key not in (first.key, second.key)
    _assert_matches_read_pair(third, root, gray)


@pytest.mark.parametrize("damage", ["no_marker", "truncated_array", "wrong_stems"])
def test_damaged_cache_is_never_loaded(tmp_path: Path, damage: str) -> None:
    root = _dataset(tmp_path / "ds")
    cache_dir = tmp_path / "cache"
    good = load_cached(discover(root), SETTINGS, cache_dir=cache_dir)
    key, path = good.key, good.path
    del good
    if damage == "no_marker":
        (path / "COMPLETE").unlink()
    elif damage == "truncated_array":
        target = path / "train_images.npy"
        target.write_bytes(target.read_bytes()[:-10])
    else:
        (path / "stems.json").write_text('{"train": ["x"], "valid": [], "test": []}')
    rebuilt = load_cached(discover(root), SETTINGS, cache_dir=cache_dir)
    assert rebuilt.key == key
    _assert_matches_read_pair(rebuilt, root, SETTINGS)
    assert sorted(p.name for p in cache_dir.iterdir()) == [key]


def test_leftover_temporary_folders_do_not_matter(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds")
    cache_dir = tmp_path / "cache"
    key = cache_key(discover(root), SETTINGS)
    crashed = cache_dir / f".tmp-{key}-crashed"
    crashed.mkdir(parents=True)
    (crashed / "train_images.npy").write_bytes(b"half")
    cached = load_cached(discover(root), SETTINGS, cache_dir=cache_dir)
    _assert_matches_read_pair(cached, root, SETTINGS)


def test_files_changing_during_build_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _dataset(tmp_path / "ds")
    monkeypatch.setattr("data.cache.content_hash", lambda index: "0" * 64)
    with pytest.raises(DatasetError, match="kept changing"):
        load_cached(discover(root), SETTINGS, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_corrupt_file_stops_the_build_and_leaves_nothing(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds")
    (root / "test" / "images" / "p06.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"p06\.png: cannot be decoded"):
        load_cached(discover(root), SETTINGS, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def _build_in_child(root: str, cache_dir: str, barrier, results) -> None:
    decoder = _CountingDecoder(delay=0.05)
    data.fingerprint.decode_raw = decoder
    barrier.wait()
    cached = load_cached(discover(root), SETTINGS, cache_dir=Path(cache_dir))
    checksum = int(np.asarray(cached.split("train").images, dtype=np.int64).sum())
    results.put((cached.key, decoder.calls, checksum, sorted(p.name for p in cached.path.iterdir())))


@pytest.mark.slow
def test_two_processes_building_at_once_leave_one_complete_cache(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds")
    cache_dir = tmp_path / "cache"
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [
        ctx.Process(target=_build_in_child, args=(str(root), str(cache_dir), barrier, results))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    keys, calls, checksums, listings = zip(*outcomes, strict=True)
    assert len(set(keys)) == 1 and len(set(checksums)) == 1 and len(set(map(tuple, listings))) == 1
    assert calls == (21, 21)  # both really built, the slower copy was discarded
    assert [p.name for p in cache_dir.iterdir()] == [keys[0]]  # no temporary folders left
    cached = load_cached(discover(root), SETTINGS, cache_dir=cache_dir)
    _assert_matches_read_pair(cached, root, SETTINGS)


def test_open_cache_by_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _dataset(tmp_path / "ds")
    built = load_cached(discover(root), SETTINGS, cache_dir=tmp_path / "cache")
    decoder = _CountingDecoder()
    monkeypatch.setattr(data.fingerprint, "decode_raw", decoder)
    opened = open_cache(str(built.path))
    assert decoder.calls == 0
    assert opened.key == built.key and opened.settings == SETTINGS
    assert opened.fingerprint["content_hash"] == built.fingerprint["content_hash"]
    _assert_matches_read_pair(opened, root, SETTINGS)
    (built.path / "COMPLETE").unlink()
    with pytest.raises(DatasetError, match=r"no valid COMPLETE marker"):
        open_cache(built.path)
    with pytest.raises(DatasetError, match=r"cache .*nowhere"):
        open_cache(tmp_path / "nowhere")


def _grey_dataset(root: Path, *, as_rgb: bool) -> Path:
    """Grey images stored as one channel, or as three equal channels (a common export)."""
    for k, split in enumerate(SPLITS):
        grey = np.random.default_rng(k).integers(0, 256, (20, 20), dtype=np.uint8)
        mask = np.zeros((20, 20), np.uint8)
        mask[3:9, 4:12] = 255
        for kind, array in (("images", np.dstack([grey] * 3) if as_rgb else grey), ("masks", mask)):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / split / kind / f"g{k}.png"), array)
    return root


@pytest.mark.parametrize("as_rgb", [False, True])
def test_channels_auto_caches_grey_images_as_one_channel(tmp_path: Path, as_rgb: bool) -> None:
    root = _grey_dataset(tmp_path / "ds", as_rgb=as_rgb)
    auto = load_cached(discover(root), LoadSettings(image_size=16), cache_dir=tmp_path / "cache")
    assert auto.channels == 1 and auto.fingerprint["channels"] == 1
    assert auto.split("train").images.shape == (1, 16, 16, 1)
    explicit = load_cached(discover(root), LoadSettings(image_size=16, channels=3), cache_dir=tmp_path / "cache")
    assert explicit.channels == 3 and explicit.split("train").images.shape == (1, 16, 16, 3)  # still honoured
    assert np.array_equal(explicit.split("train").images[..., 1], auto.split("train").images[..., 0])


def test_channels_auto_keeps_colour_images_in_colour(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds")  # random colour images
    cached = load_cached(discover(root), LoadSettings(image_size=16), cache_dir=tmp_path / "cache")
    assert cached.channels == 3 and cached.split("valid").images.shape[-1] == 3
    _assert_matches_read_pair(cached, root, SETTINGS)


def test_a_resolved_channel_count_reuses_the_auto_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A study records channels: 1 once resolved; reading it back must not decode the dataset again."""
    root = _grey_dataset(tmp_path / "ds", as_rgb=False)
    auto = load_cached(discover(root), LoadSettings(image_size=16), cache_dir=tmp_path / "cache")
    decoder = _CountingDecoder()
    monkeypatch.setattr(data.fingerprint, "decode_raw", decoder)
    resolved = load_cached(discover(root), LoadSettings(image_size=16, channels=1), cache_dir=tmp_path / "cache")
    assert decoder.calls == 0 and resolved.path == auto.path
