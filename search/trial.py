"""One trial in its trial process: values → specs → build → train with early stopping → score.

Also the final stage (retrain the best values, evaluate on test). Both write only inside their
own folder of the results contract.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from search.config import Config, config_from_dict
from search.errors import TrialCollapsed, TrialFailed, TrialPruned
from search.overlays import save_predictions
from search.results import atomic_write_json, write_history_csv, write_traceback
from search.specs import check_memory, specs_from_values
from search.training import Checkpoint, evaluate_model, predict_probabilities, train_model
from search.vocabulary import OBJECTIVE, TrialState

__all__ = ["TrialOutcome", "TrialTask", "run_task"]


logger = logging.getLogger(__name__)


@dataclass
class TrialTask:
    """What the driver sends a trial process: plain data only (it crosses a process boundary)."""

    number: int
    values: dict[str, Any]
    seed: int
    out_dir: str
    config: dict[str, Any]
    cache_path: str
    kind: Literal["trial", "final"] = "trial"
    max_epochs: int | None = None
    fixed_epochs: int | None = None
    memory_budget: int | None = None
    verbose: int = 0
    weights_path: str | None = None  # final stage: evaluate these weights instead of training


@dataclass
class TrialOutcome:
    """What a trial process reports back. ``running``: stopped on request, resumable (:attr:`interrupted`)."""

    status: TrialState
    score: float | None = None
    best_epoch: int | None = None
    epochs_run: int = 0
    reason: str = ""
    train_s: float = 0.0
    duration_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    infeasible: bool = False

    def __post_init__(self) -> None:
        self.status = TrialState(self.status)

    @property
    def interrupted(self) -> bool:
        return self.status == TrialState.RUNNING


def run_task(task: TrialTask, data: Any, on_epoch: Callable[[int, dict[str, float]], None]) -> TrialOutcome:
    """Run a trial or the final stage; trial-local failures become outcomes, not exceptions."""
    t0 = time.perf_counter()
    cfg = config_from_dict(task.config)
    out = Path(task.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []

    def hook(epoch: int, logs: dict[str, float]) -> None:
        history.append(logs)
        write_history_csv(out / "history.csv", history)
        on_epoch(epoch, logs)

    try:
        specs = specs_from_values(cfg, task.values, seed=task.seed, max_epochs=task.max_epochs)
        check_memory(specs, budget_bytes=task.memory_budget)
        if task.kind == "final":
            outcome = _final(task, cfg, specs, data, hook, out)
        else:
            outcome = _trial(task, cfg, specs, data, hook, out, history)
    except TrialPruned as e:
        # The running best, as the pruner saw it. Rows restored from a checkpoint carry the
        # objective under its own name and no "score" (written before the hook ran).
        outcome = TrialOutcome(status=TrialState.PRUNED, reason=e.reason, epochs_run=len(history))
        scores: list[float] = [v for v in (_row_score(h) for h in history) if v is not None]
        if isinstance(e, TrialCollapsed):
            outcome.epochs_run = e.epochs_run
            scores.append(e.best_score)
        if scores:
            outcome.score = max(scores)
        _drop_checkpoint(out)
    except TrialFailed as e:
        outcome = TrialOutcome(status=TrialState.FAILED, reason=e.reason, epochs_run=len(history), infeasible=e.infeasible)
        _drop_checkpoint(out)
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
    return outcome


def _earlier_segments_s(history: list[dict[str, Any]]) -> float:
    """Seconds of the epochs restored from a checkpoint (rows without the hook's "score")."""
    return float(sum(float(h.get("epoch_s", 0.0)) for h in history if "score" not in h))


def _row_score(row: dict[str, Any]) -> float | None:
    """A history row's objective: "score" from the epoch hook, else the logged validation metric."""
    for key in ("score", OBJECTIVE):
        value = row.get(key)
        if value is not None and math.isfinite(float(value)):
            return float(value)
    return None


def _trial(task, cfg: Config, specs, data, hook, out: Path, history) -> TrialOutcome:  # type: ignore[no-untyped-def]
    train, valid = data.split("train"), data.split("valid")
    ckpt = Checkpoint(out / "checkpoint") if cfg.train.checkpoint_every_epoch else None
    if ckpt is not None and ckpt.exists():
        # Continue the history file from the checkpoint's own history.
        import json

        history.extend(json.loads(ckpt.state_path.read_text()).get("history", []))
    result = train_model(
        specs,
        train_images=train.images,
        train_masks=train.masks,
        valid_images=valid.images,
        valid_masks=valid.masks,
        on_epoch=hook,
        checkpoint=ckpt,
        verbose=task.verbose,
        callbacks=_tensorboard(cfg, out, task.values),
    )
    n = min(cfg.data.num_val_predictions, len(valid.images))
    if n:
        prob = predict_probabilities(result.model, valid.images[:n], batch_size=specs.train.batch_size)
        save_predictions(out / "predictions", valid.images[:n], valid.masks[:n], prob, list(valid.stems[:n]))
    result.model.save_weights(str(out / "best.weights.h5"))
    _drop_checkpoint(out)
    return TrialOutcome(
        status=TrialState.COMPLETE,
        score=result.best_score,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        train_s=result.train_s,
        metrics={"stop_reason": result.stop_reason},
    )


def _final(task, cfg: Config, specs, data, hook, out: Path) -> TrialOutcome:  # type: ignore[no-untyped-def]
    """The final model: the best trial's own weights, or a retrain on train+valid (``fixed_epochs``).

    Retraining the best trial on the same data with the same seed would reproduce its weights (op
    determinism), so without ``train_on_valid`` the final stage evaluates the saved weights.
    """
    from search.training import TrainResult, compile_model

    train, valid, test = data.split("train"), data.split("valid"), data.split("test")
    if task.weights_path is not None and task.fixed_epochs is None:
        model = compile_model(specs)
        with warnings.catch_warnings():  # the file holds the trial's optimizer state too; not needed to test
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(task.weights_path)
        valid_metrics = evaluate_model(model, valid.images, valid.masks, batch_size=specs.train.batch_size,
                                       loss=specs.train.loss)
        result = TrainResult(model=model, history=[], best_score=valid_metrics["hard_dice"], best_epoch=-1,
                             epochs_run=0, stop_reason="trial_weights", train_s=0.0)
        score_key, source = "valid_score", "trial_weights"
    else:
        images = np.concatenate([np.asarray(train.images), np.asarray(valid.images)])
        masks = np.concatenate([np.asarray(train.masks), np.asarray(valid.masks)])
        result = train_model(
            specs,
            train_images=images,
            train_masks=masks,
            valid_images=valid.images,
            valid_masks=valid.masks,
            on_epoch=hook,
            fixed_epochs=task.fixed_epochs,
            verbose=task.verbose,
        )
        # No held-out split is left: the last epoch's dice on augmented training batches, labelled so.
        score_key, source = "train_score_augmented", "retrained_train_valid"
    metrics = evaluate_model(result.model, test.images, test.masks, batch_size=specs.train.batch_size, loss=specs.train.loss)
    metrics["per_image"]["stems"] = list(test.stems)
    metrics[score_key] = result.best_score
    metrics["model_from"] = source
    metrics["best_epoch"] = result.best_epoch
    tmp = out / ".model.keras.tmp.keras"
    result.model.save(str(tmp))
    tmp.replace(out / "model.keras")
    n = min(cfg.final.num_predictions, len(test.images))
    if n:
        prob = predict_probabilities(result.model, test.images[:n], batch_size=specs.train.batch_size)
        save_predictions(out / "predictions", test.images[:n], test.masks[:n], prob, list(test.stems[:n]))
    atomic_write_json(out / "test_metrics.json", metrics)
    return TrialOutcome(
        status=TrialState.COMPLETE,
        score=metrics["hard_dice"],
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        train_s=result.train_s,
        metrics={k: v for k, v in metrics.items() if k != "per_image"},
    )


def _tensorboard(cfg: Config, out: Path, values: dict[str, Any]) -> list[Any]:
    if not cfg.train.tensorboard:
        return []
    import keras

    return [keras.callbacks.TensorBoard(log_dir=str(out / "tb"), write_graph=False, profile_batch=0)]


def _drop_checkpoint(out: Path) -> None:
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
