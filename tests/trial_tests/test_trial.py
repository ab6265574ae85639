"""One trial in-process (search/trial/task.py run_task): pruned and resumed outcomes are recorded truthfully."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_raw_config
from tiny import Killed, holdout_task, trial_data

from search.config import config_from_dict
from search.errors import TrialPruned
from search.trial.task import EpochReport, ModelSource, TrialTask, run_task


def test_a_pruned_trial_keeps_its_best_score(tmp_path: Path) -> None:
    seen: list[dict[str, float]] = []

    def prune_at_3(epoch: int, logs: dict[str, float]) -> None:
        seen.append(logs)
        if epoch == 3:
            raise TrialPruned("pruned after epoch 3")

    outcome = run_task(holdout_task(tmp_path / "t"), trial_data(), prune_at_3)
    assert outcome.status == "pruned" and outcome.reason == "pruned after epoch 3"
    assert outcome.epochs_run == 4
    assert outcome.score == pytest.approx(max(h["score"] for h in seen))
    # its training seconds are the epochs it ran (trials.csv, the anytime view, the fidelity shares)
    assert outcome.train_s == pytest.approx(sum(h["epoch_s"] for h in seen)) and outcome.train_s > 0
    # what the pruner was shown is the running best, so pruned trials agree with trials.csv
    assert [h["best_score"] for h in seen] == list(np.maximum.accumulate([h["score"] for h in seen]))
    assert not (tmp_path / "t" / "checkpoint").exists()
    # the best epoch's model is kept (the verdict may test a pruned baseline): its per-image dice
    # average to the best score the trial was recorded with
    import json

    scores = json.loads((tmp_path / "t" / "scores.json").read_text())["per_image"]
    assert (tmp_path / "t" / "best.weights.h5").is_file() and len(scores) == 8
    assert np.mean(list(scores.values())) == pytest.approx(outcome.score, abs=1e-5)


def test_a_resumed_trial_that_is_then_pruned_is_recorded_pruned(tmp_path: Path) -> None:
    """Rows restored from the checkpoint carry no "score": this used to crash the worker (KeyError)."""
    out = tmp_path / "t"
    first: list[dict[str, float]] = []

    def killed_after_2(epoch: int, logs: dict[str, float]) -> None:
        first.append(logs)
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        run_task(holdout_task(out), trial_data(), killed_after_2)
    assert (out / "checkpoint" / "state.json").is_file()

    def prune_now(epoch: int, logs: dict[str, float]) -> None:
        assert epoch == 2  # resumed after the two checkpointed epochs
        raise TrialPruned("pruned after epoch 2")

    outcome = run_task(holdout_task(out), trial_data(), prune_now)
    assert outcome.status == "pruned", outcome.reason
    assert outcome.epochs_run == 3
    # the duration covers the segment before the kill too, not only the resumed one
    assert outcome.duration_s > sum(h["epoch_s"] for h in first)
    assert outcome.train_s > sum(h["epoch_s"] for h in first)  # both segments' epochs
    assert outcome.score is not None and outcome.score >= max(h["score"] for h in first)


def test_the_pruner_sees_the_running_best_and_only_judgeable_epochs(tmp_path: Path) -> None:
    """TrialExecutor's per-epoch decision: warm-up/zero-score epochs skip the pruner; a dip is not reported."""
    from search.results import StudyDir
    from search.study.dataset import PreparedData
    from search.study.executor import TrialExecutor
    from search.study.progress import Progress
    from search.trial.task import TrialOutcome

    epochs = [  # (judgeable, this epoch's score, running best)
        (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (1.0, 0.6, 0.6), (1.0, 0.2, 0.6), (1.0, 0.7, 0.7)]
    answers: list[str] = []

    class Pool:
        stop_requested = 0

        def run(self, task: TrialTask, decide: Any) -> TrialOutcome:
            for epoch, (judgeable, score, best) in enumerate(epochs):
                answers.append(decide(EpochReport.of(epoch, {"judgeable": judgeable, "score": score,
                                                             "best_score": best})))
            return TrialOutcome(status="complete", score=0.7, best_epoch=4, epochs_run=5)

    cfg = config_from_dict(tiny_raw_config(Path("unused")))
    study = StudyDir(tmp_path / "study")
    study.root.mkdir()
    execute = TrialExecutor(cfg, study, PreparedData(cache_path="", fingerprint={}), Pool(),  # type: ignore[arg-type]
                            Progress(total=1, enabled=False), deadline=None)
    asked: list[tuple[int, float]] = []

    reported: list[tuple[int, float]] = []

    def should_prune(epoch: int, value: float, ask: bool) -> bool:
        reported.append((epoch, value))
        if ask:
            asked.append((epoch, value))
        return ask and epoch == 3

    rec = execute(0, {"base_filters": 4, "num_layers": 2, "learning_rate": 3e-3}, baseline=False,
                  should_prune=should_prune)
    assert reported == [(0, 0.0), (1, 0.0), (2, 0.6), (3, 0.6), (4, 0.7)]  # every epoch, as the running best
    assert asked == [(2, 0.6), (3, 0.6), (4, 0.7)]  # the pruner only where the trial may be judged
    assert answers == ["continue", "continue", "continue", "prune", "continue"]
    assert rec.status == "complete"


def test_the_final_stage_tests_the_trial_weights_or_labels_a_retrain_for_what_it_is(tmp_path: Path) -> None:
    import json

    from conftest import final_task_of

    data = trial_data()
    trial = run_task(holdout_task(tmp_path / "trial", epochs=3), data, lambda e, logs: None)
    assert trial.status == "complete"
    weights = tmp_path / "trial" / "best.weights.h5"

    task = holdout_task(tmp_path / "final")
    final = run_task(final_task_of(task, model=ModelSource(task.specs, (str(weights),))), data,
                     lambda e, logs: None)
    metrics = json.loads((tmp_path / "final" / "test_metrics.json").read_text())
    assert final.status == "complete" and final.epochs_run == 0  # nothing trained again
    assert metrics["model_from"] == "trial_weights"
    assert metrics["valid_score"] == pytest.approx(trial.score, abs=1e-5)  # the very model the trial scored

    retrain = run_task(final_task_of(holdout_task(tmp_path / "retrain"), fixed_epochs=2), data,
                       lambda e, logs: None)
    metrics = json.loads((tmp_path / "retrain" / "test_metrics.json").read_text())
    assert retrain.status == "complete" and retrain.epochs_run == 2
    assert metrics["model_from"] == "retrained_train_valid"
    assert "valid_score" not in metrics and "train_score_augmented" in metrics  # no held-out split was left


def test_a_crashed_trial_keeps_its_whole_traceback(tmp_path: Path) -> None:
    def crash(epoch: int, logs: dict[str, float]) -> None:
        raise RuntimeError("boom\nsecond line of the message")

    outcome = run_task(holdout_task(tmp_path / "t", epochs=2), trial_data(), crash)
    assert outcome.status == "failed" and outcome.reason == "RuntimeError: boom"  # one line in trials.csv
    text = (tmp_path / "t" / "traceback.txt").read_text()
    assert "Traceback (most recent call last)" in text and "in crash" in text and "second line" in text


def test_the_epoch_report_reads_the_control_values_of_a_history_row() -> None:
    """Issue 21.4: the driver reads an EpochReport's fields, never the row's keys."""
    row = {"epoch": 3.0, "loss": 0.4, "val_hard_dice": 0.31, "score": 0.31, "best_score": 0.52, "judgeable": 0.0,
           "fold": 2.0}
    report = EpochReport.of(3, row)
    assert (report.epoch, report.score, report.best_score, report.judgeable, report.fold) == (3, 0.31, 0.52, False, 2)
    assert report.logs == row and report.logs is not row  # the row travels whole, as a copy
    restored = EpochReport.of(0, {"epoch": 0.0, "val_hard_dice": 0.2})  # a checkpoint's row: no hook keys
    assert (restored.score, restored.best_score, restored.judgeable, restored.fold) == (0.2, 0.2, True, 0)
