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
    return SimpleNamespace(split=lambda name: splits[name])


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
