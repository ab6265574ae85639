"""Keras Tuner strategies (random, bayesian, hyperband) running Keras Tuner's own loop and state.

Keras Tuner 1.4 cannot prune mid-training, so trials always run to early stopping (hyperband
instead gives each trial its epoch budget through ``tuner/epochs``; trials start from scratch).
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import keras_tuner as kt
from keras_tuner.engine import base_tuner

from search.config import Config
from search.engines import Executor
from search.errors import Interrupted, SearchAborted
from search.space import baseline_values, to_keras_tuner

logger = logging.getLogger(__name__)
OBJECTIVE = kt.Objective("val_hard_dice", direction="max")


def _oracle_class(cfg: Config) -> type:
    return {
        "random": kt.oracles.RandomSearchOracle,
        "bayesian": kt.oracles.BayesianOptimizationOracle,
        "hyperband": kt.oracles.HyperbandOracle,
    }[cfg.study.strategy]


def make_oracle(cfg: Config, *, executor: Executor) -> Any:
    """The strategy's oracle, extended to (1) give trial 0 the baseline values, (2) stop at the budget."""
    base = _oracle_class(cfg)
    baseline = baseline_values(cfg) if cfg.study.baselines else None
    max_trials = cfg.study.max_trials

    class StudyOracle(base):  # type: ignore[misc, valid-type]
        def populate_space(self, trial_id: str) -> dict[str, Any]:
            if len(self.trials) >= max_trials or not executor.budget_left():
                return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
            response = super().populate_space(trial_id)
            if baseline is not None and int(trial_id) == 0 and response.get("values") is not None:
                response["values"] = {**response["values"], **baseline}
            return response

    kwargs: dict[str, Any] = {
        "objective": OBJECTIVE,
        "hyperparameters": to_keras_tuner(cfg),
        "allow_new_entries": False,
        "tune_new_entries": False,
        "seed": cfg.study.seed,
        "max_consecutive_failed_trials": 10**9,  # the runner enforces its own limit
    }
    if cfg.study.strategy == "hyperband":
        kwargs.update(max_epochs=cfg.train.max_epochs, factor=cfg.study.hyperband_factor)
    else:
        kwargs.update(max_trials=max_trials)
    return StudyOracle(**kwargs)


class _Stop(kt.errors.FatalError):
    """Carries Interrupted/SearchAborted through Keras Tuner, which swallows other exceptions.

    A FatalError leaves the trial in the oracle's ongoing trials, so on reload Keras Tuner
    retries it under the same id and our executor continues it from its checkpoint.
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


class StudyTuner(base_tuner.BaseTuner):
    """Keras Tuner's loop; each trial runs through the shared executor."""

    def __init__(self, oracle: Any, *, executor: Executor, directory: Path) -> None:
        self.executor = executor
        with contextlib.redirect_stdout(io.StringIO()):  # Keras Tuner prints "Reloading ..."
            super().__init__(oracle=oracle, hypermodel=None, directory=str(directory), project_name="keras_tuner")

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        values = dict(trial.hyperparameters.values)
        number = int(trial.trial_id)
        max_epochs = values.get("tuner/epochs")
        try:
            rec = self.executor(
                number,
                {k: v for k, v in values.items() if not k.startswith("tuner/")},
                baseline=number == 0 and self.executor.baselines,
                max_epochs=int(max_epochs) if max_epochs is not None else None,
            )
        except (Interrupted, SearchAborted) as e:
            raise _Stop(e) from e
        if rec.status != "complete" or rec.score is None:
            raise kt.errors.FailedTrialError(rec.reason or rec.status)
        return {"val_hard_dice": float(rec.score)}

    def save_model(self, trial_id: str, model: Any, step: int = 0) -> None:  # weights live in the results
        return None

    def load_model(self, trial: Any) -> Any:
        raise NotImplementedError("models are in results/<study>/trials/<n>/best.weights.h5")


def run_keras_tuner(cfg: Config, *, executor: Executor, engine_dir: Path) -> None:
    """Run (or resume) the Keras Tuner loop until the trial or time budget is spent."""
    engine_dir.mkdir(parents=True, exist_ok=True)
    oracle = make_oracle(cfg, executor=executor)
    tuner = StudyTuner(oracle, executor=executor, directory=engine_dir)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            tuner.search(verbose=0)
    except _Stop as e:
        raise e.original from None
