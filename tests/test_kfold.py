"""k-fold evaluation: patient-grouped folds, the k-fold trial (resume, fold pruning), the ensemble and the verdict."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import tiny_raw_config

from data import synthetic_arrays
from search.config import config_from_dict
from search.errors import ConfigError
from search.evaluation import fold_prune_reason, group_images, make_folds, mean_se
from search.specs import specs_from_values
from search.trial import ModelSource, TrialOutputs, TrialTask, run_task


def test_folds_keep_each_patient_in_one_fold_and_are_reproducible(tmp_path: Path) -> None:
    stems = [f"{p}_{i}" for p, n in (("1001", 3), ("1002", 5), ("1003", 7), ("1004", 2), ("1005", 4), ("1007", 6))
             for i in range(n)]
    groups, how = group_images(stems, "auto", k=3)
    assert how == "file-name prefix before _<index>" and groups["1003_4"] == "1003"
    plan = make_folds(groups, 3, seed=7, grouping=how)
    assert sorted(s for f in plan.folds for s in f) == sorted(stems)  # every image in exactly one fold
    for fold in plan.folds:
        patients = {groups[s] for s in fold}
        assert all(groups[s] not in patients for other in plan.folds if other is not fold for s in other)
    assert sorted(len(f) for f in plan.folds) == [9, 9, 9]  # balanced by image count: 7+2, 6+3, 5+4
    assert make_folds(groups, 3, seed=7, grouping=how) == plan
    with pytest.raises(ConfigError, match="7 folds need at least 7 patients .* has 6"):
        make_folds(groups, 7, seed=7, grouping=how)
    # split.csv from `data prepare` names the patients
    (tmp_path / "split.csv").write_text("patient,split\nP1,train\nP22,valid\n")
    groups, how = group_images(["P1_0001", "P1_0002", "P22_0001"], "auto", k=2, data_root=tmp_path)
    assert groups == {"P1_0001": "P1", "P1_0002": "P1", "P22_0001": "P22"} and "split.csv" in how
    # a stack without patient ids: contiguous blocks; a pattern that does not match: one line naming the image
    groups, how = group_images([f"slice{i:02d}" for i in range(9)], "auto", k=3)
    assert how.startswith("contiguous") and groups["slice00"] == groups["slice02"] != groups["slice03"]
    with pytest.raises(ConfigError, match="does not match image 'slice00'"):
        group_images(["slice00"], r"^(\d+)_", k=2)


def test_fold_pruning_is_a_paired_one_sided_test() -> None:
    ref = {f"i{n}": 0.8 for n in range(12)}
    worse = {k: 0.6 + 0.01 * n for n, k in enumerate(ref)}
    reason = fold_prune_reason(worse, ref, p_threshold=0.05, folds_done=2, k=5)
    assert reason is not None and "after fold 2 of 5" in reason and "12 images" in reason
    better = {k: 0.9 for k in ref}
    assert fold_prune_reason(better, ref, p_threshold=0.05, folds_done=2, k=5) is None
    assert fold_prune_reason(worse, ref, p_threshold=0.05, folds_done=1, k=5) is None  # one fold: never
    assert fold_prune_reason(worse, ref, p_threshold=0.0, folds_done=2, k=5) is None  # switched off
    few = dict(list(worse.items())[:4])
    assert fold_prune_reason(few, ref, p_threshold=0.05, folds_done=2, k=5) is None  # too few pairs
    mean, se = mean_se([0.5, 0.7])
    assert mean == pytest.approx(0.6) and se == pytest.approx(0.1)


def _data() -> Any:
    splits = {}
    for name, (n, seed) in {"train": (9, 1), "valid": (3, 2), "test": (4, 3)}.items():
        images, masks = synthetic_arrays(n=n, size=32, seed=seed)
        splits[name] = SimpleNamespace(images=images, masks=masks, stems=[f"{name}{i}" for i in range(n)])
    return SimpleNamespace(split=lambda name: splits[name])


def _task(out: Path, folds: tuple[tuple[str, ...], ...]) -> TrialTask:
    cfg = config_from_dict(tiny_raw_config(Path("unused"), train={"max_epochs": 2, "patience": 2}))
    values = {**cfg.fixed_values(), "base_filters": 4, "num_layers": 2, "learning_rate": 3e-3}
    return TrialTask(number=0, specs=specs_from_values(cfg, values, seed=5), out_dir=str(out), cache_path="",
                     outputs=TrialOutputs(predictions=0), folds=folds)


FOLDS = (("train0", "train1", "train2", "train3"), ("train4", "train5", "train6", "train7"),
         ("train8", "valid0", "valid1", "valid2"))


class _Killed(BaseException):
    pass


def test_a_kfold_trial_scores_out_of_fold_resumes_by_fold_and_feeds_an_ensemble(tmp_path: Path) -> None:
    data, out = _data(), tmp_path / "t"
    seen: list[tuple[int, float]] = []

    def killed_in_fold_1(epoch: int, logs: dict[str, float]) -> None:
        seen.append((int(logs["fold"]), epoch))
        if logs["fold"] == 1:
            raise _Killed

    with pytest.raises(_Killed):
        run_task(_task(out, FOLDS), data, killed_in_fold_1)
    assert (out / "fold0" / "fold.json").is_file() and not (out / "fold1" / "fold.json").exists()

    seen.clear()
    outcome = run_task(_task(out, FOLDS), data, lambda e, logs: seen.append((int(logs["fold"]), e)))
    assert outcome.status == "complete"
    assert seen == [(1, 1), (2, 0), (2, 1)]  # fold 0 not rerun; fold 1 from its checkpoint (epoch 0 done)
    per_image = json.loads((out / "scores.json").read_text())["per_image"]
    assert sorted(per_image) == sorted(s for f in FOLDS for s in f)  # every train+valid image, out of fold
    assert outcome.score == pytest.approx(np.mean(list(per_image.values())))
    assert outcome.score_se == pytest.approx(np.std(list(per_image.values()), ddof=1) / np.sqrt(12))
    assert outcome.metrics["folds_done"] == 3

    # a trial clearly worse than the reference on the same images stops after its second fold
    reference = {s: 1.0 for s in per_image}
    pruned = run_task(replace(_task(tmp_path / "p", FOLDS), fold_reference=reference, fold_prune_p=0.5), data,
                      lambda e, logs: None)
    assert pruned.status == "pruned" and "after fold 2 of 3" in pruned.reason
    assert not (tmp_path / "p" / "fold2").exists()

    # the final stage: the ensemble of the fold models, tested with the baseline on the same images
    task = _task(tmp_path / "final", FOLDS)
    weights = tuple(str(out / f"fold{f}" / "best.weights.h5") for f in range(3))
    final = run_task(replace(task, kind="final", folds=None, model=ModelSource(task.specs, weights),
                             baseline=ModelSource(task.specs, weights[:1], label="ref")), data, lambda e, logs: None)
    assert final.status == "complete", final.reason
    metrics = json.loads((tmp_path / "final" / "test_metrics.json").read_text())
    assert metrics["model_from"] == "ensemble_of_3_folds" and "valid_score" not in metrics
    assert len(metrics["baseline"]["per_image"]) == len(metrics["per_image"]["hard_dice"]) == 4
    import keras

    from search.final_task import load_source

    saved = keras.models.load_model(str(tmp_path / "final" / "model.keras"), compile=False)
    images = data.split("test").images
    members = [load_source(ModelSource(task.specs, (w,))) for w in weights]
    expected = np.mean([np.asarray(m(images, training=False)) for m in members], axis=0)
    np.testing.assert_allclose(np.asarray(saved(images, training=False)), expected, atol=1e-5)
