"""Keras Tuner strategies (random, bayesian, hyperband) running Keras Tuner's own loop and state.

Keras Tuner 1.4 cannot prune mid-training, so trials always run to early stopping (hyperband
instead gives each trial its epoch budget through ``tuner/epochs``; trials start from scratch).
The baseline (trial 0) runs outside hyperband's brackets with the full ``train.max_epochs``: it is
what the final verdict compares the chosen model with, so it must train as long as the others may.
A trial that our rules stopped (collapsed: ``pruned``) reports its best score like a complete one,
so that the oracle learns from it; the metric :data:`PRUNED_METRIC` tells a chief that it was pruned.

Several processes or machines use Keras Tuner's chief/worker mode, driven by its environment
variables: the chief (``KERASTUNER_TUNER_ID=chief``) serves the oracle over gRPC at
``KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT`` and runs no trial; each worker
(``KERASTUNER_TUNER_ID=tuner0``, ``tuner1``, …) asks it for trials and runs them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras_tuner as kt
from keras_tuner.engine import base_tuner

from search.config import Config
from search.config.space import baseline_values, to_keras_tuner
from search.engines import Executor
from search.errors import ConfigError, Interrupted, SearchAborted
from search.results import atomic_write_text
from search.results.layout import BEST_WEIGHTS, KT_TRIAL_JSON, TRIALS_DIR
from search.vocabulary import KERAS_TUNER_STATES, OBJECTIVE, TrialState

__all__ = ["PRUNED_METRIC", "StudyTuner", "kt_trial_state", "make_oracle", "run_keras_tuner", "serve_oracle"]

logger = logging.getLogger(__name__)
KT_OBJECTIVE = kt.Objective(OBJECTIVE, direction="max")
RUNNING = kt.engine.trial.TrialStatus.RUNNING
STOPPED = kt.engine.trial.TrialStatus.STOPPED
# Reported with the score of a trial that our rules stopped early: Keras Tuner has no pruned state,
# and a trial's metrics (unlike its message) reach a chief over gRPC.
PRUNED_METRIC = "unet_search_pruned"


def _oracle_class(cfg: Config) -> type:
    return {
        "random": kt.oracles.RandomSearchOracle,
        "bayesian": kt.oracles.BayesianOptimizationOracle,
        "hyperband": kt.oracles.HyperbandOracle,
    }[cfg.study.strategy]


def make_oracle(cfg: Config, *, executor: Executor, chief: bool = False) -> Any:  # noqa: C901 - a class factory:
    # the count is the sum of its small methods; the base class is the strategy's, chosen at run time
    """The strategy's oracle, extended to (1) give trial 0 the baseline values (hyperband: outside
    its brackets, so with the full epoch budget), (2) stop at the budget, (3) write its state
    atomically, (4) on a chief, record trials that workers ended."""
    base = _oracle_class(cfg)
    baseline = baseline_values(cfg) if cfg.study.baselines else None
    max_trials = cfg.study.max_trials
    brackets = cfg.study.strategy == "hyperband"

    class StudyOracle(base):  # type: ignore[misc, valid-type]
        def populate_space(self, trial_id: str) -> dict[str, Any]:
            if len(self.trials) >= max_trials or not executor.budget_left():
                return {"status": STOPPED, "values": None}
            if baseline is not None and int(trial_id) == 0 and brackets:
                # No tuner/epochs: StudyTuner.run_trial then trains for train.max_epochs, and no
                # bracket lists the trial, so Hyperband neither promotes nor counts it.
                return {"status": RUNNING, "values": dict(baseline)}
            response = super().populate_space(trial_id)
            if baseline is not None and int(trial_id) == 0 and response.get("values") is not None:
                response["values"] = {**response["values"], **baseline}
            return response

        # Keras Tuner writes its state files in place: a kill during a write leaves a truncated
        # oracle.json that cannot be reloaded. Write them atomically instead.
        def save(self) -> None:
            atomic_write_text(Path(self._get_oracle_fname()), json.dumps(self.get_state()))

        def _save_trial(self, trial: Any) -> None:
            atomic_write_text(Path(self._get_trial_dir(trial.trial_id)) / KT_TRIAL_JSON, json.dumps(trial.get_state()))

        def reload(self) -> None:
            super().reload()
            # A driver killed between saving a new trial and saving the oracle leaves a RUNNING
            # trial that the oracle does not list as ongoing: send it for retry like the others.
            for trial_id, trial in self.trials.items():
                if trial.status == RUNNING and trial_id not in self._retry_queue:
                    self._retry_queue.append(trial_id)

        def end_trial(self, trial: Any) -> None:
            super().end_trial(trial)
            if chief:
                _record_on_chief(executor, self.trials[trial.trial_id], baseline is not None)

    kwargs: dict[str, Any] = {
        "objective": KT_OBJECTIVE,
        "hyperparameters": to_keras_tuner(cfg),
        "allow_new_entries": False,
        "tune_new_entries": False,
        "seed": cfg.study.seed,
        "max_consecutive_failed_trials": 10**9,  # the runner enforces its own limit
    }
    if cfg.study.strategy == "hyperband":
        kwargs.update(max_epochs=cfg.rule("max_epochs"), factor=cfg.study.hyperband_factor)
    else:
        kwargs.update(max_trials=max_trials)
    return StudyOracle(**kwargs)


def _record_on_chief(executor: Executor, trial: Any, baselines: bool) -> None:
    """The worker wrote its record in its own results folder; keep the chief's folder complete too
    (values, status, score) so that status and the final stage work there."""
    status = kt_trial_state(trial)
    if status is None:
        return
    lines = (trial.message or "").strip().splitlines()
    values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
    number = int(trial.trial_id)
    score = trial.score if status in (TrialState.COMPLETE, TrialState.PRUNED) else None
    executor.record_external(number, values, status=status, score=score, reason=lines[-1] if lines else "",
                             baseline=baselines and number == 0)


def kt_trial_state(trial: Any) -> TrialState | None:
    """Our state of an ended Keras Tuner trial (None: not ended); a completed one that reported
    :data:`PRUNED_METRIC` was pruned."""
    status = KERAS_TUNER_STATES.get(str(trial.status))
    if status == TrialState.COMPLETE and trial.metrics.exists(PRUNED_METRIC) \
            and trial.metrics.get_last_value(PRUNED_METRIC):
        return TrialState.PRUNED
    return status


class _ThroughKerasTuner(kt.errors.FatalError):
    """Carries Interrupted/SearchAborted through Keras Tuner, which swallows other exceptions.

    A FatalError leaves the trial in the oracle's ongoing trials, so on reload Keras Tuner
    retries it under the same id and our executor continues it from its checkpoint.
    """

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


class _BudgetSpent(Exception):
    """The deadline stopped a trial before its first judgement (it stays ongoing, resumable)."""


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
            raise _ThroughKerasTuner(e) from e
        if rec.status == TrialState.RUNNING:
            # The deadline came before its first judgement: leave it ongoing, so that Keras Tuner
            # retries it (from its checkpoint) when the study runs again; the search is over.
            raise _ThroughKerasTuner(_BudgetSpent(rec.reason))
        # Our states → Keras Tuner's: a returned score completes the trial, FailedTrialError fails it.
        # Keras Tuner has no pruned trials: a pruned one reports its best score (the oracle learns
        # from it) and PRUNED_METRIC. Back on a chief: kt_trial_state.
        if rec.status not in (TrialState.COMPLETE, TrialState.PRUNED) or rec.score is None:
            raise kt.errors.FailedTrialError(rec.reason or rec.status)
        return {OBJECTIVE: float(rec.score), PRUNED_METRIC: float(rec.status == TrialState.PRUNED)}

    def save(self) -> None:  # atomic, like the oracle's files
        if not self._is_worker():
            self.oracle.save()
        atomic_write_text(Path(self._get_tuner_fname()), json.dumps(self.get_state()))

    def save_model(self, trial_id: str, model: Any, step: int = 0) -> None:  # weights live in the results
        return None

    def load_model(self, trial: Any) -> Any:
        raise NotImplementedError(f"models are in results/<study>/{TRIALS_DIR}/<n>/{BEST_WEIGHTS}")


def run_keras_tuner(
    cfg: Config,
    *,
    executor: Executor,
    engine_dir: Path,
    workers_alive: Callable[[], bool] | None = None,
    drain: Callable[[], Any] | None = None,
) -> None:
    """Run (or resume) the Keras Tuner loop until the trial or time budget is spent.

    In chief/worker mode the chief serves the oracle until every worker is done (it runs no
    trial) and a worker runs trials that the chief hands out.

    Args:
        workers_alive: (a chief that started its own workers) whether any of them still runs.
        drain: (ditto) called on Ctrl-C before the chief stops serving: waits for the workers
            to finish their epoch, so that none is left calling a chief that has gone.
    """
    from keras_tuner.src.distribute import utils as dist_utils

    engine_dir.mkdir(parents=True, exist_ok=True)
    chief = dist_utils.is_chief_oracle()
    oracle = make_oracle(cfg, executor=executor, chief=chief)
    tuner = StudyTuner(oracle, executor=executor, directory=engine_dir)
    if chief:
        tuner.oracle.verbose = 0  # Keras Tuner's per-trial printout; the workers log their trials
        tuner.save()
        serve_oracle(tuner.oracle, executor=executor, workers_alive=workers_alive, drain=drain)
        return
    if dist_utils.has_chief_oracle():
        logger.info("Keras Tuner worker %s: asking the chief at %s:%s for trials", os.environ["KERASTUNER_TUNER_ID"],
                    os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"])
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            tuner.search(verbose=0)
    except _ThroughKerasTuner as e:
        if isinstance(e.original, _BudgetSpent):
            return
        raise e.original from None


def serve_oracle(
    oracle: Any,
    *,
    executor: Executor,
    workers_alive: Callable[[], bool] | None = None,
    drain: Callable[[], Any] | None = None,
    poll_s: float = 0.5,
) -> None:
    """Keras Tuner's chief: serve the oracle over gRPC until the budget is spent and every worker
    has stopped. Like ``keras_tuner.src.distribute.oracle_chief.start_server``, but it answers
    Ctrl-C (the study stays resumable: a worker's ongoing trial is retried on reload) and polls
    every ``poll_s`` instead of every 20 s."""
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        server.add_insecure_port(address)
    except RuntimeError as e:
        raise ConfigError(f"Keras Tuner chief: cannot listen on {address} ({e})") from None
    server.start()
    logger.info("Keras Tuner chief: serving the oracle at %s to workers (KERASTUNER_TUNER_ID=tuner0, …)", address)
    try:
        while True:
            time.sleep(poll_s)
            if executor.stop_requested:
                if drain is not None:
                    drain()
                raise Interrupted("chief stopped; workers' ongoing trials are retried when it resumes")
            if servicer.stop_triggered and oracle_chief.exit_chief(oracle):
                break
            if workers_alive is not None and not workers_alive():
                if servicer.stop_triggered and oracle_chief.exit_chief(oracle):
                    break
                raise SearchAborted(
                    "every worker exited before the study finished (see results/<study>/engine/workers/); "
                    "run the same command again to resume"
                )
    finally:
        server.stop(grace=2)
        oracle.save()
