"""Strategy loops: Keras Tuner's (:mod:`search.engines.kt_engine`) and Optuna's
(:mod:`search.engines.optuna_engine`), both calling the same :class:`Executor`.

The engines import keras_tuner / optuna: import the loop you need from its module.
"""

from __future__ import annotations

from typing import Any, Protocol

from search.results import TrialRecord
from search.vocabulary import PruneHook, TrialState

__all__ = ["Executor"]


class Executor(Protocol):
    """What an engine calls to run and record trials (implemented by search/study/executor.py)."""

    baselines: bool  # whether trial 0 is the reference configuration

    @property
    def stop_requested(self) -> int:
        """Ctrl-C count: the engines start no further trial once it is set."""
        ...

    def __call__(
        self,
        number: int,
        sampled: dict[str, Any],
        *,
        baseline: bool,
        max_epochs: int | None = None,
        should_prune: PruneHook | None = None,
    ) -> TrialRecord:
        """Run trial ``number`` with the engine's sampled values and return its record."""
        ...

    def budget_left(self) -> bool:
        """Whether the time budget allows another trial."""
        ...

    def owns_stale_trial(self, number: int) -> bool:
        """Whether a trial left running by a dead driver ran here (its checkpoint is in this folder)."""
        ...

    def mark_lost(self, number: int, reason: str, *, force: bool = False) -> None:
        """Record as failed a trial the engine's storage gave up on."""
        ...

    def record_external(
        self, number: int, sampled: dict[str, Any], *, status: TrialState, score: float | None, reason: str,
        baseline: bool,
    ) -> None:
        """Record a trial that another process ran (a Keras Tuner chief's view of its workers' trials)."""
        ...
