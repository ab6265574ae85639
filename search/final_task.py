"""The final stage in its trial process: the chosen model and the baseline, tested on the same images.

The chosen model is the best trial's saved weights (holdout), the ensemble of its fold models
(k-fold: the mean of their probability maps, nnU-Net style), or a retrain of its specs on
train+valid for a fixed number of epochs (``final.train_on_valid``). Retraining the best trial on
the same data with the same seed would reproduce its weights (op determinism), so that is never
done. The baseline (the reference configuration's trial) is tested the same way, per image, for
the verdict (``search/verdict.py``, computed by the driver).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from search.budget import StopSignal
from search.results import atomic_write_json
from search.trial import ModelSource, TrialOutcome, TrialTask
from search.vocabulary import TrialState

__all__ = ["load_source", "run_final_task"]

logger = logging.getLogger(__name__)


def run_final_task(task: TrialTask, data: Any, hook: Any, out: Path, stop: StopSignal | None = None) -> TrialOutcome:
    from search.overlays import save_predictions
    from search.training import evaluate_model, predict_probabilities, train_model

    train, valid, test = data.split("train"), data.split("valid"), data.split("test")
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
        result = train_model(
            task.specs,
            train_images=np.concatenate([np.asarray(train.images), np.asarray(valid.images)]),
            train_masks=np.concatenate([np.asarray(train.masks), np.asarray(valid.masks)]),
            valid_images=valid.images,
            valid_masks=valid.masks,
            on_epoch=hook,
            fixed_epochs=task.fixed_epochs,
            verbose=task.verbose,
            stop=stop,  # the run's deadline: a retrain cut short keeps its last completed epoch
        )
        model, best_epoch, epochs_run, train_s = result.model, result.best_epoch, result.epochs_run, result.train_s
        # No held-out split is left: the last epoch's dice on augmented training batches, labelled so.
        extra["train_score_augmented"] = result.best_score
        source = "retrained_train_valid"
        if result.stop_reason == "budget":
            extra["stopped_by_budget_after_epochs"] = result.epochs_run
    metrics = evaluate_model(model, test.images, test.masks, batch_size=batch, loss=loss)
    metrics["per_image"]["stems"] = list(test.stems)
    metrics.update(extra, model_from=source, best_epoch=best_epoch)
    if task.baseline is not None:
        base = evaluate_model(load_source(task.baseline), test.images, test.masks, batch_size=batch,
                              loss=task.baseline.specs.train.loss)
        metrics["baseline"] = {"label": task.baseline.label, "hard_dice": base["hard_dice"],
                               "hard_iou": base["hard_iou"], "per_image": base["per_image"]["hard_dice"]}
    if task.candidates:  # after the pick: what each re-evaluated configuration scores on test, for the record
        metrics["candidates"] = []
        for cand in task.candidates:
            scored = evaluate_model(load_source(cand), test.images, test.masks, batch_size=batch,
                                    loss=cand.specs.train.loss)
            metrics["candidates"].append({"label": cand.label, "hard_dice": scored["hard_dice"],
                                          "per_image": scored["per_image"]["hard_dice"]})
    tmp = out / ".model.keras.tmp.keras"
    model.save(str(tmp))
    tmp.replace(out / "model.keras")
    n = min(task.outputs.predictions, len(test.images))
    if n:
        prob = predict_probabilities(model, test.images[:n], batch_size=batch)
        save_predictions(out / "predictions", test.images[:n], test.masks[:n], prob, list(test.stems[:n]))
    atomic_write_json(out / "test_metrics.json", metrics)
    return TrialOutcome(
        status=TrialState.COMPLETE,
        score=metrics["hard_dice"],
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        train_s=train_s,
        metrics={k: v for k, v in metrics.items() if k not in ("per_image", "baseline", "candidates")},
    )


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
