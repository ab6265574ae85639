"""Train one model with checkpoints and score it per image at its best epoch: the step a holdout trial and
each fold of a k-fold trial share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.labels import ClassMap
from search.errors import TrialPruned
from search.evaluation import Units, mean_se
from search.results import atomic_write_json
from search.results.images import save_predictions
from search.results.layout import BEST_WEIGHTS, CHECKPOINT_DIR, PREDICTIONS_DIR, SCORES_FILE, TENSORBOARD_DIR
from search.trial.stop import StopSignal
from search.trial.task import TrialTask, drop_checkpoint
from search.trial.training import Checkpoint, class_means, predict_probabilities, scored_rows, train_model
from search.vocabulary import CLASS_DICE

__all__ = ["ScoredFit", "class_metrics", "class_names", "class_table_means", "fit_and_score", "panel_colours"]


@dataclass
class ScoredFit:
    """A trained model with its per-image validation dice (by stem) at the best epoch; several classes: each
    foreground class's dice too (the mean over the images that score it; None when none does)."""

    result: Any
    per_image: dict[str, float]
    se: float | None
    class_dice: dict[str, float | None] = field(default_factory=dict)
    per_class: dict[str, list[float | None]] = field(default_factory=dict)  # by stem, one value per class


def fit_and_score(
    task: TrialTask, out: Path, hook: Any, history: list[dict[str, Any]], *,
    train: tuple[Any, Any], valid: tuple[Any, Any, list[str]], stop: StopSignal | None = None,
    classes: ClassMap | None = None,
) -> ScoredFit:
    """Train ``task.specs`` with checkpoints in ``out``, then save the best weights, the per-image
    validation dice (``scores.json``, with the units they count) and prediction panels there. The
    standard error counts the task's units (patients) when known. ``classes``: the class map (several classes;
    None for binary masks), for the per-class scores' names and the panels' colours.

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
            _save_scored(task, e.model, out, images, masks, stems, classes)
        raise
    scored = _save_scored(task, result.model, out, images, masks, stems, classes)
    drop_checkpoint(out)
    units = (task.units or Units()).labels(stems)
    return ScoredFit(result=result, per_image=scored.per_image, se=mean_se(list(scored.per_image.values()), units)[1],
                     class_dice=scored.class_dice, per_class=scored.per_class)


def class_names(classes: ClassMap | None, n: int) -> tuple[str, ...]:
    """The names of ``n`` foreground classes: the class map's, or class_1… when it does not fit the model."""
    if classes is not None and len(classes.foreground) == n:
        return classes.foreground
    return tuple(f"class_{k}" for k in range(1, n + 1))


def panel_colours(classes: ClassMap | None, prob: Any) -> Any:
    """The class map's colours for prediction panels when they fit the model's classes (else the palette)."""
    if classes is None or getattr(prob, "ndim", 0) != 4 or prob.shape[-1] != classes.num_classes:
        return None
    return classes.colours()


def class_metrics(class_dice: dict[str, float | None]) -> dict[str, float]:
    """A trial's metrics of each foreground class's dice (``dice_<name>``; unscored classes left out)."""
    return {f"{CLASS_DICE}{name}": value for name, value in class_dice.items() if value is not None}


def class_table_means(per_class: dict[str, list[float | None]], classes: ClassMap | None) -> dict[str, float | None]:
    """Each class's mean over the images (rows by stem, as ``scores.json`` holds them) that score it; {} without
    rows."""
    if not per_class:
        return {}
    import numpy as np

    table = np.array([[np.nan if x is None else x for x in row] for row in per_class.values()], dtype=np.float64)
    return dict(zip(class_names(classes, table.shape[1]), class_means(table), strict=True))


def _save_scored(task: TrialTask, model: Any, out: Path, images: Any, masks: Any, stems: list[str],
                 classes: ClassMap | None) -> ScoredFit:
    """Score the model per image (and per class) on the validation images and save weights, scores and panels."""
    import numpy as np

    from models import hard_dice_per_class, image_means

    prob = predict_probabilities(model, images, batch_size=task.specs.train.batch_size)
    table = hard_dice_per_class(np.asarray(masks).astype(np.float32), prob, threshold=0.5)
    per_image = {stem: float(d) for stem, d in zip(stems, image_means(table), strict=True)}
    n = min(task.outputs.predictions, len(stems))
    if n:
        save_predictions(out / PREDICTIONS_DIR, images[:n], masks[:n], prob[:n], stems[:n],
                         colours=panel_colours(classes, prob))
    model.save_weights(str(out / BEST_WEIGHTS))
    scores: dict[str, Any] = {"metric": "hard_dice", "per_image": per_image}
    scored = ScoredFit(result=None, per_image=per_image, se=None)
    if prob.ndim == 4:  # several classes: each foreground class's dice per image and over the split
        names = class_names(classes, table.shape[1])
        scored.per_class = dict(zip(stems, scored_rows(table), strict=True))
        scored.class_dice = dict(zip(names, class_means(table), strict=True))
        scores.update(classes=list(names), class_dice=scored.class_dice, per_class=scored.per_class)
    atomic_write_json(out / SCORES_FILE, {**scores, **(task.units or Units()).describe(stems)})
    return scored


def _tensorboard(task: TrialTask, out: Path) -> list[Any]:
    if not task.outputs.tensorboard:
        return []
    import keras

    return [keras.callbacks.TensorBoard(log_dir=str(out / TENSORBOARD_DIR), write_graph=False, profile_batch=0)]
