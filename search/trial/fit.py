"""Train one model with checkpoints and score it per image at its best epoch: the step a holdout trial and
each fold of a k-fold trial share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search.errors import TrialPruned
from search.evaluation import Units, mean_se
from search.results import atomic_write_json
from search.results.images import save_predictions
from search.results.layout import BEST_WEIGHTS, CHECKPOINT_DIR, PREDICTIONS_DIR, SCORES_FILE, TENSORBOARD_DIR
from search.trial.stop import StopSignal
from search.trial.task import TrialTask, drop_checkpoint
from search.trial.training import Checkpoint, predict_probabilities, train_model

__all__ = ["ScoredFit", "fit_and_score"]


@dataclass
class ScoredFit:
    """A trained model with its per-image validation dice (by stem) at the best epoch."""

    result: Any
    per_image: dict[str, float]
    se: float | None


def fit_and_score(
    task: TrialTask, out: Path, hook: Any, history: list[dict[str, Any]], *,
    train: tuple[Any, Any], valid: tuple[Any, Any, list[str]], stop: StopSignal | None = None,
) -> ScoredFit:
    """Train ``task.specs`` with checkpoints in ``out``, then save the best weights, the per-image
    validation dice (``scores.json``, with the units they count) and prediction panels there. The
    standard error counts the task's units (patients) when known.

    A pruned (or collapsed) run saves its best weights and scores too (the verdict and re-evaluation
    may need a pruned baseline's model) before the exception goes on.
    """
    ckpt = Checkpoint(out / CHECKPOINT_DIR) if task.outputs.checkpoint else None
    if ckpt is not None and ckpt.exists():
        # Continue the history file from the checkpoint's own history.
        history.extend(ckpt.history())
    images, masks, stems = valid
    try:
        result = train_model(
            task.specs,
            train_images=train[0],
            train_masks=train[1],
            valid_images=images,
            valid_masks=masks,
            on_epoch=hook,
            checkpoint=ckpt,
            verbose=task.verbose,
            callbacks=_tensorboard(task, out),
            stop=stop,
        )
    except TrialPruned as e:
        if e.model is not None:
            _save_scored(task, e.model, out, images, masks, stems)
        raise
    per_image = _save_scored(task, result.model, out, images, masks, stems)
    drop_checkpoint(out)
    units = (task.units or Units()).labels(stems)
    return ScoredFit(result=result, per_image=per_image, se=mean_se(list(per_image.values()), units)[1])


def _save_scored(task: TrialTask, model: Any, out: Path, images: Any, masks: Any, stems: list[str]) -> dict[str, float]:
    import numpy as np

    from models import hard_dice_per_image

    prob = predict_probabilities(model, images, batch_size=task.specs.train.batch_size)
    dice = hard_dice_per_image(np.asarray(masks).astype(np.float32), prob, threshold=0.5)
    per_image = {stem: float(d) for stem, d in zip(stems, dice, strict=True)}
    n = min(task.outputs.predictions, len(stems))
    if n:
        save_predictions(out / PREDICTIONS_DIR, images[:n], masks[:n], prob[:n], stems[:n])
    model.save_weights(str(out / BEST_WEIGHTS))
    atomic_write_json(out / SCORES_FILE, {"metric": "hard_dice", "per_image": per_image,
                                          **(task.units or Units()).describe(stems)})
    return per_image


def _tensorboard(task: TrialTask, out: Path) -> list[Any]:
    if not task.outputs.tensorboard:
        return []
    import keras

    return [keras.callbacks.TensorBoard(log_dir=str(out / TENSORBOARD_DIR), write_graph=False, profile_batch=0)]
