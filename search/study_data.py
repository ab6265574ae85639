"""A study's dataset: discovered, validated and decoded once into the cache its trials read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.config import Config

__all__ = ["PreparedData", "prepare_data"]


@dataclass
class PreparedData:
    cache_path: str
    fingerprint: dict[str, Any]


def prepare_data(cfg: Config, results_root: Path) -> PreparedData:
    """Discover, validate and cache the dataset (raises DatasetError, exit 3 at the CLI)."""
    from data import DatasetError, LoadSettings, discover, load_cached

    root = Path(cfg.data.root)
    if not root.exists():
        raise DatasetError(
            f"no dataset at {root.resolve()} (data.root); pass --data DIR with train/valid/test "
            f"folders of images/ and masks/, or --demo for the built-in synthetic dataset"
        )
    index = discover(root)
    settings = LoadSettings(image_size=cfg.data.image_size, channels=cfg.data.channels, mask_threshold=cfg.data.mask_threshold)
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else results_root / ".cache"
    cached = load_cached(index, settings, cache_dir=cache_dir)
    for split in ("train", "valid", "test"):
        if len(cached.split(split).images) == 0:
            raise DatasetError(f"dataset {root}: split {split!r} is empty")
    return PreparedData(cache_path=str(cached.path), fingerprint=cached.fingerprint)
