"""One trial in its trial process: specs → build → train with early stopping → score.

The driver turns a trial's values into frozen specs (``search/config/specs.py``) and sends them in a
:class:`TrialTask`: nothing here reads the study config. Holdout trials train on the train split and
are scored on the valid split; k-fold trials are in ``search/trial/kfold.py``; the final stage (test the
chosen model and the baseline) is ``search/trial/final.py``. Each writes only inside its own folder.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from search.config.specs import TrialSpecs
from search.errors import TrialCollapsed, TrialFailed, TrialPruned
from search.results import atomic_write_json, write_history_csv, write_traceback
from search.results.layout import (
    BEST_WEIGHTS,
    CHECKPOINT_DIR,
    HISTORY_CSV,
    PREDICTIONS_DIR,
    SCORES_FILE,
    TENSORBOARD_DIR,
)
from search.trial.stop import BUDGET_STOP, StepStop, StopSignal
from search.vocabulary import OBJECTIVE, TrialState

if TYPE_CHECKING:
    from search.evaluation import Units

__all__ = ["ModelSource", "TrialOutcome", "TrialOutputs", "TrialTask", "row_score", "run_task"]


logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class TrialOutputs:
    """What a trial writes besides its record: prediction panels, per-epoch checkpoint, TensorBoard."""

    predictions: int = 0
    checkpoint: bool = True
    tensorboard: bool = False


@dataclass(frozen=True)
class ModelSource:
    """A trained model to test (final stage): its specs and weights (several: the k-fold ensemble)."""

    specs: TrialSpecs
    weights: tuple[str, ...]
    label: str = ""


@dataclass
class TrialTask:
    """What the driver sends a trial process: frozen specs and plain data (it crosses a process boundary).

    ``folds``: k-fold evaluation, the validation stems of each fold (train+valid pooled);
    ``fold_reference``: the best complete trial's per-image out-of-fold dice, for fold pruning;
    ``units``: each image's patient, so that the standard error and fold pruning count patients
    (None: every image is a unit).
    Final stage (``kind="final"``): ``model`` is tested (or, with ``fixed_epochs``, ``specs`` is
    retrained on train+valid), and ``baseline`` is tested on the same images for the verdict (with
    ``baseline_fixed_epochs``, its specs retrained on train+valid first, like the chosen model);
    ``candidates`` (the re-evaluated configurations' trial weights) are tested for the record only.
    ``stop_at``: the deadline (``time.time()``) at which training stops at the next step (search/study/budget.py).
    ``kind="probe"``: measure how fast ``specs`` trains here (search/study/throughput.py); nothing is written.
    """

    number: int
    specs: TrialSpecs
    out_dir: str
    cache_path: str
    kind: Literal["trial", "final", "probe"] = "trial"
    outputs: TrialOutputs = field(default_factory=TrialOutputs)
    folds: tuple[tuple[str, ...], ...] | None = None
    fold_reference: dict[str, float] | None = None
    fold_prune_p: float = 0.0
    units: Units | None = None
    fixed_epochs: int | None = None
    lr_schedule: tuple[float, ...] | None = None  # with fixed_epochs: each epoch's learning rate (replayed)
    model: ModelSource | None = None
    baseline: ModelSource | None = None
    baseline_fixed_epochs: int | None = None
    baseline_lr_schedule: tuple[float, ...] | None = None  # with baseline_fixed_epochs: its trial's learning rates
    candidates: tuple[ModelSource, ...] = ()  # final stage: tested too, for the record (not for the pick)
    verbose: int = 0
    stop_at: float | None = None


@dataclass
class TrialOutcome:
    """What a trial process reports back. ``running``: stopped on request, resumable (:attr:`interrupted`)."""

    status: TrialState
    score: float | None = None
    score_se: float | None = None
    best_epoch: int | None = None
    epochs_run: int = 0
    reason: str = ""
    train_s: float = 0.0
    duration_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    infeasible: bool = False
    stopped_by: str = ""  # a running outcome: "user" (Ctrl-C) or "budget" (the deadline before its first judgement)

    def __post_init__(self) -> None:
        self.status = TrialState(self.status)

    @property
    def interrupted(self) -> bool:
        return self.status == TrialState.RUNNING


def run_task(task: TrialTask, data: Any, on_epoch: Callable[[int, dict[str, float]], None],
             stop: StopSignal | None = None) -> TrialOutcome:
    """Run a trial or the final stage; trial-local failures become outcomes, not exceptions.

    ``stop`` (the deadline, Ctrl-C) may end training at a step boundary: a trial already judged ends
    with its best epoch, otherwise the outcome is ``running`` (resumable) with ``stopped_by`` set.
    """
    if task.kind == "probe":  # writes nothing (a dry run has no study folder)
        from search.trial.probe import run_probe

        return run_probe(task, data)
    t0 = time.perf_counter()
    out = Path(task.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []

    def hook(epoch: int, logs: dict[str, float]) -> None:
        history.append(logs)
        write_history_csv(out / HISTORY_CSV, history)
        on_epoch(epoch, logs)

    try:
        if task.kind == "final":
            from search.trial.final import run_final_task

            outcome = run_final_task(task, data, hook, out, stop, on_epoch=on_epoch)
        elif task.folds is not None:
            from search.trial.kfold import run_kfold_trial

            outcome = run_kfold_trial(task, data, hook, out, history, stop)
        else:
            outcome = _trial(task, data, hook, out, history, stop)
    except StepStop as e:  # the deadline before the trial was judged, or Ctrl-C: resumable from its checkpoint
        outcome = TrialOutcome(status=TrialState.RUNNING, stopped_by=e.reason, epochs_run=len(history), reason=(
            "interrupted by the user (resumable)" if e.reason == "user" else
            f"{BUDGET_STOP}the deadline came before its first judgement (after {len(history)} epochs); it resumes "
            f"from there when the study runs again"))
    except TrialPruned as e:
        # The running best, as the pruner saw it. Rows restored from a checkpoint carry the
        # objective under its own name and no "score" (written before the hook ran).
        outcome = TrialOutcome(status=TrialState.PRUNED, reason=e.reason, epochs_run=len(history))
        scores: list[float] = [v for v in (row_score(h) for h in history) if v is not None]
        if isinstance(e, TrialCollapsed):
            outcome.epochs_run = e.epochs_run
            scores.append(e.best_score)
        if scores:
            outcome.score = max(scores)
        drop_checkpoint(out)
    except TrialFailed as e:
        outcome = TrialOutcome(status=TrialState.FAILED, reason=e.reason, epochs_run=len(history), infeasible=e.infeasible)
        drop_checkpoint(out)
    except MemoryError:
        outcome = TrialOutcome(status=TrialState.FAILED, reason="out of host memory", epochs_run=len(history))
    except Exception as e:  # a trial-local crash must not end the search
        name = type(e).__name__
        if "ResourceExhausted" in name or "OOM" in str(e)[:200]:
            reason = f"out of device memory ({name})"
        else:
            reason = f"{name}: {str(e).splitlines()[0] if str(e) else ''}"[:400]
        logger.debug("trial %d crashed", task.number, exc_info=True)
        write_traceback(out, e)  # the whole story, for `status NAME --debug`
        outcome = TrialOutcome(status=TrialState.FAILED, reason=reason, epochs_run=len(history))
    # A resumed trial's earlier segments count too (their epochs' seconds, from the checkpoint).
    outcome.duration_s = time.perf_counter() - t0 + _earlier_segments_s(history)
    if not outcome.train_s:  # pruned, failed or stopped: the seconds of the epochs it did train
        outcome.train_s = float(sum(float(h.get("epoch_s", 0.0)) for h in history))
    return outcome


def _earlier_segments_s(history: list[dict[str, Any]]) -> float:
    """Seconds of the epochs restored from a checkpoint (rows without the hook's "score")."""
    return float(sum(float(h.get("epoch_s", 0.0)) for h in history if "score" not in h))


def row_score(row: dict[str, Any]) -> float | None:
    """A history row's objective: "score" from the epoch hook, else the logged validation metric."""
    for key in ("score", OBJECTIVE):
        value = row.get(key)
        if value is not None and math.isfinite(float(value)):
            return float(value)
    return None


def _trial(task: TrialTask, data: Any, hook: Any, out: Path, history: list[dict[str, Any]],
           stop: StopSignal | None) -> TrialOutcome:
    train, valid = data.split("train"), data.split("valid")
    fit = fit_and_score(task, out, hook, history, train=(train.images, train.masks),
                        valid=(valid.images, valid.masks, list(valid.stems)), stop=stop)
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
        metrics={"stop_reason": result.stop_reason},
    )


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
    from search.evaluation import Units, mean_se
    from search.trial.training import Checkpoint, train_model

    ckpt = Checkpoint(out / CHECKPOINT_DIR) if task.outputs.checkpoint else None
    if ckpt is not None and ckpt.exists():
        # Continue the history file from the checkpoint's own history.
        import json

        history.extend(json.loads(ckpt.state_path.read_text()).get("history", []))
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
    from search.evaluation import Units
    from search.results.images import save_predictions
    from search.trial.training import predict_probabilities

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


def drop_checkpoint(out: Path) -> None:
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
