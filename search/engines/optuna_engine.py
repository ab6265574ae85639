"""Optuna strategies (tpe, cmaes, gp, random-optuna) with pruners (none, median, asha, hyperband)."""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any

import optuna

from search.config import Config
from search.engines import Executor
from search.errors import ConfigError, SearchAborted, TrialFailed
from search.space import baseline_values, suggest_optuna

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def make_sampler(cfg: Config) -> optuna.samplers.BaseSampler:
    seed = cfg.study.seed
    strategy = cfg.study.strategy
    if strategy == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=5)
    if strategy == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False, n_startup_trials=3)
    if strategy == "gp":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ConfigError(
                "study.strategy 'gp': Optuna's GPSampler needs torch; install it with pip install -e '.[gp]'"
            ) from None
        return optuna.samplers.GPSampler(seed=seed)
    if strategy == "random-optuna":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"study.strategy {strategy!r} is not an Optuna strategy")


def make_pruner(cfg: Config) -> optuna.pruners.BasePruner:
    pruner = cfg.pruner
    max_epochs = cfg.train.max_epochs
    if pruner == "none":
        return optuna.pruners.NopPruner()
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=cfg.prune_warmup)
    if pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=cfg.prune_warmup, reduction_factor=cfg.study.hyperband_factor
        )
    if pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=cfg.prune_warmup, max_resource=max_epochs, reduction_factor=cfg.study.hyperband_factor
        )
    return optuna.pruners.NopPruner()


def make_storage(cfg: Config, engine_dir: Path) -> Any:
    """PostgreSQL/RDB when ``study.storage`` is set (with heartbeats), else a local journal file."""
    if cfg.study.storage:
        return optuna.storages.RDBStorage(
            cfg.study.storage,
            heartbeat_interval=30,
            grace_period=120,
            failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=2),
        )
    from optuna.storages.journal import JournalFileBackend

    engine_dir.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(engine_dir / "optuna.journal")))


def load_study(cfg: Config, engine_dir: Path, *, create: bool = True) -> optuna.Study:
    storage = make_storage(cfg, engine_dir)
    if create:
        return optuna.create_study(
            study_name=cfg.study.name,
            storage=storage,
            sampler=make_sampler(cfg),
            pruner=make_pruner(cfg),
            direction="maximize",
            load_if_exists=True,
        )
    return optuna.load_study(study_name=cfg.study.name, storage=storage, sampler=make_sampler(cfg), pruner=make_pruner(cfg))


def run_optuna(cfg: Config, *, executor: Executor, engine_dir: Path, enqueue_baseline: bool = True) -> optuna.Study:
    """Run (or resume, or join) the Optuna loop until the trial or time budget is spent.

    An ask/tell loop rather than ``study.optimize``: optimize marks a trial FAIL whenever an
    exception leaves the objective (Ctrl-C included), but an interrupted or killed trial must stay
    RUNNING so that it continues from its checkpoint when the study resumes.
    """
    study = load_study(cfg, engine_dir)
    if enqueue_baseline and cfg.study.baselines and len(study.get_trials(deepcopy=False)) == 0:
        study.enqueue_trial(baseline_values(cfg), user_attrs={"baseline": True})
    if "config" not in study.user_attrs:
        study.set_user_attr("config", cfg.to_dict())

    # Trials left RUNNING by a killed or interrupted driver of this study folder continue first.
    for frozen in _stale_running(study, executor):
        _run_one(study, optuna.trial.Trial(study, frozen._trial_id), cfg, executor)

    while executor.budget_left():
        if isinstance(study._storage, optuna.storages.RDBStorage):
            optuna.storages.fail_stale_trials(study)  # heartbeats: retry trials of dead machines
        started = len(study.get_trials(deepcopy=False, states=(*FINISHED, optuna.trial.TrialState.RUNNING)))
        if started >= cfg.study.max_trials:
            break
        _run_one(study, study.ask(), cfg, executor)
    return study


def _stale_running(study: optuna.Study, executor: Executor) -> list[optuna.trial.FrozenTrial]:
    owned = getattr(executor, "owns_stale_trial", None)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return [t for t in running if owned is not None and owned(t.number)]


def _run_one(study: optuna.Study, trial: optuna.trial.Trial, cfg: Config, executor: Executor) -> None:
    """Run one trial and tell Optuna its state; Interrupted/SearchAborted leave it as recorded."""
    with _Heartbeat(study, trial):
        try:
            value = _objective(trial, cfg, executor)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        except TrialFailed:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except SearchAborted:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)  # recorded failed in the results too
            raise
        else:
            study.tell(trial, value)


class _Heartbeat:
    """Record heartbeats for a trial while it runs (RDB storage only), like ``optimize`` does."""

    def __init__(self, study: optuna.Study, trial: optuna.trial.Trial) -> None:
        self.storage = study._storage
        self.trial_id = trial._trial_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Heartbeat:
        storage = self.storage
        if isinstance(storage, optuna.storages.RDBStorage) and storage.is_heartbeat_enabled():
            interval = storage.get_heartbeat_interval() or 60
            storage.record_heartbeat(self.trial_id)

            def beat() -> None:
                while not self._stop.wait(interval):
                    try:
                        storage.record_heartbeat(self.trial_id)
                    except Exception:  # noqa: BLE001 - a missed beat is retried next interval
                        logger.debug("heartbeat failed", exc_info=True)

            self._thread = threading.Thread(target=beat, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _objective(trial: optuna.trial.Trial, cfg: Config, executor: Executor) -> float:
    sampled = suggest_optuna(trial, cfg)
    reported = set(trial.storage.get_trial(trial._trial_id).intermediate_values)

    def should_prune(epoch: int, score: float) -> bool:
        if epoch not in reported and math.isfinite(score):
            trial.report(score, epoch)
            reported.add(epoch)
        return trial.should_prune()

    rec = executor(
        trial.number,
        sampled,
        baseline=bool(trial.user_attrs.get("baseline", False)),
        should_prune=should_prune,
    )
    if rec.status == "pruned":
        raise optuna.TrialPruned(rec.reason)
    if rec.status != "complete" or rec.score is None:
        raise TrialFailed(rec.reason or rec.status)
    return float(rec.score)
