"""Stopping a training at the next optimizer step: the run's deadline or Ctrl-C (issue 20).

The driver plans the deadline (search/study/budget.py) and hands the trial process its time; the training loop
(search/trial/training.py) checks a :class:`StopSignal` after every step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["BUDGET_STOP", "StepStop", "StopSignal", "stopped_by_budget"]

BUDGET_STOP = "budget: "  # the reason of a trial the deadline stopped (search/trial/task.py writes it)


def stopped_by_budget(reason: str) -> bool:
    """Whether a trial's recorded reason says the deadline stopped it (judged or not)."""
    return reason.startswith(BUDGET_STOP)


class StepStop(BaseException):
    """Raised inside training at a step boundary: the deadline passed (``budget``) or Ctrl-C (``user``).

    A BaseException so that no trial-local handler turns it into a failed trial.
    """

    def __init__(self, reason: Literal["budget", "user"]) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class StopSignal:
    """What a training loop checks after every optimizer step (search/trial/training.py).

    Args:
        at: the deadline (``time.time()``); None: none.
        flag: an object with ``is_set()`` (the driver's Ctrl-C, a ``multiprocessing.Event``).
        finish_judged: a trial already judged (past its warm-up) that meets the deadline ends with its
            best epoch (recorded complete); otherwise (and for k-fold folds) it stays resumable.
    """

    at: float | None = None
    flag: Any = None
    finish_judged: bool = True
    clock: Callable[[], float] = time.time

    def reason(self) -> Literal["budget", "user"] | None:
        if self.flag is not None and self.flag.is_set():
            return "user"
        if self.at is not None and self.clock() >= self.at:
            return "budget"
        return None

    def check(self) -> None:
        """Raise :class:`StepStop` if the training must stop now."""
        reason = self.reason()
        if reason is not None:
            raise StepStop(reason)
