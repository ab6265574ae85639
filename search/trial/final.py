"""The final stage in its trial process: the chosen model and the baseline, tested on the same images.

The chosen model is the best trial's saved weights (holdout), the ensemble of its fold models
(k-fold: the mean of their probability maps, nnU-Net style), or a retrain of its specs on
train+valid for a fixed number of epochs (``final.train_on_valid``). Retraining the best trial on
the same data with the same seed would reproduce its weights (op determinism), so that is never
done. The baseline (trial 0: the reference values placed in the space) is tested the same way, per
image, for the verdict (``search/evaluation/verdict.py``, computed by the driver): with ``final.train_on_valid``
it is retrained on train+valid too (for its own epoch count), or the verdict would partly measure
the extra data the chosen model saw.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from data.labels import ClassMap
from search.results import atomic_write_json, write_history_csv
from search.results.images import save_predictions
from search.results.layout import BASELINE_HISTORY_CSV, MODEL_KERAS, PREDICTIONS_DIR, TEST_METRICS_JSON
from search.trial.fit import class_metrics, class_names, panel_colours
from search.trial.stop import StopSignal
from search.trial.task import ModelSource, TaskRun, TrialOutcome, TrialTask
from search.trial.training import evaluate_model, predict_probabilities, train_model
from search.vocabulary import TrialState

__all__ = ["FinalTask", "load_source"]

logger = logging.getLogger(__name__)


@dataclass
class FinalTask(TrialTask):
    """The final stage: ``model`` is tested (or, with ``fixed_epochs``, ``specs`` is retrained on train+valid
    first, replaying ``lr_schedule``), and ``baseline`` is tested on the same images for the verdict (with
    ``baseline_fixed_epochs``, its specs retrained on train+valid first, like the chosen model);
    ``candidates`` (the re-evaluated configurations' trial weights) are tested for the record only.
    """

    model: ModelSource | None = None
    fixed_epochs: int | None = None
    lr_schedule: tuple[float, ...] | None = None  # with fixed_epochs: each epoch's learning rate (replayed)
    baseline: ModelSource | None = None
    baseline_fixed_epochs: int | None = None
    baseline_lr_schedule: tuple[float, ...] | None = None  # with baseline_fixed_epochs: its trial's learning rates
    candidates: tuple[ModelSource, ...] = ()  # tested too, for the record (not for the pick)

    def train(self, run: TaskRun) -> TrialOutcome:
        return _final_stage(self, run.data, run.hook, run.out, run.stop, on_epoch=run.on_epoch)


def _final_stage(task: FinalTask, data: Any, hook: Any, out: Path, stop: StopSignal | None = None, *,
                 on_epoch: Any = None) -> TrialOutcome:
    """Test the chosen model (or retrain it first) and the baseline on the test split.

    ``hook`` records the chosen model's retrain epochs (``history.csv``); a retrained baseline's go to
    ``baseline_history.csv`` and to ``on_epoch`` (the driver: progress and Ctrl-C). ``stop`` is the
    run's deadline: a retrain cut short keeps its last completed epoch (``stopped_by_budget_after_epochs``).
    """
    valid, test = data.split("valid"), data.split("test")
    batch, loss = task.specs.train.batch_size, task.specs.train.loss
    extra: dict[str, Any] = {}
    if task.fixed_epochs is None:
        assert task.model is not None, "the final stage needs a model or fixed_epochs"
        model = load_source(task.model)
        best_epoch, epochs_run, train_s = -1, 0, 0.0
        source = "trial_weights" if len(task.model.weights) == 1 else f"ensemble_of_{len(task.model.weights)}_folds"
        if len(task.model.weights) == 1:  # a k-fold ensemble has seen the valid split
            extra["valid_score"] = evaluate_model(model, valid.images, valid.masks, batch_size=batch, loss=loss)["hard_dice"]
    else:
        result = _retrain(task.specs, task.fixed_epochs, data, lr_schedule=task.lr_schedule, hook=hook,
                          verbose=task.verbose, stop=stop)
        model, best_epoch, epochs_run, train_s = result.model, result.best_epoch, result.epochs_run, result.train_s
        # No held-out split is left: the last epoch's dice on augmented training batches, labelled so.
        extra["train_score_augmented"] = result.best_score
        source = "retrained_train_valid"
        if result.stop_reason == "budget":
            extra["stopped_by_budget_after_epochs"] = result.epochs_run
    metrics = evaluate_model(model, test.images, test.masks, batch_size=batch, loss=loss)
    metrics["per_image"]["stems"] = list(test.stems)
    name_classes(metrics, data.classes)
    metrics.update(extra, model_from=source, best_epoch=best_epoch)
    if task.baseline is not None:
        metrics["baseline"] = _test_baseline(task, data, out, on_epoch, stop)
    if task.candidates:  # after the pick: what each re-evaluated configuration scores on test, for the record
        metrics["candidates"] = []
        for cand in task.candidates:
            scored = evaluate_model(load_source(cand), test.images, test.masks, batch_size=batch,
                                    loss=cand.specs.train.loss)
            metrics["candidates"].append({"label": cand.label, "hard_dice": scored["hard_dice"],
                                          "per_image": scored["per_image"]["hard_dice"]})
    tmp = out / f".{MODEL_KERAS}.tmp.keras"
    model.save(str(tmp))
    tmp.replace(out / MODEL_KERAS)
    n = min(task.outputs.predictions, len(test.images))
    if n:
        prob = predict_probabilities(model, test.images[:n], batch_size=batch)
        save_predictions(out / PREDICTIONS_DIR, test.images[:n], test.masks[:n], prob, list(test.stems[:n]),
                         colours=panel_colours(data.classes, prob))
    atomic_write_json(out / TEST_METRICS_JSON, metrics)
    return TrialOutcome(
        status=TrialState.COMPLETE,
        score=metrics["hard_dice"],
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        train_s=train_s,
        metrics={**{k: v for k, v in metrics.items() if k not in ("per_image", "baseline", "candidates", "per_class",
                                                                   "class_dice")},
                 **class_metrics(metrics.get("class_dice", {}))},
    )


def _retrain(specs: Any, epochs: int, data: Any, *, lr_schedule: tuple[float, ...] | None, hook: Any,
             verbose: int, stop: StopSignal | None) -> Any:
    """Train ``specs`` on train+valid for exactly ``epochs`` epochs (no held-out split is left to stop on),
    replaying ``lr_schedule``, the per-epoch learning rates of the trial it retrains."""
    train, valid = data.split("train"), data.split("valid")
    return train_model(
        specs,
        train_images=np.concatenate([np.asarray(train.images), np.asarray(valid.images)]),
        train_masks=np.concatenate([np.asarray(train.masks), np.asarray(valid.masks)]),
        valid_images=valid.images,
        valid_masks=valid.masks,
        on_epoch=hook,
        fixed_epochs=epochs,
        lr_schedule=lr_schedule,
        verbose=verbose,
        stop=stop,
    )


def _test_baseline(task: FinalTask, data: Any, out: Path, on_epoch: Any, stop: StopSignal | None) -> dict[str, Any]:
    """The baseline's per-image test dice: its trial's weights, or (``baseline_fixed_epochs``) a retrain
    on train+valid like the chosen model's, so that the verdict compares like with like."""
    assert task.baseline is not None
    source = task.baseline
    stopped_after: int | None = None  # a retrain the deadline cut short: its epochs
    if task.baseline_fixed_epochs is None:
        model = load_source(source)
        model_from = "trial_weights" if len(source.weights) == 1 else f"ensemble_of_{len(source.weights)}_folds"
    else:
        history: list[dict[str, Any]] = []

        def hook(epoch: int, logs: dict[str, float]) -> None:
            history.append(logs)
            write_history_csv(out / BASELINE_HISTORY_CSV, history)
            if on_epoch is not None:
                on_epoch(epoch, logs)

        retrained = _retrain(source.specs, task.baseline_fixed_epochs, data, lr_schedule=task.baseline_lr_schedule,
                             hook=hook, verbose=task.verbose, stop=stop)
        model = retrained.model
        model_from = "retrained_train_valid"
        if retrained.stop_reason == "budget":
            stopped_after = retrained.epochs_run
    test = data.split("test")
    scored = evaluate_model(model, test.images, test.masks, batch_size=source.specs.train.batch_size,
                            loss=source.specs.train.loss)
    name_classes(scored, data.classes)
    return {"label": source.label, "hard_dice": scored["hard_dice"], "hard_iou": scored["hard_iou"],
            "per_image": scored["per_image"]["hard_dice"], "model_from": model_from,
            "epochs": task.baseline_fixed_epochs, "stopped_by_budget_after_epochs": stopped_after,
            **({"class_dice": scored["class_dice"]} if "class_dice" in scored else {})}


def name_classes(metrics: dict[str, Any], classes: ClassMap | None) -> None:
    """Several classes: each foreground class's test dice by name (``class_dice``) beside the per-class table."""
    per_class = metrics.get("per_class")
    if not per_class:
        return
    dice = per_class["hard_dice"]
    names = class_names(classes, len(dice))
    per_class["classes"] = list(names)
    metrics["class_dice"] = dict(zip(names, dice, strict=True))


def load_source(source: ModelSource) -> Any:
    """The model of ``source``: its weights in a freshly built model, or the mean of several (ensemble)."""
    import keras

    from models import build_model

    models = []
    for i, path in enumerate(source.weights):
        model = build_model(source.specs.model)
        with warnings.catch_warnings():  # the file holds the trial's optimizer state too; not needed to test
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(path)
        if len(source.weights) == 1:
            return model
        model.name = f"fold{i}"
        models.append(model)
    inputs = keras.Input(shape=models[0].input_shape[1:], dtype=models[0].inputs[0].dtype, name="image")
    mean = keras.layers.Average(name="fold_mean")([m(inputs) for m in models])
    return keras.Model(inputs, mean, name="kfold_ensemble")
