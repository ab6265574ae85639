"""Study progress: one log line per finished trial and a study-level bar (trials, best, ETA).

With a time budget the ETA counts down to the run's deadline when that comes before the trial budget
is spent (search/study/budget.py)."""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import TYPE_CHECKING, Any

from search.results import TrialRecord
from search.trial.task import EpochReport

if TYPE_CHECKING:
    from search.study.budget import Deadline

__all__ = ["SHOWN", "Progress", "format_value"]


logger = logging.getLogger("search.study.progress")

# Hyperparameters worth showing in the one-line trial summary.
SHOWN = ("variant", "base_filters", "base_kernels", "num_layers", "learning_rate", "dropout_rate", "dilation")


class Progress:
    """A tqdm bar on stderr when it is a terminal; log lines always."""

    def __init__(self, *, total: int, enabled: bool = True, done: int = 0, deadline: Deadline | None = None) -> None:
        self.total = total
        self.deadline = deadline
        self.done = done
        self.t0 = time.time()
        self.finished_this_run = 0
        self._bar: Any = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, desc="trials", unit="trial", dynamic_ncols=True, leave=True)

    def trial_started(self, number: int) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"trial {number} starting")

    def epoch(self, number: int, report: EpochReport) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"trial {number} epoch {report.epoch} dice {report.score:.3f}")

    def trial_finished(self, rec: TrialRecord, best: TrialRecord | None) -> None:
        self.done += 1
        self.finished_this_run += 1
        score = "-" if rec.score is None else f"{rec.score:.4f}"
        best_s = "-" if best is None or best.score is None else f"{best.score:.4f} (#{best.number})"
        shown = " ".join(f"{k}={format_value(rec.values[k])}" for k in SHOWN if k in rec.values)
        reason = f" reason: {rec.reason}" if rec.reason else ""  # a complete trial's: the budget stopped it
        eta = ""
        by_trials = math.inf
        if self.finished_this_run and self.done < self.total:
            by_trials = (time.time() - self.t0) / self.finished_this_run * (self.total - self.done)
        by_budget = self.deadline.remaining() if self.deadline is not None else math.inf
        if by_budget < by_trials:
            eta = f" eta {_duration(max(0.0, by_budget))} (budget)"
        elif math.isfinite(by_trials):
            eta = f" eta {_duration(by_trials)}"
        line = (
            f"trial {rec.number:>3} {rec.status:<8} score {score} best {best_s} "
            f"{rec.duration_s:.0f}s {rec.epochs_run} ep [{self.done}/{self.total}{eta}]"
            f"{' baseline' if rec.baseline else ''} {shown}{reason}"
        )
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(f"best {best_s}")
            self._bar.write(line, file=sys.stderr)
        else:
            logger.info(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def format_value(v: Any, *, digits: int = 4) -> str:
    """A hyperparameter value for people: floats to ``digits`` significant digits (0.0001379, not 0.00013795764907022507)."""
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h"
