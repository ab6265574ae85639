"""Single-configuration training: specs + data → trained model, per-epoch history, best score.

The epoch loop is ours (one ``fit`` call per epoch) so that early stopping, the learning-rate
reducer and the pruning hook share one state that is checkpointed after every epoch: an
interrupted trial continues from its last completed epoch (weights, optimizer slots, dropout seed
states, counters), exactly: the same losses and weights as an uninterrupted run (tested).

When a trial may be judged (README, "Budgets, warm-up and when a trial is judged"):

- An epoch is ``TrainSpec.steps_per_epoch`` optimizer steps, whatever the dataset size.
- Nothing stops a trial during its warm-up (``TrainSpec.warmup_samples``), except a collapse.
- Progress: a new best validation hard dice. While the best hard dice is still 0, a new best
  validation loss or soft dice is progress too, so a model that is learning but not yet over the
  0.5 threshold anywhere is not stopped for "no improvement".
- Early stopping: ``patience`` epochs without progress, after the warm-up.
- A collapse: for ``collapse_epochs`` epochs in a row the model predicts no foreground pixel on the
  validation split while the validation loss stays flat (relative range < ``COLLAPSE_LOSS_RTOL``).
  Such a trial ends as :class:`TrialCollapsed` (recorded ``pruned``, reason "collapsed: …").
- The pruner sees the running best score and is asked only when :attr:`LoopState.judgeable`.
- A :class:`~search.budget.StopSignal` (the run's deadline, Ctrl-C) is checked after every optimizer
  step: the partial epoch is dropped and the trial keeps its last completed epoch (its checkpoint).
  At the deadline a trial already judged ends there with its best epoch (``stop_reason`` "budget");
  otherwise :class:`~search.budget.StepStop` goes on to the caller and the trial stays resumable.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search.budget import StepStop, StopSignal
from search.errors import TrialCollapsed, TrialFailed, TrialPruned
from search.results import atomic_write_bytes, atomic_write_json
from search.specs import TrialSpecs
from search.vocabulary import OBJECTIVE

__all__ = ["Checkpoint", "EpochHook", "LoopState", "TrainResult", "compile_model", "evaluate_model",
           "predict_probabilities", "train_model"]


logger = logging.getLogger(__name__)

EpochHook = Callable[[int, dict[str, float]], None]

# "No score yet" below this hard dice: progress in loss or soft dice still counts (module docstring).
ZERO_SCORE = 1e-6
COLLAPSE_LOSS_RTOL = 1e-3


@dataclass
class LoopState:
    """Everything besides the weights that the epoch loop needs to continue exactly."""

    epoch: int = 0  # next epoch to run
    best_score: float = -math.inf
    best_epoch: int = -1
    wait: int = 0  # epochs since the best (early stopping)
    reducer_wait: int = 0
    lr: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    train_s: float = 0.0
    best_loss: float = math.inf  # validation loss and soft dice: progress while the hard dice is 0
    best_soft: float = -math.inf
    collapsed_for: int = 0  # consecutive epochs with no predicted foreground and a flat loss

    def progress(self, *, score: float, loss: float, soft: float) -> tuple[bool, bool]:
        """Update the bests with one epoch; return (new best score, progress by the rule above)."""
        improved = score > self.best_score
        progressed = improved
        if self.best_score <= ZERO_SCORE and not improved:
            progressed = loss < self.best_loss * (1 - COLLAPSE_LOSS_RTOL) or soft > self.best_soft + 1e-4
        self.best_loss = min(self.best_loss, loss) if math.isfinite(loss) else self.best_loss
        self.best_soft = max(self.best_soft, soft) if math.isfinite(soft) else self.best_soft
        return improved, progressed


@dataclass
class TrainResult:
    model: Any
    history: list[dict[str, float]]
    best_score: float
    best_epoch: int
    epochs_run: int
    stop_reason: str
    train_s: float


class Checkpoint:
    """Per-epoch checkpoint in one folder: weights, optimizer variables, loop state, best weights."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def state_path(self) -> Path:
        return self.folder / "state.json"

    def exists(self) -> bool:
        return self.state_path.is_file()

    def save(self, model: Any, state: LoopState, *, best_improved: bool) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # Weights and optimizer first; state.json (the commit point) last, so a kill in between
        # leaves the previous consistent checkpoint (state.json names the epoch of its files).
        tag = state.epoch % 2  # alternate files so the committed pair is never overwritten
        _save_arrays(self.folder / f"weights{tag}.npz", model.get_weights())
        _save_arrays(self.folder / f"optimizer{tag}.npz", [v.numpy() for v in model.optimizer.variables])
        # Dropout's seed-generator states: without them a resumed run draws other dropout masks.
        _save_arrays(self.folder / f"seeds{tag}.npz", [v.numpy() for v in _seed_states(model)])
        # The best weights are named by their epoch and state.json names the file: a kill before the
        # commit leaves the previous state pointing at the previous best, never at newer weights.
        best_file = f"best{state.best_epoch}.npz" if state.best_epoch >= 0 else None
        if best_improved:
            _save_arrays(self.folder / f"best{state.best_epoch}.npz", model.get_weights())
        atomic_write_json(self.state_path, {"tag": tag, "best_file": best_file, **asdict(state)})
        for old in self.folder.glob("best*.npz"):
            if old.name != best_file:
                old.unlink(missing_ok=True)


    def load(self, model: Any) -> tuple[LoopState, list[np.ndarray] | None]:
        raw = json.loads(self.state_path.read_text())
        tag = raw.pop("tag")
        best_file = raw.pop("best_file", "best.npz")  # checkpoints before best_file: one best.npz
        state = LoopState(**raw)
        model.set_weights(_load_arrays(self.folder / f"weights{tag}.npz"))
        opt = model.optimizer
        if not opt.built:
            opt.build(model.trainable_variables)
        saved = _load_arrays(self.folder / f"optimizer{tag}.npz")
        if len(saved) != len(opt.variables):
            raise TrialFailed(f"checkpoint {self.folder} does not match the model (optimizer variables differ)")
        for var, value in zip(opt.variables, saved, strict=True):
            var.assign(value)
        seeds = self.folder / f"seeds{tag}.npz"
        if seeds.is_file():  # checkpoints written before this file existed resume with fresh seeds
            for var, value in zip(_seed_states(model), _load_arrays(seeds), strict=True):
                var.assign(value)
        best = self.folder / best_file if best_file else None
        return state, (_load_arrays(best) if best is not None and best.is_file() else None)


def _seed_states(model: Any) -> list[Any]:
    """The model's random-generator states (``model.variables`` that are not weights), in a fixed order."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, *arrays)
    atomic_write_bytes(path, buf.getvalue())


def _load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[f"arr_{i}"] for i in range(len(z.files))]


def compile_model(specs: TrialSpecs) -> Any:
    """Build and compile the model of ``specs`` (seeded)."""
    import keras

    from models import HardDice, HardIoU, PredictedForeground, SoftDice, build_model, get_loss

    keras.utils.set_random_seed(specs.train.seed)
    model = build_model(specs.model)
    optimizer = keras.optimizers.Adam(learning_rate=specs.train.learning_rate, clipvalue=specs.train.clipvalue)
    model.compile(
        optimizer=optimizer,
        loss=get_loss(specs.train.loss),
        metrics=[
            HardDice(name="hard_dice"), HardIoU(name="hard_iou"), SoftDice(name="dice_coef"),
            PredictedForeground(name="pred_fg"),
        ],
        jit_compile=specs.train.jit_compile,
    )
    return model


def train_model(
    specs: TrialSpecs,
    *,
    train_images: np.ndarray,
    train_masks: np.ndarray,
    valid_images: np.ndarray,
    valid_masks: np.ndarray,
    on_epoch: EpochHook | None = None,
    checkpoint: Checkpoint | None = None,
    fixed_epochs: int | None = None,
    verbose: int = 0,
    callbacks: list[Any] | None = None,
    stop: StopSignal | None = None,
) -> TrainResult:
    """Train one configuration with early stopping on the validation objective.

    Args:
        on_epoch: called after every epoch (after the checkpoint) with the epoch's logs; it may
            raise ``TrialPruned`` or ``Interrupted`` to stop the run.
        checkpoint: if given, the loop resumes from it and saves it after every epoch.
        fixed_epochs: train exactly this many epochs without early stopping (final retrain on
            train+valid); the "best" is then the last epoch.
        stop: checked after every step (module docstring).

    Returns:
        The model with the best epoch's weights restored, and the per-epoch history.

    Raises:
        TrialFailed: when the loss becomes NaN/inf.
        StepStop: stopped at a step boundary and not finished here (Ctrl-C, or the deadline before
            the trial was judged); the checkpoint holds the last completed epoch.
    """
    import keras

    from data import eval_dataset, train_dataset

    t = specs.train
    model = compile_model(specs)
    state = LoopState(lr=t.learning_rate)
    best_weights: list[np.ndarray] | None = None
    if checkpoint is not None and checkpoint.exists():
        state, best_weights = checkpoint.load(model)
        model.optimizer.learning_rate.assign(state.lr)
        logger.info("resuming from epoch %d (best %.4f at epoch %d)", state.epoch, state.best_score, state.best_epoch)

    has_valid = fixed_epochs is None and len(valid_images) > 0
    valid_ds = eval_dataset(valid_images, valid_masks, batch_size=t.batch_size) if has_valid else None
    max_epochs = fixed_epochs if fixed_epochs is not None else t.max_epochs
    stop_reason = "max_epochs"
    cbs = [keras.callbacks.TerminateOnNaN(), *(callbacks or []), *([_stop_callback(stop)] if stop else [])]
    judge_from = max(t.min_epochs, t.warmup_epochs(len(train_images)))  # no early stop before this epoch

    if state.epoch >= max_epochs or (fixed_epochs is None and state.wait >= t.patience and state.epoch >= judge_from):
        stop_reason = "resumed_finished"
    epoch = state.epoch
    while epoch < max_epochs and stop_reason != "resumed_finished":
        t0 = time.perf_counter()
        try:
            if stop is not None:
                stop.check()
            # One dataset per epoch, keyed by the epoch number: a resumed run sees the same data.
            train_ds = train_dataset(
                train_images, train_masks, batch_size=t.batch_size, augment=specs.augment, seed=t.seed,
                epoch=epoch, steps=t.steps_per_epoch,
            )
            fit = model.fit(
                train_ds,
                epochs=epoch + 1,
                initial_epoch=epoch,
                validation_data=valid_ds,
                shuffle=False,  # the tf.data pipeline shuffles, seeded
                verbose=verbose,
                callbacks=cbs,
            )
        except StepStop as e:  # the partial epoch is dropped: the last completed epoch stands
            judged = state.best_epoch >= 0 and (fixed_epochs is not None or state.epoch >= judge_from)
            if e.reason != "budget" or stop is None or not stop.finish_judged or not judged:
                raise
            stop_reason = "budget"
            logger.info("deadline during epoch %d: stopped; best epoch %d kept", epoch, state.best_epoch)
            break
        elapsed = time.perf_counter() - t0
        logs = {k: float(v[-1]) for k, v in fit.history.items() if v}
        loss = logs.get("loss", float("nan"))
        if not math.isfinite(loss):
            raise TrialFailed(f"loss became {loss} at epoch {epoch} (learning_rate={t.learning_rate:g})")
        score = logs.get(OBJECTIVE, logs.get("hard_dice", float("nan"))) if has_valid else logs.get("hard_dice", 0.0)
        if not math.isfinite(score):
            raise TrialFailed(f"validation score became {score} at epoch {epoch}")
        row = {"epoch": epoch, **logs, "lr": float(state.lr), "epoch_s": round(elapsed, 3)}
        state.history.append(row)
        state.train_s += elapsed
        if fixed_epochs is not None:
            improved = progressed = True
        else:
            improved, progressed = state.progress(
                score=score, loss=logs.get("val_loss", loss), soft=logs.get("val_dice_coef", float("nan"))
            )
        if improved:
            state.best_score, state.best_epoch = score, epoch
            best_weights = [w.copy() for w in model.get_weights()]
        if progressed:
            state.wait, state.reducer_wait = 0, 0
        else:
            state.wait += 1
            state.reducer_wait += 1
            if state.reducer_wait >= t.reducer_patience and state.lr > t.min_lr:
                state.lr = max(state.lr * t.reducer_factor, t.min_lr)
                model.optimizer.learning_rate.assign(state.lr)
                state.reducer_wait = 0
                logger.debug("epoch %d: learning rate reduced to %.3g", epoch, state.lr)
        collapse = _collapse_check(state, logs) if has_valid and t.collapse_epochs else None
        epoch += 1
        state.epoch = epoch
        if checkpoint is not None:
            checkpoint.save(model, state, best_improved=improved)
        collapsed = collapse is not None and state.collapsed_for >= t.collapse_epochs
        try:
            if on_epoch is not None:
                judgeable = epoch >= judge_from and (state.best_score > ZERO_SCORE or not progressed) and not collapsed
                on_epoch(epoch - 1, {**row, "score": score, "best_score": float(state.best_score),
                                     "judgeable": float(judgeable)})
            if collapsed:
                raise TrialCollapsed(str(collapse), epochs_run=epoch, best_score=max(state.best_score, 0.0))
        except TrialPruned as e:  # hand the caller the best epoch's model (saved for the verdict)
            if best_weights is not None:
                model.set_weights(best_weights)
            e.model = model
            raise
        if fixed_epochs is None and state.wait >= t.patience and epoch >= judge_from:
            stop_reason = "early_stopping"
            break

    if best_weights is not None:
        model.set_weights(best_weights)
    return TrainResult(
        model=model,
        history=state.history,
        best_score=float(state.best_score),
        best_epoch=int(state.best_epoch),
        epochs_run=int(state.epoch),
        stop_reason=stop_reason,
        train_s=state.train_s,
    )


def _stop_callback(stop: StopSignal) -> Any:
    """Checks ``stop`` after every optimizer step (raises StepStop)."""
    import keras

    class StopCallback(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            stop.check()

    return StopCallback()


def _collapse_check(state: LoopState, logs: dict[str, float]) -> str | None:
    """Count epochs of no predicted foreground with a flat validation loss; the reason once counting."""
    losses = [h.get("val_loss", math.nan) for h in state.history[-state.collapsed_for - 1:]]
    flat = all(math.isfinite(v) for v in losses) and (
        max(losses) - min(losses) <= COLLAPSE_LOSS_RTOL * max(abs(min(losses)), 1e-12)
    )
    if logs.get("val_pred_fg", 1.0) > 0.0 or state.best_score > ZERO_SCORE or not flat:
        state.collapsed_for = 0
        return None
    state.collapsed_for += 1
    return (
        f"collapsed: predicted no foreground on the validation split for {state.collapsed_for} epochs "
        f"while the validation loss stayed at {losses[-1]:.4f}"
    )


def predict_probabilities(model: Any, images: np.ndarray, *, batch_size: int) -> np.ndarray:
    """Probability maps [N,H,W] for uint8 images [N,H,W,C]."""
    out = []
    for i in range(0, len(images), max(1, batch_size)):
        batch = np.asarray(images[i : i + batch_size])
        out.append(np.asarray(model(batch, training=False))[..., 0])
    return np.concatenate(out, axis=0) if out else np.zeros((0,) + images.shape[1:3], np.float32)


def evaluate_model(model: Any, images: np.ndarray, masks: np.ndarray, *, batch_size: int, loss: str) -> dict[str, Any]:
    """Per-image hard dice/IoU at 0.5, reference soft batch dice and loss (means and per image)."""
    from models import get_loss, hard_dice_per_image, iou_per_image, soft_dice

    prob = predict_probabilities(model, images, batch_size=batch_size)
    truth = np.asarray(masks).astype(np.float32)
    dice = hard_dice_per_image(truth, prob, threshold=0.5)
    iou = iou_per_image(truth, prob, threshold=0.5)
    loss_fn = get_loss(loss)
    loss_value = float(np.mean(np.asarray(loss_fn(truth[..., None], prob[..., None].astype(np.float32)))))
    return {
        "hard_dice": float(np.mean(dice)) if len(dice) else float("nan"),
        "hard_iou": float(np.mean(iou)) if len(iou) else float("nan"),
        "soft_dice": float(soft_dice(truth, prob)),
        "loss": loss_value,
        "n_images": int(len(images)),
        "per_image": {"hard_dice": [float(x) for x in dice], "hard_iou": [float(x) for x in iou]},
    }
