"""A k-fold trial in its trial process: one model per fold of train+valid, scored out of fold.

Each fold lives in ``trials/<n>/fold<f>/`` (checkpoint, ``best.weights.h5``, ``scores.json``,
``fold.json`` once finished), so a killed trial resumes in the fold it was in, after the folds it
had finished. The trial's score is the mean per-image hard dice over every out-of-fold image, with
its standard error (counting patients when the task knows them); epochs of the first fold are what the engine's pruner sees; after each later
fold, the paired test of :func:`search.evaluation.fold_prune_reason` may stop the trial.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.labels import ClassMap
from search.config.specs import derived_seed
from search.evaluation import Units, fold_prune_reason, mean_se
from search.results import atomic_write_json, read_json
from search.results.layout import FOLD_FILE, SCORES_FILE, fold_dir
from search.trial.fit import class_metrics, class_table_means, fit_and_score
from search.trial.stop import StopSignal
from search.trial.task import TaskRun, TrialOutcome, TrialTask
from search.vocabulary import TrialState

__all__ = ["KFoldTask"]

logger = logging.getLogger(__name__)


@dataclass
class KFoldTask(TrialTask):
    """One configuration trained once per fold of train+valid and scored out of fold (module docstring).

    ``folds``: the validation stems of each fold (the study's folds.json); ``fold_reference``: the best
    complete trial's per-image out-of-fold dice, for fold pruning at ``fold_prune_p``.
    """

    folds: tuple[tuple[str, ...], ...] = ()
    fold_reference: dict[str, float] | None = None
    fold_prune_p: float = 0.0

    def train(self, run: TaskRun) -> TrialOutcome:
        if len(self.folds) < 2:
            raise ValueError(f"KFoldTask: expected at least 2 folds. Received: {len(self.folds)}")
        return _run_folds(self, run.data, run.hook, run.out, run.history, run.stop)


def _run_folds(task: KFoldTask, data: Any, hook: Any, out: Path, history: list[dict[str, Any]],
               stop: StopSignal | None) -> TrialOutcome:
    # A fold cut short by the deadline would be scored with fewer epochs than the others: the trial
    # stays resumable instead (it continues in that fold in the next run).
    stop = dataclasses.replace(stop, finish_judged=False) if stop is not None else None
    train, valid = data.split("train"), data.split("valid")
    images = np.concatenate([np.asarray(train.images), np.asarray(valid.images)])
    masks = np.concatenate([np.asarray(train.masks), np.asarray(valid.masks)])
    index = {stem: i for i, stem in enumerate([*train.stems, *valid.stems])}
    missing = sorted({s for fold in task.folds for s in fold} - set(index))
    if missing:
        raise ValueError(f"folds.json names images that are not in train+valid: {', '.join(missing[:5])}")
    k = len(task.folds)
    per_image: dict[str, float] = {}
    per_class: dict[str, list[float | None]] = {}
    best_epochs: list[int] = []
    epochs_run, train_s = 0, 0.0
    for f, val_stems in enumerate(task.folds):
        fdir = fold_dir(out, f)
        done = fdir / FOLD_FILE
        if done.is_file():  # finished before a restart
            meta = read_json(done)
            # Restored rows carry no "score": their seconds count as earlier segments (trial.py).
            history.extend({k_: v for k_, v in row.items() if k_ != "score"} for row in meta["history"])
        else:
            meta = _run_fold(task, f, images, masks, index, val_stems, hook, fdir, history, stop, data.classes)
            atomic_write_json(done, meta)
        per_image.update(meta["per_image"])
        per_class.update(meta.get("per_class") or {})
        best_epochs.append(int(meta["best_epoch"]))
        epochs_run += int(meta["epochs_run"])
        train_s += float(meta["train_s"])
        score, se = mean_se(list(per_image.values()), (task.units or Units()).labels(list(per_image)))
        logger.info("trial %d fold %d/%d: %.4f (out of fold so far %.4f ± %s)", task.number, f + 1, k,
                    meta["score"], score, f"{se:.4f}" if se is not None else "?")
        reason = fold_prune_reason(per_image, task.fold_reference, p_threshold=task.fold_prune_p,
                                   folds_done=f + 1, k=k, units=task.units)
        if reason is not None:
            return _outcome(TrialState.PRUNED, per_image, best_epochs, epochs_run, train_s, out, k, reason=reason,
                            units=task.units, class_dice=class_table_means(per_class, data.classes), per_class=per_class)
    return _outcome(TrialState.COMPLETE, per_image, best_epochs, epochs_run, train_s, out, k, units=task.units,
                    class_dice=class_table_means(per_class, data.classes), per_class=per_class)


def _run_fold(task: KFoldTask, f: int, images: np.ndarray, masks: np.ndarray, index: dict[str, int],
              val_stems: tuple[str, ...], hook: Any, fdir: Path, history: list[dict[str, Any]],
              stop: StopSignal | None, classes: ClassMap | None = None) -> dict[str, Any]:
    val_idx = [index[s] for s in val_stems]
    held = set(val_idx)
    train_idx = [i for i in range(len(images)) if i not in held]
    # A fold's own seed: the folds of one trial are independent runs of one configuration.
    seed = derived_seed(task.specs.train.seed, "fold", f)
    specs = dataclasses.replace(task.specs, train=dataclasses.replace(task.specs.train, seed=seed))
    fold_task = dataclasses.replace(task, specs=specs)
    start = len(history)

    def fold_hook(epoch: int, logs: dict[str, float]) -> None:
        hook(epoch, {**logs, "fold": float(f)})

    fdir.mkdir(parents=True, exist_ok=True)
    fit = fit_and_score(fold_task, fdir, fold_hook, history, train=(images[train_idx], masks[train_idx]),
                        valid=(images[val_idx], masks[val_idx], list(val_stems)), stop=stop, classes=classes)
    r = fit.result
    return {"fold": f, "score": r.best_score, "best_epoch": r.best_epoch, "epochs_run": r.epochs_run,
            "train_s": r.train_s, "per_image": fit.per_image, "per_class": fit.per_class, "history": history[start:]}


def _outcome(status: TrialState, per_image: dict[str, float], best_epochs: list[int], epochs_run: int,
             train_s: float, out: Path, k: int, *, reason: str = "", units: Units | None = None,
             class_dice: dict[str, float | None] | None = None,
             per_class: dict[str, list[float | None]] | None = None) -> TrialOutcome:
    units = units or Units()
    score, se = mean_se(list(per_image.values()), units.labels(list(per_image)))
    class_dice = class_dice or {}
    extra = {"classes": list(class_dice), "class_dice": class_dice, "per_class": per_class} if class_dice else {}
    atomic_write_json(out / SCORES_FILE, {"metric": "hard_dice", "per_image": per_image, "folds_done": len(best_epochs),
                                          **extra, **units.describe(list(per_image))})
    return TrialOutcome(
        status=status,
        score=score,
        score_se=se,
        best_epoch=int(statistics.median_low(best_epochs)),
        epochs_run=epochs_run,
        train_s=train_s,
        reason=reason,
        metrics={"folds": k, "folds_done": len(best_epochs), "fold_best_epochs": " ".join(map(str, best_epochs)),
                 **class_metrics(class_dice)},
    )
