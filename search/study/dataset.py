"""A study's dataset: discovered, validated and decoded once into the cache its trials read."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from data import (
    ClassMap,
    DatasetError,
    LoadSettings,
    discover,
    foreground_errors,
    load_cached,
    resolve_class_map,
)
from search.config import Config
from search.errors import ConfigError
from search.evaluation import FoldPlan, Units, group_images, image_units, make_folds
from search.results import atomic_write_json
from search.results.layout import FOLDS_FILE

__all__ = ["PreparedData", "fold_plan", "prepare_data", "resolved_config", "study_units"]

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    cache_path: str
    fingerprint: dict[str, Any]
    stems: dict[str, tuple[str, ...]] = field(default_factory=dict)  # image names per split
    channels: int = 3  # the image channels in the cache (data.channels: auto resolved)
    classes: ClassMap | None = None  # the class map the masks were read with (None: binary)


def prepare_data(cfg: Config, results_root: Path) -> PreparedData:
    """Discover, validate and cache the dataset (raises DatasetError, exit 3 at the CLI).

    Refuses, like `data check`, a train or valid split without any foreground after reading: a model that
    predicts nothing would score about 1.0 on it.
    """
    root = Path(cfg.data.root)
    if not root.exists():
        raise DatasetError(
            f"no dataset at {root.resolve()} (data.root); pass --data DIR with train/valid/test "
            f"folders of images/ and masks/, or --demo for the built-in synthetic dataset"
        )
    index = discover(root)
    try:
        classes = resolve_class_map(root, cfg.data.classes)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    settings = LoadSettings(image_size=cfg.data.image_size, channels=cfg.data.channels,
                            mask_threshold=cfg.data.mask_threshold, classes=classes)
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else results_root / ".cache"
    cached = load_cached(index, settings, cache_dir=cache_dir)
    for split in ("train", "valid", "test"):
        if len(cached.split(split).images) == 0:
            raise DatasetError(f"dataset {root}: split {split!r} is empty")
    problems = foreground_errors(cached.fingerprint)
    if problems:
        raise DatasetError(problems[0])
    same = cached.fingerprint.get("identical_across_splits") or []
    if same:
        logger.warning("dataset %s: %d images are byte-identical files in two splits (%s); `data check` lists them",
                       root, len(same), same[0])
    logger.info("dataset %s: %s; %d channel(s)", root, cached.plan.mask.rule, cached.channels)
    stems = {split: tuple(cached.split(split).stems) for split in ("train", "valid", "test")}
    return PreparedData(cache_path=str(cached.path), fingerprint=cached.fingerprint, stems=stems,
                        channels=cached.channels, classes=classes)


def resolved_config(cfg: Config, data: PreparedData) -> Config:
    """``cfg`` with ``data.channels: auto`` replaced by the channels of the prepared data and ``data.classes: auto``
    by the class map it was read with, or ``binary`` (what study.yaml records, what the model is built with, what
    the reference INI exports)."""
    channels: Literal[1, 3, "auto"] = cfg.data.channels
    if channels == "auto":
        channels = 1 if data.channels == 1 else 3
    classes = cfg.data.classes
    if classes == "auto":
        classes = data.classes.mapping() if data.classes is not None else "binary"
    return cfg.replace(data=replace(cfg.data, channels=channels, classes=classes))


def fold_plan(cfg: Config, data: PreparedData, study_root: Path) -> FoldPlan | None:
    """The study's folds (k-fold evaluation), recorded in ``<study>/folds.json`` on first use.

    Folds are a pure function of (train+valid names, study.folds, study.groups, study.seed), so every
    driver of a study (on any machine) makes the same ones; a recorded file that differs is an error.

    Raises:
        ConfigError: fewer patients than folds, a pattern that does not match, or folds.json differs.
    """
    if cfg.study.evaluation != "kfold":
        return None
    s = cfg.study
    pooled = [*data.stems["train"], *data.stems["valid"]]
    groups, how = group_images(pooled, s.groups, k=s.folds, data_root=Path(cfg.data.root))
    plan = make_folds(groups, s.folds, seed=s.seed, grouping=how)
    path = study_root / FOLDS_FILE
    if path.is_file():
        recorded = FoldPlan.from_dict(json.loads(path.read_text()))
        if recorded.folds != plan.folds:
            raise ConfigError(f"{path}: the recorded folds differ from the folds of this dataset and config "
                              f"(study.folds/groups/seed or the images changed); use a new --study name")
        return recorded
    atomic_write_json(path, plan.to_dict())
    logger.info("k-fold: %d folds of %s images, grouped by %s (%d groups); recorded in %s", s.folds,
                "/".join(str(len(f)) for f in plan.folds), how, len(set(groups.values())), path)
    return plan


def study_units(cfg: Config, data: PreparedData) -> Units:
    """The study's units, from every split's image names (one rule for valid, folds and test)."""
    return image_units((s for split in data.stems.values() for s in split), cfg.study.groups,
                       data_root=Path(cfg.data.root))
