"""k-fold evaluation: patient-grouped folds, the k-fold trial (resume, fold pruning), the ensemble and the verdict."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import final_task_of, tiny_raw_config
from tiny import trial_data

from search.config import config_from_dict
from search.config.specs import specs_from_values
from search.errors import ConfigError
from search.evaluation import Units, fold_prune_reason, group_images, image_units, make_folds, mean_se
from search.study.dataset import PreparedData, fold_plan
from search.trial.holdout import HoldoutTask
from search.trial.kfold import KFoldTask
from search.trial.task import ModelSource, TrialOutputs, TrialTask, run_task


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


def test_fold_pruning_is_exact_counts_non_zero_units_and_spends_alpha_over_the_looks() -> None:
    # review §11a: 4 worse images among 10 ties; SciPy's normal approximation gave p = 0.034 and pruned.
    ref = {f"i{n:02d}": 0.8 for n in range(14)}
    ties = {k: (0.7 - 0.01 * n if n < 4 else 0.8) for n, k in enumerate(ref)}
    assert fold_prune_reason(ties, ref, p_threshold=0.05, folds_done=2, k=3) is None  # 4 non-zero: too few
    # 7 differences, the smallest one positive: exact one-sided p = P(W+ <= 1) = 2/128 = 0.0156;
    # W+ = 3 (the third smallest positive): 5/128 = 0.039
    ref7 = {f"i{n}": 0.8 for n in range(7)}
    mild = {f"i{n}": 0.8 + d for n, d in enumerate([-0.01, -0.02, 0.03, -0.04, -0.05, -0.06, -0.07])}
    reason = fold_prune_reason(mild, ref7, p_threshold=0.05, folds_done=2, k=3)  # one look: p < 0.05
    assert reason is not None and "p = 0.0391" in reason
    # five folds: looks after folds 2, 3 and 4, each at 0.05 / 3
    assert fold_prune_reason(mild, ref7, p_threshold=0.05, folds_done=2, k=5) is None
    strong = {f"i{n}": 0.8 + d for n, d in enumerate([0.01, -0.02, -0.03, -0.04, -0.05, -0.06, -0.07])}
    reason = fold_prune_reason(strong, ref7, p_threshold=0.05, folds_done=3, k=5)
    assert reason is not None and "p = 0.0156" in reason and "0.0167" in reason


def test_fold_pruning_counts_patients_not_slices() -> None:
    # 2 patients x 10 slices, all clearly worse: 20 "pairs", but two independent units only
    stems = [f"p{p}_{i:02d}" for p in range(2) for i in range(10)]
    ref = dict.fromkeys(stems, 0.8)
    worse = {s: 0.6 - 0.001 * i for i, s in enumerate(stems)}
    units = Units(patients={s: s[:2] for s in stems}, grouping="file-name prefix before _<index>")
    assert fold_prune_reason(worse, ref, p_threshold=0.05, folds_done=2, k=3) is not None  # slices as units
    assert fold_prune_reason(worse, ref, p_threshold=0.05, folds_done=2, k=3, units=units) is None
    # 8 patients, all worse: pruned, and the reason counts them
    stems8 = [f"p{p}_{i:02d}" for p in range(8) for i in range(3)]
    units8 = Units(patients={s: s[:2] for s in stems8}, grouping="file-name prefix before _<index>")
    reason = fold_prune_reason({s: 0.6 for s in stems8}, dict.fromkeys(stems8, 0.8), p_threshold=0.05,
                               folds_done=2, k=3, units=units8)
    assert reason is not None and "24 images from 8 patients" in reason


def test_standard_errors_count_patients() -> None:
    # two patients, five slices each, scoring 0.9 and 0.5: the se of the mean of two patients, not of ten slices
    values = [0.9] * 5 + [0.5] * 5
    _, se_images = mean_se(values)
    _, se_patients = mean_se(values, ["a"] * 5 + ["b"] * 5)
    assert se_images == pytest.approx(np.std(values, ddof=1) / np.sqrt(10))
    assert se_patients == pytest.approx(np.std([0.9, 0.5], ddof=1) / np.sqrt(2))  # 0.2, three times larger
    assert mean_se([0.9, 0.8], ["a", "a"])[1] is None  # one patient: no standard error
    # unequal patients: the cluster-robust se of the image mean (each image its own unit: the plain se)
    x = np.array([0.2, 0.4, 0.9, 0.7, 0.75, 0.8])
    assert mean_se(x, [str(i) for i in range(6)])[1] == pytest.approx(x.std(ddof=1) / np.sqrt(6))


def test_units_come_from_the_patient_rule_or_are_images(tmp_path: Path) -> None:
    stems = [f"{p}_{i:04d}" for p in ("1001", "1002", "1003") for i in range(4)]
    units = image_units(stems, "auto", data_root=None)
    assert units.noun == "patients" and units.labels(["1002_0003", "1001_0000"]) == ["1002", "1001"]
    assert units.describe(stems) == {"unit": "patients", "n_units": 3, "grouping": units.grouping}
    # one shared prefix is a naming scheme, not a patient (the synthetic set: phantom_0000 …)
    plain = image_units([f"phantom_{i:04d}" for i in range(9)], "auto", data_root=None)
    assert plain.noun == "images" and plain.labels(["phantom_0001"]) is None
    assert image_units(stems, "none", data_root=None).noun == "images"
    assert image_units(stems, "contiguous", data_root=None).noun == "images"
    assert image_units(stems, r"^(\d+)_", data_root=None).labels(["1003_0001"]) == ["1003"]


def test_a_patient_rule_with_fewer_patients_than_folds_is_an_error_not_contiguous_blocks(tmp_path: Path) -> None:
    # review §6a: 4 patients x 10 slices and 5 folds were cut into contiguous blocks that split patients
    stems = [f"pat{p}_{i:02d}" for p in range(4) for i in range(10)]
    data = PreparedData(cache_path="", fingerprint={}, stems={"train": tuple(stems[:30]), "valid": tuple(stems[30:]),
                                                             "test": ()})
    cfg = config_from_dict(tiny_raw_config(tmp_path, study={"evaluation": "kfold", "folds": 5}))
    with pytest.raises(ConfigError) as e:
        fold_plan(cfg, data, tmp_path)
    message = str(e.value)
    assert "\n" not in message and message.startswith("study.folds: 5 folds need at least 5 patients")
    assert "has 4" in message and "lower study.folds to 4" in message and "study.groups" in message
    assert not (tmp_path / "folds.json").exists()
    # the same with a regular expression, and with split.csv
    cfg = config_from_dict(tiny_raw_config(tmp_path, study={"evaluation": "kfold", "folds": 5, "groups": r"^(pat\d)_"}))
    with pytest.raises(ConfigError, match="has 4"):
        fold_plan(cfg, data, tmp_path)
    (tmp_path / "split.csv").write_text("patient,split\npat0,train\npat1,train\npat2,train\npat3,valid\n")
    cfg = config_from_dict(tiny_raw_config(tmp_path, study={"evaluation": "kfold", "folds": 5}))
    with pytest.raises(ConfigError, match="has 4 .*split.csv"):
        fold_plan(cfg, data, tmp_path)
    # asked for: contiguous blocks of a stack
    cfg = config_from_dict(tiny_raw_config(tmp_path, study={"evaluation": "kfold", "folds": 5, "groups": "contiguous"}))
    assert fold_plan(cfg, data, tmp_path) is not None


def _data() -> Any:
    return trial_data(train=9, valid=3, test=4)


FOLDS = (("train0", "train1", "train2", "train3"), ("train4", "train5", "train6", "train7"),
         ("train8", "valid0", "valid1", "valid2"))
# two images per patient, each patient inside one fold
UNITS = Units(patients={s: f"pt{i // 2}" for i, s in enumerate(s for f in FOLDS for s in f)}, grouping="test pairs")


def _task(out: Path, folds: tuple[tuple[str, ...], ...] | None) -> TrialTask:
    cfg = config_from_dict(tiny_raw_config(Path("unused"), train={"max_epochs": 2, "patience": 2}))
    values = {**cfg.fixed_values(), "base_filters": 4, "num_layers": 2, "learning_rate": 3e-3}
    common: dict[str, Any] = dict(number=0, specs=specs_from_values(cfg, values, seed=5), out_dir=str(out),
                                  cache_path="", outputs=TrialOutputs(predictions=0), units=UNITS)
    return KFoldTask(**common, folds=folds) if folds is not None else HoldoutTask(**common)


def _cluster_se(per_image: dict[str, float]) -> float:
    """The standard error of the image mean with the images of one patient as one unit (by hand)."""
    v = np.array(list(per_image.values()))
    labels = UNITS.labels(list(per_image))
    assert labels is not None
    sums: dict[str, float] = {}
    for label, e in zip(labels, v - v.mean(), strict=True):
        sums[label] = sums.get(label, 0.0) + e
    g = len(sums)
    return float(np.sqrt(g / (g - 1) * sum(x * x for x in sums.values())) / v.size)


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
    assert outcome.score_se == pytest.approx(_cluster_se(per_image))  # 6 patients of 2 images, not 12 images
    assert json.loads((out / "scores.json").read_text())["n_units"] == 6
    assert outcome.metrics["folds_done"] == 3

    # a trial clearly worse than the reference on the same images stops after its second fold
    reference = {s: 1.0 for s in per_image}
    pruned = run_task(replace(_task(tmp_path / "p", FOLDS), fold_reference=reference, fold_prune_p=0.5, units=None),
                      data, lambda e, logs: None)
    assert pruned.status == "pruned" and "after fold 2 of 3" in pruned.reason
    assert not (tmp_path / "p" / "fold2").exists()

    # ... but not when its 8 images come from 4 patients: too few units to tell
    kept = run_task(replace(_task(tmp_path / "q", FOLDS), fold_reference=reference, fold_prune_p=0.5), data,
                    lambda e, logs: None)
    assert kept.status == "complete"

    # a holdout trial's score_se counts patients too (the valid split: valid0 with train8, valid1 with valid2)
    holdout = run_task(_task(tmp_path / "h", None), data, lambda e, logs: None)
    scores = json.loads((tmp_path / "h" / "scores.json").read_text())
    assert holdout.score_se == pytest.approx(_cluster_se(scores["per_image"]))
    assert (scores["unit"], scores["n_units"], scores["grouping"]) == ("patients", 2, "test pairs")

    # the final stage: the ensemble of the fold models, tested with the baseline on the same images
    task = _task(tmp_path / "final", FOLDS)
    weights = tuple(str(out / f"fold{f}" / "best.weights.h5") for f in range(3))
    final = run_task(final_task_of(task, model=ModelSource(task.specs, weights),
                             baseline=ModelSource(task.specs, weights[:1], label="ref")), data, lambda e, logs: None)
    assert final.status == "complete", final.reason
    metrics = json.loads((tmp_path / "final" / "test_metrics.json").read_text())
    assert metrics["model_from"] == "ensemble_of_3_folds" and "valid_score" not in metrics
    assert len(metrics["baseline"]["per_image"]) == len(metrics["per_image"]["hard_dice"]) == 4
    import keras

    from search.trial.final import load_source

    saved = keras.models.load_model(str(tmp_path / "final" / "model.keras"), compile=False)
    images = data.split("test").images
    members = [load_source(ModelSource(task.specs, (w,))) for w in weights]
    expected = np.mean([np.asarray(m(images, training=False)) for m in members], axis=0)
    np.testing.assert_allclose(np.asarray(saved(images, training=False)), expected, atol=1e-5)


def test_a_groups_rule_that_does_not_fit_every_split_stops_the_run_before_the_study_exists(
    tmp_path: Path, synthetic_root: Path, capsys: pytest.CaptureFixture
) -> None:
    # holdout too: the statistics count patients, so study.groups must hold for every split's names
    import yaml

    from search.cli import main

    raw = tiny_raw_config(synthetic_root, study={"name": "g", "groups": r"^(case\d+)_"})
    config = tmp_path / "g.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["--results", str(tmp_path / "results"), "run", "--config", str(config)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "study.groups: pattern" in errors[0] and "'phantom_0000'" in errors[0]
    assert not (tmp_path / "results" / "g").exists()
