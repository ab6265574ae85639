"""What every trial task shares: the task sent to a trial process, the outcome it reports, and the common
run (history.csv, failures turned into outcomes, the seconds it trained).

The driver turns a trial's values into frozen specs (``search/config/specs.py``) and sends one
:class:`TrialTask` subclass per kind: nothing here reads the study config. A holdout trial
(``search/trial/holdout.py``) trains on the train split and is scored on the valid split; a k-fold trial
is ``search/trial/kfold.py``; the final stage (test the chosen model and the baseline) is
``search/trial/final.py``; the throughput probe is ``search/trial/probe.py``. Each writes only inside its
own folder. The kinds import this module, never the reverse.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.config.specs import TrialSpecs
from search.errors import TrialCollapsed, TrialFailed, TrialPruned
from search.results import write_history_csv, write_traceback
from search.results.layout import (
    CHECKPOINT_DIR,
    HISTORY_CSV,
)
from search.trial.stop import BUDGET_STOP, StepStop, StopSignal
from search.vocabulary import OBJECTIVE, TrialState

if TYPE_CHECKING:
    from search.evaluation import Units

__all__ = ["EpochReport", "ModelSource", "TaskRun", "TrialOutcome", "TrialOutputs", "TrialTask", "drop_checkpoint", "row_score",
           "run_task"]


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


@dataclass(frozen=True)
class EpochReport:
    """What the trial process tells the driver after an epoch (it crosses the pipe).

    The history row (history.csv) carries the same values as columns; the driver reads these fields,
    never the row's keys.
    """

    epoch: int
    score: float  # this epoch's objective (validation hard dice)
    best_score: float  # the running best: what the pruner is shown
    judgeable: bool  # past the warm-up, and not still learning with a zero score: the pruner may be asked
    fold: int = 0  # k-fold: the fold it belongs to (the pruner judges the first)
    logs: dict[str, float] = field(default_factory=dict)  # the whole row: Keras's metrics, lr, seconds, size

    @classmethod
    def of(cls, epoch: int, row: dict[str, float]) -> EpochReport:
        """The report of a history row written by the training loop (search/trial/training.py)."""
        score = float(row.get("score", row.get(OBJECTIVE, float("nan"))))
        return cls(epoch=epoch, score=score, best_score=float(row.get("best_score", score)),
                   judgeable=bool(row.get("judgeable", 1.0)), fold=int(row.get("fold", 0)), logs=dict(row))


@dataclass
class TaskRun:
    """What a task's :meth:`TrialTask.train` works with, in the trial process."""

    data: Any  # the study's cached splits (data.split(name) -> images, masks, stems)
    out: Path  # the task's folder; it writes nowhere else
    history: list[dict[str, Any]]  # the epochs so far (restored ones first), as history.csv has them
    hook: Callable[[int, dict[str, float]], None]  # after each epoch: history.csv, then the driver
    on_epoch: Callable[[int, dict[str, float]], None]  # the driver alone (progress, pruning, Ctrl-C)
    stop: StopSignal | None = None


@dataclass
class TrialTask:
    """What the driver sends a trial process: frozen specs and plain data (it crosses a process boundary).

    One subclass per kind, each with its own :meth:`train`: a holdout trial (search/trial/holdout.py), a
    k-fold trial (search/trial/kfold.py), the final stage (search/trial/final.py) and the throughput
    probe (search/trial/probe.py).

    ``units``: each image's patient, so that standard errors and fold pruning count patients (None: every
    image is a unit). ``stop_at``: the deadline (``time.time()``) at which training stops at the next step.
    """

    number: int
    specs: TrialSpecs
    out_dir: str
    cache_path: str
    outputs: TrialOutputs = field(default_factory=TrialOutputs)
    units: Units | None = None
    verbose: int = 0
    stop_at: float | None = None

    def train(self, run: TaskRun) -> TrialOutcome:
        """Train (or test) in ``run.out`` and return the outcome; trial-local errors may propagate (:meth:`run`)."""
        raise NotImplementedError(f"{type(self).__name__}.train")

    def run(self, data: Any, on_epoch: Callable[[int, dict[str, float]], None],
            stop: StopSignal | None = None) -> TrialOutcome:
        """Run the task; trial-local failures become outcomes, not exceptions.

        ``stop`` (the deadline, Ctrl-C) may end training at a step boundary: a trial already judged ends
        with its best epoch, otherwise the outcome is ``running`` (resumable) with ``stopped_by`` set.
        """
        t0 = time.perf_counter()
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        history: list[dict[str, Any]] = []

        def hook(epoch: int, logs: dict[str, float]) -> None:
            history.append(logs)
            write_history_csv(out / HISTORY_CSV, history)
            on_epoch(epoch, logs)

        try:
            outcome = self.train(TaskRun(data=data, out=out, history=history, hook=hook, on_epoch=on_epoch, stop=stop))
        except BaseException as e:  # noqa: BLE001 - sorted into outcomes; anything else goes on
            outcome = _outcome_of(e, self, out, history)
        # A resumed trial's earlier segments count too (their epochs' seconds, from the checkpoint).
        outcome.duration_s = time.perf_counter() - t0 + _earlier_segments_s(history)
        if not outcome.train_s:  # pruned, failed or stopped: the seconds of the epochs it did train
            outcome.train_s = float(sum(float(h.get("epoch_s", 0.0)) for h in history))
        return outcome


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
    """Run any task in this process (:meth:`TrialTask.run`); the trial process calls this."""
    return task.run(data, on_epoch, stop)


def _outcome_of(e: BaseException, task: TrialTask, out: Path, history: list[dict[str, Any]]) -> TrialOutcome:
    """The outcome of a task that ended with ``e``; re-raises what is not trial-local (a kill, SystemExit)."""
    if isinstance(e, StepStop):  # the deadline before the trial was judged, or Ctrl-C: resumable from its checkpoint
        return TrialOutcome(status=TrialState.RUNNING, stopped_by=e.reason, epochs_run=len(history), reason=(
            "interrupted by the user (resumable)" if e.reason == "user" else
            f"{BUDGET_STOP}the deadline came before its first judgement (after {len(history)} epochs); it resumes "
            f"from there when the study runs again"))
    if isinstance(e, TrialPruned):
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
        return outcome
    if isinstance(e, TrialFailed):
        drop_checkpoint(out)
        return TrialOutcome(status=TrialState.FAILED, reason=e.reason, epochs_run=len(history), infeasible=e.infeasible)
    if isinstance(e, MemoryError):
        return TrialOutcome(status=TrialState.FAILED, reason="out of host memory", epochs_run=len(history))
    if not isinstance(e, Exception):  # KeyboardInterrupt, SystemExit, a kill: not the trial's failure
        raise e
    name = type(e).__name__  # a trial-local crash must not end the search
    if "ResourceExhausted" in name or "OOM" in str(e)[:200]:
        reason = f"out of device memory ({name})"
    else:
        reason = f"{name}: {str(e).splitlines()[0] if str(e) else ''}"[:400]
    logger.debug("trial %d crashed", task.number, exc_info=e)
    write_traceback(out, e)  # the whole story, for `status NAME --debug`
    return TrialOutcome(status=TrialState.FAILED, reason=reason, epochs_run=len(history))


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


def drop_checkpoint(out: Path) -> None:
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
