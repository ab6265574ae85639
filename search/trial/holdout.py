"""A holdout trial in its trial process: train on the train split, score on the valid split."""

from __future__ import annotations

from dataclasses import dataclass

from search.trial.fit import class_metrics, fit_and_score
from search.trial.stop import BUDGET_STOP
from search.trial.task import TaskRun, TrialOutcome, TrialTask
from search.vocabulary import TrialState

__all__ = ["HoldoutTask"]


@dataclass
class HoldoutTask(TrialTask):
    """One configuration trained on the train split with early stopping, scored on the valid split."""

    def train(self, run: TaskRun) -> TrialOutcome:
        train, valid = run.data.split("train"), run.data.split("valid")
        fit = fit_and_score(self, run.out, run.hook, run.history, train=(train.images, train.masks),
                            valid=(valid.images, valid.masks, list(valid.stems)), stop=run.stop,
                            classes=run.data.classes)
        result = fit.result
        reason = ""
        if result.stop_reason == "budget":
            reason = (f"{BUDGET_STOP}the deadline stopped it during epoch {result.epochs_run}; "
                      f"its best epoch ({result.best_epoch}) is kept")
        return TrialOutcome(
            status=TrialState.COMPLETE,
            score=result.best_score,
            score_se=fit.se,
            best_epoch=result.best_epoch,
            epochs_run=result.epochs_run,
            train_s=result.train_s,
            reason=reason,
            metrics={"stop_reason": result.stop_reason, **class_metrics(fit.class_dice)},
        )
