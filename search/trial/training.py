"""Single-configuration training: specs + data → trained model, per-epoch history, best score.

The epoch loop is ours (one ``fit`` call per epoch) so that early stopping, the learning-rate
reducer and the pruning hook share one state that is checkpointed after every epoch: an
interrupted trial continues from its last completed epoch (weights, optimizer slots, dropout seed
states, counters), exactly: the same losses and weights as an uninterrupted run (tested).

When a trial may be judged (README, "Budgets, warm-up and when a trial is judged"):

- An epoch is ``TrainSpec.steps_per_epoch`` optimizer steps, whatever the dataset size.
- Nothing stops a trial during its warm-up (``TrainSpec.warmup_samples``), except a collapse.
- "No score yet": the model has not found foreground on the validation split, i.e. its best hard
  dice over the validation images whose mask is not empty (``val_fg_dice``) is still 0. Not the
  objective: that scores an empty mask with an empty prediction 1, so a model that predicts nothing
  scores the share of empty images (with no empty mask in the split, the two agree).
- Progress: a new best validation hard dice. While there is no score yet, a new best validation
  loss, soft dice or foreground dice is progress too, so a model that is learning but not yet over
  the 0.5 threshold on the structure is not stopped for "no improvement".
- Early stopping: ``patience`` epochs without progress, checked from the end of the warm-up on;
  the epochs without progress are counted during the warm-up too, so a trial that has made none
  in its last ``patience`` epochs stops at the first epoch after the warm-up.
- The learning-rate reducer counts epochs without progress by the same rule.
- A collapse: for ``collapse_epochs`` epochs in a row the model with no score yet predicts no
  foreground pixel on the validation split while the validation loss stays flat (relative range
  < ``COLLAPSE_LOSS_RTOL``). Such a trial ends as :class:`TrialCollapsed` (recorded ``pruned``,
  reason "collapsed: …").
- The pruner sees the running best score and is asked only when the epoch is judgeable
  (:meth:`LoopState.end_epoch`): after the warm-up, not while a trial with no score yet is still
  progressing, never for a collapsed one.
- A :class:`~search.trial.stop.StopSignal` (the run's deadline, Ctrl-C) is checked after every optimizer
  step: the partial epoch is dropped and the trial keeps its last completed epoch (its checkpoint).
  At the deadline a trial already judged ends there with its best epoch (``stop_reason`` "budget");
  otherwise :class:`~search.trial.stop.StepStop` goes on to the caller and the trial stays resumable.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data.dataset import resize_image, resize_mask
from data.labels import resize_labels
from search.config.specs import TrainSpec, TrialSpecs
from search.errors import TrialCollapsed, TrialFailed, TrialPruned
from search.results import atomic_write_bytes, atomic_write_json
from search.trial.stop import StepStop, StopSignal
from search.vocabulary import OBJECTIVE

__all__ = ["Checkpoint", "EpochHook", "EpochJudgement", "LoopState", "TrainResult", "class_means", "compile_model",
           "evaluate_model", "label_count", "lr_schedule_from_history", "predict_probabilities", "scored_rows", "train_model"]


logger = logging.getLogger(__name__)

EpochHook = Callable[[int, dict[str, float]], None]

# "No score yet" below this foreground dice: progress in loss or soft dice still counts (module docstring).
ZERO_SCORE = 1e-6
COLLAPSE_LOSS_RTOL = 1e-3


@dataclass(frozen=True)
class EpochJudgement:
    """What the rules (module docstring) make of one epoch."""

    improved: bool  # a new best score: keep these weights
    progressed: bool  # progress: early stopping and the reducer start counting again
    lr_reduced: bool = False
    judgeable: bool = False  # the pruner may be asked
    collapse: str | None = None  # the reason, once the trial has collapsed


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
    best_loss: float = math.inf  # validation loss and soft dice: progress while there is no score yet
    best_soft: float = -math.inf
    collapsed_for: int = 0  # consecutive epochs with no predicted foreground and a flat loss
    best_fg: float = -math.inf  # best hard dice over the validation images with foreground
    rung_size: int = 0  # the image side of the first rung the bests come from (0: the full size)

    def start_full_size(self) -> None:
        """Leave the first rung: its bests (at another size) say nothing of the full size's."""
        self.best_score, self.best_epoch, self.wait, self.reducer_wait = -math.inf, -1, 0, 0
        self.best_loss, self.best_soft, self.best_fg, self.collapsed_for = math.inf, -math.inf, -math.inf, 0
        self.rung_size = 0

    @property
    def has_score(self) -> bool:
        """Whether the model has found foreground on the validation split (module docstring)."""
        return self.best_fg > ZERO_SCORE

    def progress(self, *, score: float, loss: float, soft: float, fg: float) -> tuple[bool, bool]:
        """Update the bests with one epoch; return (new best score, progress by the rule above)."""
        improved = score > self.best_score
        progressed = improved
        if not self.has_score and not improved:
            progressed = (fg > ZERO_SCORE or loss < self.best_loss * (1 - COLLAPSE_LOSS_RTOL)
                          or soft > self.best_soft + 1e-4)
        self.best_loss = min(self.best_loss, loss) if math.isfinite(loss) else self.best_loss
        self.best_soft = max(self.best_soft, soft) if math.isfinite(soft) else self.best_soft
        self.best_fg = max(self.best_fg, fg) if math.isfinite(fg) else self.best_fg
        return improved, progressed

    def end_epoch(self, logs: dict[str, float], *, score: float, fg: float, spec: TrainSpec, judge_from: int,
                  check_collapse: bool) -> EpochJudgement:
        """Judge epoch ``self.epoch`` (its row already in ``history``) and advance the state to the next.

        ``fg``: the epoch's hard dice over the validation images with foreground; ``spec``: patience,
        reducer and collapse settings; ``judge_from``: the first epoch count after the warm-up.
        The caller applies ``self.lr`` to the optimizer when ``lr_reduced``.
        """
        improved, progressed = self.progress(
            score=score, loss=logs.get("val_loss", logs.get("loss", math.nan)),
            soft=logs.get("val_dice_coef", math.nan), fg=fg,
        )
        if improved:
            self.best_score, self.best_epoch = score, self.epoch
        lr_reduced = False
        if progressed:
            self.wait, self.reducer_wait = 0, 0
        else:
            self.wait += 1
            self.reducer_wait += 1
            if self.reducer_wait >= spec.reducer_patience and self.lr > spec.min_lr:
                self.lr = max(self.lr * spec.reducer_factor, spec.min_lr)
                self.reducer_wait = 0
                lr_reduced = True
        reason = _collapse_check(self, logs) if check_collapse and spec.collapse_epochs else None
        collapse = reason if reason is not None and self.collapsed_for >= spec.collapse_epochs else None
        self.epoch += 1
        judgeable = self.epoch >= judge_from and (self.has_score or not progressed) and collapse is None
        return EpochJudgement(improved=improved, progressed=progressed, lr_reduced=lr_reduced,
                              judgeable=judgeable, collapse=collapse)


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


    def history(self) -> list[dict[str, Any]]:
        """The committed epochs' history rows ([] when unreadable): what a resumed trial continues from."""
        try:
            return list(json.loads(self.state_path.read_text()).get("history", []))
        except (OSError, ValueError):
            return []

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

    from models import (
        ForegroundHardDice,
        HardDice,
        HardIoU,
        PredictedForeground,
        SoftDice,
        build_model,
        get_loss,
    )

    keras.utils.set_random_seed(specs.train.seed)
    model = build_model(specs.model)
    optimizer = keras.optimizers.Adam(learning_rate=specs.train.learning_rate, clipvalue=specs.train.clipvalue)
    model.compile(
        optimizer=optimizer,
        loss=get_loss(specs.train.loss),
        metrics=[
            HardDice(name="hard_dice"), HardIoU(name="hard_iou"), SoftDice(name="dice_coef"),
            PredictedForeground(name="pred_fg"), ForegroundHardDice(name="fg_dice"),
        ],
        jit_compile=specs.train.jit_compile,
    )
    # Built here, not by the first training step: Keras otherwise creates the optimizer's variables while
    # tracing the train function, and tf.function then traces it a second time without them (BENCHMARKS.md
    # B12b: 5 of a trial's ~16 s of start-up at 128² on 2 CPU cores). Zeros, no random draw: same results.
    model.optimizer.build(model.trainable_variables)
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
    lr_schedule: Sequence[float] | None = None,
    stop: StopSignal | None = None,
) -> TrainResult:
    """Train one configuration with early stopping on the validation objective.

    Args:
        on_epoch: called after every epoch (after the checkpoint) with the epoch's logs; it may
            raise ``TrialPruned`` or ``Interrupted`` to stop the run.
        checkpoint: if given, the loop resumes from it and saves it after every epoch.
        fixed_epochs: train exactly this many epochs without early stopping (final retrain on
            train+valid); the "best" is then the last epoch.
        lr_schedule: with ``fixed_epochs``, the learning rate of each epoch (the chosen trial's, from
            :func:`lr_schedule_from_history`), in place of the reducer, which has no validation
            split to watch; epochs past its end keep its last rate.
        stop: checked after every step (module docstring).

    Returns:
        The model with the best epoch's weights restored, and the per-epoch history.

    Raises:
        TrialFailed: when the loss becomes NaN/inf.
        ValueError: ``lr_schedule`` without ``fixed_epochs``, or empty.
        StepStop: stopped at a step boundary and not finished here (Ctrl-C, or the deadline before
            the trial was judged); the checkpoint holds the last completed epoch.
    """
    if lr_schedule is not None and (fixed_epochs is None or len(lr_schedule) == 0):
        raise ValueError("train_model: lr_schedule needs fixed_epochs and at least one learning rate")
    loop = _EpochLoop(specs, (train_images, train_masks, valid_images, valid_masks), on_epoch=on_epoch,
                      checkpoint=checkpoint, fixed_epochs=fixed_epochs, verbose=verbose, callbacks=callbacks,
                      lr_schedule=lr_schedule, stop=stop)
    return loop.run()


Arrays = tuple[np.ndarray, ...]  # train images, train masks, valid images, valid masks


class _EpochLoop:
    """One :func:`train_model` call: one ``model.fit`` per epoch (a seeded dataset per epoch), the rules of
    :meth:`LoopState.end_epoch` after each, the checkpoint, the epoch hook, and the first rung's switch to
    the full size. Keras's EarlyStopping and ReduceLROnPlateau cannot serve: they reset at every ``fit``."""

    def __init__(self, specs: TrialSpecs, arrays: Arrays, *, on_epoch: EpochHook | None,
                 checkpoint: Checkpoint | None, fixed_epochs: int | None, verbose: int,
                 callbacks: list[Any] | None, lr_schedule: Sequence[float] | None, stop: StopSignal | None) -> None:
        import keras

        self.specs, self.t = specs, specs.train
        self.on_epoch, self.checkpoint, self.fixed_epochs = on_epoch, checkpoint, fixed_epochs
        self.verbose, self.lr_schedule, self.stop = verbose, lr_schedule, stop
        self.full_model = self.model = compile_model(specs)
        self.state = LoopState(lr=self.t.learning_rate)
        self.best_weights: list[np.ndarray] | None = None
        if checkpoint is not None and checkpoint.exists():
            self.state, self.best_weights = checkpoint.load(self.model)
            self.model.optimizer.learning_rate.assign(self.state.lr)
            logger.info("resuming from epoch %d (best %.4f at epoch %d)", self.state.epoch, self.state.best_score,
                        self.state.best_epoch)
        self.has_valid = fixed_epochs is None and len(arrays[2]) > 0
        self.max_epochs = fixed_epochs if fixed_epochs is not None else self.t.max_epochs
        self.callbacks = [keras.callbacks.TerminateOnNaN(), *(callbacks or []),
                          *([_stop_callback(stop)] if stop else [])]
        self.judge_from = max(self.t.min_epochs, self.t.warmup_epochs(len(arrays[0])))  # no early stop before
        # "No score yet" asks the images with foreground; a split without any falls back to the objective.
        self.valid_has_fg = self.has_valid and bool(np.any(np.asarray(arrays[3])))
        self.full_arrays = arrays
        self.rung = FirstRung.of(specs, until=self.judge_from) if self.has_valid and fixed_epochs is None else None
        if self.rung is not None and self.state.epoch < self.rung.until:
            self.model = self.rung.model_from(self.full_model, lr=self.state.lr)
            self._use(self.rung.resize(*arrays))
            self.state.rung_size = self.rung.size
        else:
            self._use(arrays)

    def _use(self, arrays: Arrays) -> None:
        """Train and validate on ``arrays`` from the next epoch (the first rung's, or the full size's)."""
        from data import eval_dataset

        self.arrays = arrays
        self.valid_ds = (eval_dataset(arrays[2], arrays[3], batch_size=self.t.batch_size,
                                      num_classes=label_count(self.specs)) if self.has_valid else None)

    def run(self) -> TrainResult:
        state, t = self.state, self.t
        finished = state.epoch >= self.max_epochs or (
            self.fixed_epochs is None and state.wait >= t.patience and state.epoch >= self.judge_from)
        stop_reason = "resumed_finished" if finished else "max_epochs"
        epoch = state.epoch
        while epoch < self.max_epochs and stop_reason != "resumed_finished":
            self._leave_the_first_rung(epoch)
            t0 = time.perf_counter()
            self._apply_schedule(epoch)
            try:
                fit = self._fit(epoch)
            except StepStop as e:  # the partial epoch is dropped: the last completed epoch stands
                if not self._ends_judged(e):
                    raise
                stop_reason = "budget"
                logger.info("deadline during epoch %d: stopped; best epoch %d kept", epoch, state.best_epoch)
                break
            row, score, judged = self._judge(epoch, fit.history, time.perf_counter() - t0)
            epoch += 1
            if self.checkpoint is not None:
                self.checkpoint.save(self.model, state, best_improved=judged.improved)
            self._report(epoch - 1, row, score, judged)
            if self.fixed_epochs is None and state.wait >= t.patience and epoch >= self.judge_from:
                stop_reason = "early_stopping"
                break
        self._restore_best()
        return TrainResult(model=self.model, history=state.history, best_score=float(state.best_score),
                           best_epoch=int(state.best_epoch), epochs_run=int(state.epoch), stop_reason=stop_reason,
                           train_s=state.train_s)

    def _leave_the_first_rung(self, epoch: int) -> None:
        """Judged at the first rung: the trial goes on at the full size with the rung's weights."""
        if self.rung is None or epoch < self.rung.until or not self.state.rung_size:
            return
        self._to_full_model()
        self._use(self.full_arrays)
        self.state.start_full_size()
        self.best_weights = None
        logger.info("epoch %d: first rung (%d²) done; continuing at %d²", epoch, self.rung.size,
                    self.specs.model.image_size)

    def _to_full_model(self) -> None:
        if self.model is not self.full_model:
            _move_weights(self.model, self.full_model)
            self.model = self.full_model

    def _restore_best(self) -> None:
        """The full-size model (the caller scores at the full size) with the best epoch's weights."""
        self._to_full_model()
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)

    def _apply_schedule(self, epoch: int) -> None:
        if self.lr_schedule is not None:  # before the row records state.lr
            self.state.lr = float(self.lr_schedule[min(epoch, len(self.lr_schedule) - 1)])
            self.model.optimizer.learning_rate.assign(self.state.lr)

    def _fit(self, epoch: int) -> Any:
        from data import train_dataset

        if self.stop is not None:
            self.stop.check()
        # One dataset per epoch, keyed by the epoch number: a resumed run sees the same data.
        t = self.t
        train_ds = train_dataset(self.arrays[0], self.arrays[1], batch_size=t.batch_size, augment=self.specs.augment,
                                 seed=t.seed, epoch=epoch, steps=t.steps_per_epoch, num_classes=label_count(self.specs))
        return self.model.fit(train_ds, epochs=epoch + 1, initial_epoch=epoch, validation_data=self.valid_ds,
                              shuffle=False,  # the tf.data pipeline shuffles, seeded
                              verbose=self.verbose, callbacks=self.callbacks)

    def _ends_judged(self, stop: StepStop) -> bool:
        """Whether a stop at the deadline ends this run with its best epoch (else the caller resumes it)."""
        state = self.state
        was_judged = state.best_epoch >= 0 and (self.fixed_epochs is not None or state.epoch >= self.judge_from)
        return stop.reason == "budget" and self.stop is not None and self.stop.finish_judged and was_judged

    def _judge(self, epoch: int, history: dict[str, list[float]],
               elapsed: float) -> tuple[dict[str, float], float, EpochJudgement]:
        """Record epoch ``epoch`` and apply the rules; keep its weights if it is the best."""
        state = self.state
        logs = {k: float(v[-1]) for k, v in history.items() if v}
        loss = logs.get("loss", float("nan"))
        if not math.isfinite(loss):
            raise TrialFailed(f"loss became {loss} at epoch {epoch} (learning_rate={self.t.learning_rate:g})")
        score = (logs.get(OBJECTIVE, logs.get("hard_dice", float("nan"))) if self.has_valid
                 else logs.get("hard_dice", 0.0))
        if not math.isfinite(score):
            raise TrialFailed(f"validation score became {score} at epoch {epoch}")
        row = {"epoch": epoch, **logs, "lr": float(state.lr), "epoch_s": round(elapsed, 3),
               "image_size": float(state.rung_size or self.specs.model.image_size)}
        state.history.append(row)
        state.train_s += elapsed
        if self.fixed_epochs is not None:
            state.best_score, state.best_epoch = score, epoch
            state.epoch = epoch + 1
            judged = EpochJudgement(improved=True, progressed=True,
                                    judgeable=state.epoch >= self.judge_from and score > ZERO_SCORE)
        else:
            fg = logs.get("val_fg_dice", score) if self.valid_has_fg else score
            judged = state.end_epoch(logs, score=score, fg=fg, spec=self.t, judge_from=self.judge_from,
                                     check_collapse=self.has_valid)
            if judged.lr_reduced:
                self.model.optimizer.learning_rate.assign(state.lr)
                logger.debug("epoch %d: learning rate reduced to %.3g", epoch, state.lr)
        if judged.improved:
            self.best_weights = [w.copy() for w in self.model.get_weights()]
        return row, score, judged

    def _report(self, epoch: int, row: dict[str, float], score: float, judged: EpochJudgement) -> None:
        """Tell the hook (which may prune); a pruned or collapsed run hands over its best epoch's model."""
        try:
            if self.on_epoch is not None:
                self.on_epoch(epoch, {**row, "score": score, "best_score": float(self.state.best_score),
                                      "judgeable": float(judged.judgeable)})
            if judged.collapse is not None:
                raise TrialCollapsed(judged.collapse, epochs_run=epoch + 1, best_score=max(self.state.best_score, 0.0))
        except TrialPruned as e:  # hand the caller the best epoch's model (saved for the verdict)
            self._restore_best()
            e.model = self.model
            raise


@dataclass(frozen=True)
class FirstRung:
    """The first rung of a trial at a reduced image side (``TrainSpec.first_rung_size``; issue 20).

    The epochs before the trial's first judgement (``until``: the end of its warm-up) train and validate on
    the images and masks resized to ``size`` with the dataset's own geometry, in a model of the same
    architecture built at that size. A UNet is fully convolutional, so every weight and optimizer variable
    has the same shape at both sizes: after the first judgement they move into the full-size model, the
    bests start again (:meth:`LoopState.start_full_size`) and the trial goes on at the full size, so its
    score, early stopping and best weights are the full size's. A trial pruned at the first rung costs
    about (size / full)² of a full-size warm-up.
    """

    specs: Any
    size: int
    until: int

    @classmethod
    def of(cls, specs: TrialSpecs, *, until: int) -> FirstRung | None:
        size = specs.train.first_rung_size
        if size is None or size >= specs.model.image_size:
            return None
        return cls(specs=dataclasses.replace(specs, model=dataclasses.replace(specs.model, image_size=size)),
                   size=size, until=until)

    def model_from(self, full_model: Any, *, lr: float) -> Any:
        """The first rung's model, holding ``full_model``'s weights and optimizer state."""
        model = compile_model(self.specs)
        _move_weights(full_model, model)
        model.optimizer.learning_rate.assign(lr)
        return model

    def resize(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """Images [N, H, W, C] and masks [N, H, W] at the first rung's size (data/dataset.py's resize)."""
        out = []
        for a in arrays:
            a = np.asarray(a)
            if a.ndim == 4:
                out.append(np.stack([resize_image(x, self.size) for x in a]) if len(a) else a[:, :self.size, :self.size])
            else:
                out.append(np.stack([self._resize_labels(x) for x in a]) if len(a) else a[:, :self.size, :self.size])
        return tuple(out)

    def _resize_labels(self, mask: np.ndarray) -> np.ndarray:
        k = self.specs.model.num_classes
        return resize_mask(mask, self.size) if k == 1 else resize_labels(mask, self.size, k)


def _move_weights(src: Any, dst: Any) -> None:
    """Copy ``src``'s weights and its optimizer's state into ``dst`` (the same architecture at another size)."""
    dst.set_weights(src.get_weights())
    if not src.optimizer.built:
        return
    if not dst.optimizer.built:
        dst.optimizer.build(dst.trainable_variables)
    for target, value in zip(dst.optimizer.variables, src.optimizer.variables, strict=True):
        target.assign(value)


def lr_schedule_from_history(rows: Sequence[dict[str, Any]], *, epochs: int) -> tuple[float, ...] | None:
    """The learning rate of each of a trial's first ``epochs`` epochs, from its ``history.csv`` rows.

    A retrain for a fixed number of epochs has no validation split for the reducer to watch, so it
    replays the rates the chosen trial trained with. A k-fold trial's rows hold one run per fold
    (``fold``): the schedule is that of the first fold whose best epoch is the trial's (the median
    fold's, so ``epochs - 1``), else fold 0's. Epochs missing at the end repeat the last rate; None
    when the rows hold no learning rate.
    """
    runs: dict[int, dict[int, dict[str, Any]]] = {}
    for row in rows:
        if _finite(row.get("lr")) and _finite(row.get("epoch")):
            fold = int(float(row["fold"])) if _finite(row.get("fold")) else 0
            runs.setdefault(fold, {})[int(float(row["epoch"]))] = row
    if not runs or epochs < 1:
        return None

    def best_epoch(run: dict[int, dict[str, Any]]) -> int:
        scores = {e: float(r.get(OBJECTIVE, math.nan)) for e, r in run.items() if _finite(r.get(OBJECTIVE))}
        return max(sorted(scores), key=lambda e: scores[e]) if scores else -1  # the first best, as training

    run = next((runs[f] for f in sorted(runs) if best_epoch(runs[f]) == epochs - 1), runs[min(runs)])
    lrs = [float(run[e]["lr"]) for e in sorted(run) if e < epochs]
    return tuple(lrs + lrs[-1:] * (epochs - len(lrs))) if lrs else None


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


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
    if logs.get("val_pred_fg", 1.0) > 0.0 or state.has_score or not flat:
        state.collapsed_for = 0
        return None
    state.collapsed_for += 1
    return (
        f"collapsed: predicted no foreground on the validation split for {state.collapsed_for} epochs "
        f"while the validation loss stayed at {losses[-1]:.4f}"
    )


def label_count(specs: TrialSpecs) -> int:
    """K, the background included, of a trial's masks (2 for a one-channel binary model)."""
    return max(2, specs.model.num_classes)


def predict_probabilities(model: Any, images: np.ndarray, *, batch_size: int) -> np.ndarray:
    """Probability maps for images [N,H,W,C]: [N,H,W] for a one-channel (binary) model, [N,H,W,K] for K classes."""
    out = []
    for i in range(0, len(images), max(1, batch_size)):
        batch = np.asarray(images[i : i + batch_size])
        prob = np.asarray(model(batch, training=False))
        out.append(prob[..., 0] if prob.shape[-1] == 1 else prob)
    return np.concatenate(out, axis=0) if out else np.zeros((0,) + images.shape[1:3], np.float32)


def evaluate_model(model: Any, images: np.ndarray, masks: np.ndarray, *, batch_size: int, loss: str) -> dict[str, Any]:
    """Per-image hard dice/IoU at 0.5, reference soft batch dice and loss (means and per image).

    ``soft_dice`` and ``loss`` are taken per batch of ``batch_size`` images, as training logs
    ``val_dice_coef`` (the mean over batches) and ``val_loss`` (weighted by batch size). A model of several
    classes also gets ``per_class``: each foreground class's hard dice and IoU, the mean over the images that
    score it (None when no image does; models/metrics.py states the rule), and per image ([N][C], None unscored).
    """
    from models import get_loss, hard_dice_per_class, image_means, iou_per_class, predicted_labels, soft_dice

    prob = predict_probabilities(model, images, batch_size=batch_size)
    truth = np.asarray(masks).astype(np.float32)
    multi = prob.ndim == 4
    dice_table = hard_dice_per_class(truth, prob, threshold=0.5)
    iou_table = iou_per_class(truth, prob, threshold=0.5)
    dice, iou = image_means(dice_table), image_means(iou_table)
    out = {
        "hard_dice": float(np.mean(dice)) if len(dice) else float("nan"),
        "hard_iou": float(np.mean(iou)) if len(iou) else float("nan"),
        "soft_dice": soft_dice(truth, prob, batch_size=max(1, batch_size)) if len(truth) else float("nan"),
        "loss": _batched_loss(get_loss(loss), truth, prob if multi else prob[..., None], batch_size),
        "n_images": int(len(images)),
        # Share of all pixels predicted / truly foreground: a model that paints 17x the true area shows here.
        "pred_fg_fraction": float(np.mean(predicted_labels(prob) > 0)) if prob.size else float("nan"),
        "true_fg_fraction": float(np.mean(truth > 0.5)) if truth.size else float("nan"),
        "per_image": {"hard_dice": [float(x) for x in dice], "hard_iou": [float(x) for x in iou]},
    }
    if multi:
        out["per_class"] = {"hard_dice": class_means(dice_table), "hard_iou": class_means(iou_table),
                            "per_image_hard_dice": scored_rows(dice_table)}
    return out


def class_means(table: np.ndarray) -> list[float | None]:
    """Each class's mean over the images that score it ([N, C] with NaN unscored → C values, None if never)."""
    table = np.asarray(table, dtype=np.float64)
    return [float(np.nanmean(col)) if np.isfinite(col).any() else None for col in table.T]


def scored_rows(table: np.ndarray) -> list[list[float | None]]:
    """A per-class table ([N, C], NaN unscored) as JSON rows, None where a class is not scored."""
    return [[float(x) if math.isfinite(float(x)) else None for x in row] for row in np.asarray(table)]


def _batched_loss(loss_fn: Any, truth: np.ndarray, prob: np.ndarray, batch_size: int) -> float:
    starts = range(0, len(truth), max(1, batch_size))
    batch_losses = [float(np.mean(np.asarray(loss_fn(truth[i : i + batch_size, ..., None],
                                                     prob[i : i + batch_size].astype(np.float32)))))
                    for i in starts]
    sizes = [len(truth[i : i + batch_size]) for i in starts]
    return float(np.average(batch_losses, weights=sizes)) if sizes else float("nan")
