"""Seeds derived for one use (k-fold folds) never coincide with another run's seed (review §14)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import search.trial.kfold as kfold
from data import AugmentSpec
from models import UNetSpec
from search.config.specs import TrainSpec, TrialSpecs, derived_seed, trial_seed
from search.trial.task import TrialTask


def _fold_seeds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, trial_seed_: int, k: int) -> list[int]:
    """The seed each fold of a k-fold trial trains with (fit_and_score replaced by a recorder)."""
    seen: list[int] = []

    def record(task: TrialTask, *args: Any, **kwargs: Any) -> Any:
        seen.append(task.specs.train.seed)
        return SimpleNamespace(result=SimpleNamespace(best_score=0.5, best_epoch=0, epochs_run=1, train_s=0.0),
                               per_image={}, per_class={})

    monkeypatch.setattr(kfold, "fit_and_score", record)
    specs = TrialSpecs(model=UNetSpec.tiny(), augment=AugmentSpec.none(), train=TrainSpec(seed=trial_seed_))
    task = kfold.KFoldTask(number=0, specs=specs, out_dir=str(tmp_path), cache_path="")
    images, masks = np.zeros((2 * k, 4, 4, 1), np.uint8), np.zeros((2 * k, 4, 4), np.uint8)
    index = {f"s{i}": i for i in range(2 * k)}
    for f in range(k):
        kfold._run_fold(task, f, images, masks, index, (f"s{2 * f}", f"s{2 * f + 1}"), lambda *a: None,
                        tmp_path / f"fold{f}", [], None)
    return seen


def test_a_trials_fold_seeds_are_no_other_trials_seed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With seed + f, trial n's fold 1 trained with trial n+1's seed (fold 0): the same initialisation and
    augmentation streams in two runs that the folds' comparison treats as independent."""
    study_seed, k = 137, 5
    trial_seeds = {trial_seed(study_seed, n) for n in range(200)}
    for n in (0, 1, 57):
        folds = _fold_seeds(monkeypatch, tmp_path / str(n), trial_seed(study_seed, n), k)
        assert len(folds) == k and len(set(folds)) == k
        assert not set(folds) & trial_seeds
        assert all(0 <= s < 2**31 - 1 for s in folds)


def test_derived_seeds_depend_on_every_part() -> None:
    base = derived_seed(5, "fold", 1)
    assert base == derived_seed(5, "fold", 1)  # deterministic
    assert len({base, derived_seed(6, "fold", 1), derived_seed(5, "fold", 2), derived_seed(5, "other", 1),
                derived_seed(5, "fold", 1, 0), derived_seed(5 + 2**32, "fold", 1)}) == 6
