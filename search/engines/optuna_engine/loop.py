"""The ask/tell loop every driver of an Optuna study runs (:func:`run_optuna`).

An ask/tell loop rather than ``study.optimize``, so that an interrupted trial stays RUNNING and
resumes from its checkpoint. Which trial to run next and whether the budget is spent are decided
with the other drivers (search/engines/optuna_engine/coordination.py); each trial's record becomes
an Optuna state through :func:`search.vocabulary.optuna_state`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna

from search.config import Config
from search.config.space import baseline_values, family_openers, suggest_optuna
from search.engines import Executor
from search.engines.optuna_engine.coordination import driver_token, next_trial, study_lock
from search.engines.optuna_engine.sampling import make_sampler
from search.engines.optuna_engine.storage import heartbeats_enabled, load_study, study_storage
from search.errors import Interrupted, SearchAborted
from search.results import TrialRecord
from search.vocabulary import TrialState, optuna_state

__all__ = ["HEARTBEAT_LOST", "run_optuna"]

logger = logging.getLogger(__name__)

TS = optuna.trial.TrialState
HEARTBEAT_LOST = "worker heartbeat lost"  # the reason recorded for a trial the storage failed
POLL_S = 2.0  # how often a driver waiting for other drivers' trials looks again


def _enqueue_first_trials(study: optuna.Study, cfg: Config) -> None:
    """A new study's first trials: the baseline, then each model family once (the sampler choosing the rest)."""
    if cfg.study.baselines:
        study.enqueue_trial(baseline_values(cfg), user_attrs={"baseline": True})
    for values in family_openers(cfg):
        study.enqueue_trial(values)


def run_optuna(
    cfg: Config,
    *,
    executor: Executor,
    engine_dir: Path,
    enqueue_baseline: bool = True,
    wait_for_others: bool = False,
    seed_offset: int = 0,
    on_ready: Callable[[], None] | None = None,
) -> optuna.Study:
    """Run (or resume, or join) the Optuna loop until the trial or time budget is spent.

    An ask/tell loop rather than ``study.optimize``: optimize marks a trial FAIL whenever an
    exception leaves the objective (Ctrl-C included), but an interrupted or killed trial must stay
    RUNNING so that it continues from its checkpoint when the study resumes.

    Args:
        enqueue_baseline: give the first trial of a new study the reference values.
        wait_for_others: once the budget is spent, wait until the other drivers' trials finish
            (and continue those whose driver died): the main driver does, before the final stage.
            The main driver also publishes its config with the study (the budget every driver uses).
        seed_offset: added to the sampler seed, so that parallel drivers sample differently.
        on_ready: called once the study exists in the storage (the runner starts extra drivers).
    """
    study = load_study(cfg, engine_dir, seed_offset=seed_offset)
    with study_lock(study, engine_dir):
        if enqueue_baseline and len(study.get_trials(deepcopy=False)) == 0:
            _enqueue_first_trials(study, cfg)
        if wait_for_others or "config" not in study.user_attrs:
            # The main driver publishes its config (a resume may raise max_trials): workers on
            # other machines read the study's budget from it, whatever their local copy says.
            study.set_user_attr("config", cfg.to_dict())
        existing = len([t for t in study.get_trials(deepcopy=False) if t.state != TS.WAITING])
    if existing:
        # A seeded sampler restarts its random stream in every process: a resumed driver would
        # sample the first trials' values again. Continue with a stream of its own instead.
        study.sampler = make_sampler(cfg, seed_offset=seed_offset + 7919 * existing)
    if on_ready is not None:
        on_ready()
    token = driver_token()
    heartbeats = heartbeats_enabled(study_storage(study))
    announced = False
    while True:
        if executor.stop_requested:
            raise Interrupted("stopped before starting another trial")
        if heartbeats:
            optuna.storages.fail_stale_trials(study)  # a dead machine's trial: FAIL + a retry copy
        _reconcile_lost(study, executor)
        with study_lock(study, engine_dir):
            trial, others = next_trial(study, cfg, executor, token, heartbeats=heartbeats)
        if trial is not None:
            _run_one(study, trial, cfg, executor)
            continue
        if not (wait_for_others and others) or not executor.budget_left():
            break
        if not announced:
            logger.info("trial budget spent; waiting for %d trial(s) of other drivers to finish", others)
            announced = True
        time.sleep(POLL_S)
    return study


def _reconcile_lost(study: optuna.Study, executor: Executor) -> None:
    """A trial the storage failed (lost heartbeat) must not stay 'running' in the results."""
    for t in study.get_trials(deepcopy=False, states=(TS.FAIL,)):
        executor.mark_lost(t.number, HEARTBEAT_LOST)


def _run_one(study: optuna.Study, trial: optuna.trial.Trial, cfg: Config, executor: Executor) -> None:
    """Run one trial and tell Optuna its state; Interrupted leaves it RUNNING (resumable)."""
    with _Heartbeat(study, trial):
        try:
            rec = _execute(trial, cfg, executor)
        except SearchAborted:
            _tell(study, trial, executor, state=TrialState.FAILED)  # recorded failed in the results too
            raise
        if rec.status == TrialState.RUNNING:
            return  # the deadline came before its first judgement: it stays running and resumes next run
        if rec.status == TrialState.COMPLETE and rec.score is not None:
            _tell(study, trial, executor, state=TrialState.COMPLETE, value=float(rec.score))
        elif rec.status == TrialState.PRUNED:
            _report_score(trial, rec.score)
            _tell(study, trial, executor, state=TrialState.PRUNED)  # Optuna keeps its last reported value
        else:
            _tell(study, trial, executor, state=TrialState.FAILED)


def _report_score(trial: optuna.trial.Trial, score: float | None) -> None:
    """Make a pruned trial's last report its recorded score: Optuna takes that report as the trial's
    value. The epochs report the running best, which is the score of a trial pruned by the pruner;
    a k-fold trial stopped after a later fold scores the mean over its finished folds instead (its
    reports are fold 0's), so that score is reported one step after the last."""
    if score is None or not math.isfinite(score):
        return
    frozen = trial.storage.get_trial(trial._trial_id)
    last = frozen.last_step
    if last is not None and math.isclose(frozen.intermediate_values[last], score, rel_tol=0.0, abs_tol=1e-9):
        return
    try:
        trial.report(float(score), 0 if last is None else last + 1)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # failed by another driver meanwhile: _tell records that


def _tell(
    study: optuna.Study, trial: optuna.trial.Trial, executor: Executor, *, state: TrialState,
    value: float | None = None,
) -> None:
    wanted = optuna_state(state)
    frozen = study.tell(trial, value, state=wanted, skip_if_finished=True)
    if frozen.state != wanted and frozen.state == TS.FAIL:
        # Another driver failed this trial (its heartbeat ran out) while it ran here; a retry
        # copy runs under a new number, so this record must say failed like the storage does.
        logger.warning("trial %d was failed by the storage (heartbeat lost) while it ran here", trial.number)
        executor.mark_lost(trial.number, HEARTBEAT_LOST, force=True)


class _Heartbeat:
    """Record heartbeats for a trial while it runs (RDB storage only), like ``optimize`` does."""

    def __init__(self, study: optuna.Study, trial: optuna.trial.Trial) -> None:
        self.storage = study_storage(study)
        self.trial_id = trial._trial_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Heartbeat:
        storage = self.storage
        if heartbeats_enabled(storage):
            interval = storage.get_heartbeat_interval() or 60
            storage.record_heartbeat(self.trial_id)

            def beat() -> None:
                while not self._stop.wait(interval):
                    try:
                        storage.record_heartbeat(self.trial_id)
                    except Exception:  # noqa: BLE001 - a missed beat is retried next interval
                        logger.debug("heartbeat failed", exc_info=True)

            self._thread = threading.Thread(target=beat, daemon=True, name="optuna-heartbeat")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _execute(trial: optuna.trial.Trial, cfg: Config, executor: Executor) -> TrialRecord:
    """Sample the trial's values and run it through the executor, reporting each epoch's running best."""
    sampled = suggest_optuna(trial, cfg)
    reported = set(trial.storage.get_trial(trial._trial_id).intermediate_values)
    lost = False

    def should_prune(epoch: int, score: float, ask: bool = True) -> bool:
        # Every epoch is reported (the dashboard's intermediate values); the pruner is asked only
        # when the trial may be judged (search/trial/training.py: warm-up, zero-score progress).
        nonlocal lost
        if lost:
            return True
        try:
            if epoch not in reported and math.isfinite(score):
                trial.report(score, epoch)
                reported.add(epoch)
            return trial.should_prune() if ask else False
        except optuna.exceptions.UpdateFinishedTrialError:
            lost = True  # failed by another driver's fail_stale_trials: stop, a retry runs it
            return True

    return executor(
        trial.number,
        sampled,
        baseline=bool(trial.user_attrs.get("baseline", False)),
        should_prune=should_prune,
    )
