"""The final stage's train_on_valid retrain: the driver hands it the chosen trial's learning rates."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import yaml
from fake_study import build_study

from search.config import config_from_dict
from search.results import write_history_csv
from search.study.final import _final_task


def test_train_on_valid_replays_the_chosen_trials_learning_rates(tmp_path: Path) -> None:
    """The best trial's reducer fired before its best epoch: the retrain gets those rates (review §10a)."""
    study = build_study(tmp_path / "results", final=False, predictions=False)
    cfg = config_from_dict(yaml.safe_load(study.study_yaml.read_text()))
    cfg = dataclasses.replace(cfg, final=dataclasses.replace(cfg.final, train_on_valid=True))
    best = study.best_trial()
    assert best is not None and best.best_epoch == 2
    lrs = [1e-3, 3e-4, 9e-5]
    rows = study.read_history(best.number)
    write_history_csv(study.trial_dir(best.number) / "history.csv",
                      [{**row, "lr": lr} for row, lr in zip(rows, lrs, strict=True)])
    task = _final_task(study, cfg, SimpleNamespace(cache_path="unused"), best, None, 0)
    assert task.fixed_epochs == 3 and task.lr_schedule == tuple(lrs)
    (study.trial_dir(best.number) / "best.weights.h5").touch()  # testing the trial's weights instead
    held = _final_task(study, dataclasses.replace(cfg, final=dataclasses.replace(cfg.final, train_on_valid=False)),
                       SimpleNamespace(cache_path="unused"), best, None, 0)
    assert held.fixed_epochs is None and held.lr_schedule is None
