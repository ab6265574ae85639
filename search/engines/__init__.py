"""Strategy loops: Keras Tuner's and Optuna's, both calling the same trial executor."""

from __future__ import annotations

from typing import Any, Protocol

from search.results import TrialRecord


class Executor(Protocol):
    """What an engine calls to run one trial (implemented by the runner)."""

    def __call__(
        self,
        number: int,
        sampled: dict[str, Any],
        *,
        baseline: bool,
        max_epochs: int | None = None,
        should_prune: Any = None,
    ) -> TrialRecord: ...

    def budget_left(self) -> bool: ...

    @property
    def baselines(self) -> bool: ...
