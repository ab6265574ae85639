"""Shared tiny inputs for the tests: a 32² trial's data and task, the budget's reference machine, a final
result to edit. Imported by tests in several packages (tests/<package>/), so it lives beside conftest.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from conftest import tiny_raw_config

from data import synthetic_arrays
from search.config import AUTO, config_from_dict
from search.config.specs import specs_from_values
from search.results import StudyDir, atomic_write_json
from search.study.budget import DataSizes, Throughput
from search.trial.holdout import HoldoutTask
from search.trial.task import TrialOutputs, TrialTask

# The budget's reference case: the chd-ct-aorta baseline at 128² on 2 CPU cores (7 samples/s, a few
# seconds to start a trial) and that set's split sizes.
AUTO_RULES = {"samples_per_epoch": AUTO, "warmup_samples": AUTO, "patience": AUTO, "max_epochs": AUTO}
CPU = Throughput(train_samples_per_s=7.0, eval_samples_per_s=21.0, startup_s=6.0, spawn_s=8.0,
                 epoch_overhead_s=0.1, image_size=128)
CHD = DataSizes(train=25, valid=5, test=6, batch_size=2)


class Killed(BaseException):
    """Stands in for SIGKILL: escapes run_task like a dead process, leaving the checkpoint behind."""


def trial_data(train: int = 16, valid: int = 8, test: int = 8) -> Any:
    """Synthetic 32² splits (stems train0…, valid0…, test0…) as a trial process's data object."""
    splits = {}
    for name, (n, seed) in {"train": (train, 1), "valid": (valid, 2), "test": (test, 3)}.items():
        images, masks = synthetic_arrays(n=n, size=32, seed=seed)
        splits[name] = SimpleNamespace(images=images, masks=masks, stems=[f"{name}{i}" for i in range(n)])
    return SimpleNamespace(split=lambda name: splits[name], classes=None)


def holdout_task(out: Path, *, epochs: int = 6) -> TrialTask:
    """A 2-level, 4-filter holdout trial writing into ``out``."""
    raw = tiny_raw_config(Path("unused"), train={"max_epochs": epochs, "patience": epochs})
    cfg = config_from_dict(raw)
    values = {**cfg.fixed_values(), "base_filters": 4, "num_layers": 2, "learning_rate": 3e-3}
    specs = specs_from_values(cfg, values, seed=5)
    return HoldoutTask(number=0, specs=specs, out_dir=str(out), cache_path="", outputs=TrialOutputs(predictions=2))


def set_final_result(study: StudyDir, *, dice: float, pred_fg: float, true_fg: float, sentence: str) -> None:
    """Edit a built study's final.json and test_metrics.json to this test dice, verdict and foreground."""
    final = json.loads(study.final_json.read_text())
    final["test"]["hard_dice"] = dice
    final["verdict"] = {"outcome": "no_difference", "sentence": sentence}
    atomic_write_json(study.final_json, final)
    metrics = json.loads(study.test_metrics_json.read_text())
    atomic_write_json(study.test_metrics_json,
                      {**metrics, "hard_dice": dice, "pred_fg_fraction": pred_fg, "true_fg_fraction": true_fg})


# Several classes: three structures (discs of their own grey level) coded in RGB colours, background black.
MULTICLASS_COLOURS = {"background": [0, 0, 0], "ring": [255, 0, 0], "disc": [0, 255, 0], "spot": [0, 0, 255]}


def multiclass_arrays(n: int, *, size: int = 32, seed: int = 0) -> tuple[Any, Any]:
    """``n`` images uint8 [n, size, size, 1] with class indices uint8 [n, size, size] (0..3): each structure a
    disc of its own grey level at a random place; the third (``spot``) is absent from every other image."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.zeros((n, size, size, 1), np.uint8)
    labels = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        image = rng.normal(20, 4, (size, size))
        for k, radius in ((1, size // 5), (2, size // 7), (3, size // 10)):
            if k == 3 and i % 2:
                continue
            cy, cx = rng.integers(radius, size - radius, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            labels[i][disc] = k
            image[disc] = 60 * k + rng.normal(0, 4, int(disc.sum()))
        images[i, :, :, 0] = np.clip(image, 0, 255).astype(np.uint8)
    return images, labels


def write_multiclass_dataset(root: Path, *, counts: tuple[int, int, int] = (8, 4, 4), size: int = 32,
                             colour: bool = True, labels_json: bool = True) -> Path:
    """A tiny dataset of ``multiclass_arrays`` in the project's layout: RGB colour masks (MULTICLASS_COLOURS) with a
    labels.json, or (``colour`` False) grey index masks 0..3."""
    import cv2
    import numpy as np

    palette = np.array(list(MULTICLASS_COLOURS.values()), np.uint8)
    seed = 0
    for split, n in zip(("train", "valid", "test"), counts, strict=True):
        images, labels = multiclass_arrays(n, size=size, seed=seed)
        seed += 1
        for kind in ("images", "masks"):
            (root / split / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            stem = f"{split}_{i:03d}"
            cv2.imwrite(str(root / split / "images" / f"{stem}.png"), images[i, :, :, 0])
            mask = palette[labels[i]][:, :, ::-1] if colour else labels[i]  # RGB → BGR for OpenCV
            cv2.imwrite(str(root / split / "masks" / f"{stem}.png"), np.ascontiguousarray(mask))
    if labels_json:
        (root / "labels.json").write_text(json.dumps({"labels": MULTICLASS_COLOURS}))
    return root
