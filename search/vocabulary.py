"""The words the driver, the trial processes and the engines share (DESIGN §3), each defined once.

- :class:`TrialState`: a trial's status in the results contract (``trials.csv``, ``trial.json``). A
  ``StrEnum``, so the on-disk strings stay ``running``, ``complete``, ``pruned``, ``failed``.
- :class:`EpochDecision`: what the driver answers a trial process after each epoch.
- :data:`OBJECTIVE`: the score's name in the epoch logs (validation hard dice, maximised).

The engines translate our states in one place each: Optuna in :func:`optuna_state` (the Optuna loop
and the dashboard mirror use it), Keras Tuner in :data:`KERAS_TUNER_STATES`.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

__all__ = ["CLASS_DICE", "KERAS_TUNER_STATES", "OBJECTIVE", "EpochDecision", "PruneHook", "TrialState", "optuna_state"]

OBJECTIVE = "val_hard_dice"  # Keras logs "val_" + the HardDice metric's name (search/trial/training.py)
CLASS_DICE = "dice_"  # + a class name: one foreground class's hard dice (multi-class studies; trials.csv columns)

# An engine's per-epoch hook: report (epoch, running best score); when the third argument (ask) is
# true, also return whether the pruner stops the trial.
PruneHook = Callable[[int, float, bool], bool]


class TrialState(StrEnum):
    """A trial's status. ``running`` also means interrupted: the trial resumes from its checkpoint."""

    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"


class EpochDecision(StrEnum):
    """The driver's answer to a trial process after each epoch."""

    CONTINUE = "continue"
    PRUNE = "prune"  # the pruner stopped the trial: it ends pruned
    STOP = "stop"  # Ctrl-C or a vanished main driver: checkpoint and stop, the trial stays running


def optuna_state(state: TrialState) -> Any:
    """The ``optuna.trial.TrialState`` of one of our states."""
    from optuna.trial import TrialState as OptunaState

    return {
        TrialState.RUNNING: OptunaState.RUNNING,
        TrialState.COMPLETE: OptunaState.COMPLETE,
        TrialState.PRUNED: OptunaState.PRUNED,
        TrialState.FAILED: OptunaState.FAIL,
    }[TrialState(state)]


# Keras Tuner's ``TrialStatus`` of an ended trial → ours (its RUNNING, IDLE and STOPPED trials have not ended).
# Keras Tuner has no "pruned": version 1.4 cannot stop a trial mid-training; a trial that our rules
# stopped (collapsed) reports its score and a flag metric instead (search/engines/kt_engine.py, kt_trial_state).
KERAS_TUNER_STATES: dict[str, TrialState] = {
    "COMPLETED": TrialState.COMPLETE,
    "FAILED": TrialState.FAILED,
    "INVALID": TrialState.FAILED,
}
