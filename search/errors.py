"""The error taxonomy: the exception type decides what a failure ends.

- ``ConfigError``   – bad configuration or usage; the command stops, exit code 2.
- ``DatasetError``  – (defined in ``data``) bad dataset; the command stops, exit code 3.
- ``TrialFailed``   – ends one trial (NaN loss, worker crash, infeasible values); the search goes on.
- ``TrialPruned``   – the pruner stopped one trial early; the search goes on.
- ``TrialCollapsed`` – a ``TrialPruned``: the model collapsed to all-background (recorded as pruned).
- ``SearchAborted`` – the search cannot usefully go on (too many consecutive failures); exit code 1.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "Interrupted",
    "SearchAborted",
    "TrialCollapsed",
    "TrialFailed",
    "TrialPruned",
]


class ConfigError(Exception):
    """Invalid configuration, search space or command-line usage (exit code 2)."""


class TrialFailed(Exception):
    """One trial failed; ``reason`` is recorded in the results and the search continues."""

    def __init__(self, reason: str, *, infeasible: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.infeasible = infeasible


class TrialPruned(Exception):
    """The pruner stopped this trial early."""

    def __init__(self, reason: str = "pruned") -> None:
        super().__init__(reason)
        self.reason = reason
        self.model: Any = None  # set by the training loop: the model with its best epoch's weights


class TrialCollapsed(TrialPruned):
    """The model predicts background everywhere and its loss has stopped moving: stop it."""

    def __init__(self, reason: str, *, epochs_run: int, best_score: float) -> None:
        super().__init__(reason)
        self.epochs_run = epochs_run
        self.best_score = best_score


class SearchAborted(Exception):
    """The search stopped itself (e.g. too many consecutive failures)."""


class Interrupted(Exception):
    """The user asked the search to stop (Ctrl-C); the study is resumable."""
