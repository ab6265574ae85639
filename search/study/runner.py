"""Run a study: claim the study folder, prepare the data, plan the budget, drive the strategy, run the final stage.

What this driver does in the study is decided once, in :func:`plan_run`: whether it owns the study
or joins one that is running, whether it starts extra drivers, its Keras Tuner chief/worker role.
How it spends its time budget (``--timeout``) is planned before the search starts
(:func:`search.study.budget.plan_budget`): the final stage's share, and the training rules left at ``auto``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from search.config import Config
from search.errors import ConfigError, Interrupted, SearchAborted
from search.evaluation import FoldPlan
from search.results import StudyDir, atomic_write_json, atomic_write_text, read_study_config
from search.results.environment import environment_info
from search.study.budget import (
    DEADLINE_ENV,
    BudgetPlan,
    DataSizes,
    Deadline,
    FinalStage,
    RunLedger,
    adopt_stored_rules,
    apply_rules,
    not_started,
    plan_budget,
    record_run,
    requested_rules,
    write_throughput,
)
from search.study.dataset import PreparedData, fold_plan, prepare_data, resolved_config, study_units
from search.study.executor import TrialExecutor
from search.study.final import run_final
from search.study.folder import (
    StudyLock,
    check_same_dataset,
    check_stored_config,
    open_study_dir,
    sweep_temp_files,
)
from search.study.parallel import DriverSlot, ExtraDrivers, free_port, plan_slots, watch_parent
from search.study.progress import Progress
from search.study.throughput import study_throughput
from search.trial.process import TrialProcess
from search.trial.runtime import temporary_environ, trial_runtime
from search.trial.stop import stopped_by_budget
from search.vocabulary import TrialState

__all__ = ["RunPlan", "dry_run", "kt_distributed_role", "plan_run", "run_study"]

logger = logging.getLogger(__name__)

KerasTunerRole = Literal["chief", "worker"]


@dataclass(frozen=True)
class RunPlan:
    """What one driver does in its study, decided once from its role, the study lock and the environment."""

    engine: Literal["keras_tuner", "optuna"]
    owner: bool  # holds the study lock: the study's main driver (False: joins a running study)
    new_study: bool  # no study.yaml before this run
    kt_role: KerasTunerRole | None  # Keras Tuner's chief/worker mode (a chief of local workers included)
    kt_local_chief: bool  # Keras Tuner with study.workers > 1: serve the oracle to workers started here
    drivers: int  # this driver plus the extra drivers it starts (`run --workers N`)
    seed_offset: int  # added to the Optuna sampler seed, so that parallel drivers sample differently

    @property
    def writes_study_files(self) -> bool:
        """study.yaml, the data fingerprint and environment.json: the owner's, or a new local folder's."""
        return self.owner or self.new_study

    @property
    def runs_final(self) -> bool:
        """Whether this driver runs the final stage once the search is done (the owner, not a KT worker)."""
        return self.owner and self.kt_role != "worker"


def plan_run(
    cfg: Config,
    *,
    role: Literal["main", "worker"],
    owner: bool,
    existed: bool,
    kt_env_role: KerasTunerRole | None,
    worker_index: int | None = None,
    holder: str = "?",
) -> RunPlan:
    """The plan of one driver, or a ConfigError for a combination that cannot run.

    Args:
        role: ``main`` (``run``) or ``worker`` (``worker NAME``); see :func:`run_study`.
        owner: whether this driver took the study lock.
        existed: whether the study's study.yaml was there before this run.
        kt_env_role: Keras Tuner's chief/worker mode from its environment (:func:`kt_distributed_role`).
        holder: the lock holder's pid, for messages.
    """
    name = cfg.study.name
    if role == "worker" and cfg.engine != "optuna" and kt_env_role is None:
        raise ConfigError(
            f"study {name!r} uses Keras Tuner ({cfg.study.strategy}): its workers join through "
            f"Keras Tuner's chief/worker mode; set KERASTUNER_TUNER_ID=tuner0 (tuner1, …) and the "
            f"chief's KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT, or use `run --workers N`"
        )
    if not owner and cfg.engine != "optuna" and kt_env_role != "worker":
        raise ConfigError(
            f"study {name!r} is already running (driver pid {holder}); Keras Tuner "
            f"studies take one driver: wait for it, use Keras Tuner's chief/worker mode "
            f"(KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP/PORT), or an Optuna strategy to add workers"
        )
    if role == "main" and not owner:  # a second `run` joins, and says so
        logger.warning("study %r is already running (driver pid %s): joining it as a second driver; this one runs "
                       "trials only, the first runs the final stage", name, holder)
    # Keras Tuner with --workers N on this machine: this process becomes Keras Tuner's chief
    # (it serves the oracle and trains nothing) and starts N workers.
    kt_local_chief = cfg.engine == "keras_tuner" and owner and kt_env_role is None and cfg.study.workers > 1
    drivers = cfg.study.workers if owner and (cfg.engine == "optuna" or kt_local_chief) else 1
    if owner:
        seed_offset = 0
    else:
        seed_offset = worker_index if worker_index is not None else 1000 + os.getpid()
    return RunPlan(
        engine=cfg.engine,
        owner=owner,
        new_study=not existed,
        kt_role="chief" if kt_local_chief else kt_env_role,
        kt_local_chief=kt_local_chief,
        drivers=drivers,
        seed_offset=seed_offset,
    )


def kt_distributed_role() -> KerasTunerRole | None:
    """Keras Tuner's chief/worker mode from its environment variables, if set."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    for var in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        if not os.environ.get(var):
            raise ConfigError(f"KERASTUNER_ORACLE_IP is set but {var} is not (Keras Tuner chief/worker mode)")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def run_study(
    cfg: Config,
    *,
    results_root: Path,
    allow_changes: bool = False,
    verbose: int = 0,
    show_progress: bool = True,
    trial_process: TrialProcess | None = None,
    role: Literal["main", "worker"] = "main",
    threads: int | None = None,
    worker_index: int | None = None,
    parent_pid: int | None = None,
    deadline: Deadline | None = None,
    on_trial_end: Callable[[StudyDir], None] | None = None,
) -> dict[str, Any]:
    """Create or resume a study, run the search, then the final stage. Returns a summary.

    Args:
        trial_process: where this driver runs its trials (default: a new one, closed at the end).
        role: ``main`` (``run``: holds the study lock, starts ``study.workers − 1`` extra drivers,
            runs the final stage) or ``worker`` (``worker NAME``: joins a study and runs trials).
            A ``main`` that finds the study running joins it like a worker (Optuna only).
        threads: CPU threads for this driver's trials (the main driver splits them itself).
        worker_index: an extra driver's index (varies its sampler seed).
        parent_pid: an extra driver stops (at the next step) once this process is gone.
        deadline: the run's time budget, started when the command started (default: now, with
            ``study.timeout_s``; an extra driver of ``run --workers N`` takes the main driver's).
        on_trial_end: called with the study after each trial and at the end of the run (the CLI
            refreshes report.html; the report is a tool above this layer).
    """
    deadline = deadline or Deadline.from_env(cfg.study.timeout_s)
    if cfg.study.storage:
        check_stored_config(cfg, allow_changes=allow_changes)  # reads only; before anything is created
    study, existed, lock, owner = _claim(cfg, results_root, role=role, allow_changes=allow_changes)
    process: TrialProcess | None = None
    budget: BudgetPlan | None = None
    try:
        try:
            plan = plan_run(cfg, role=role, owner=owner, existed=existed, kt_env_role=kt_distributed_role(),
                            worker_index=worker_index, holder=lock.holder())
            data = prepare_data(cfg, results_root)
            cfg = resolved_config(cfg, data)  # data.channels: auto -> the dataset's channels (study.yaml records it)
            if existed:
                check_same_dataset(study, data.fingerprint, allow_changes=allow_changes)
                cfg = adopt_stored_rules(cfg, read_study_config(study))  # a study keeps the rules it began with
            folds = fold_plan(cfg, data, study.root)
            study_units(cfg, data)  # study.groups must fit every split's names (the statistics use it)
            slots = plan_slots(plan.drivers) if plan.drivers > 1 else [DriverSlot(0, threads=threads)]
            process = trial_process or TrialProcess(
                recycle_after=cfg.study.recycle_after,
                runtime={**trial_runtime(cfg), **({"threads": slots[0].threads} if slots[0].threads else {})},
                env=slots[0].env,
            )
            if plan.owner:
                budget = plan_study_budget(cfg, study, data, process, deadline, stored_rules=existed,
                                           probe=cfg.study.timeout_s is not None, persist=True)
                cfg = apply_rules(cfg, budget.rules)
                if plan.kt_local_chief:
                    process.close()  # the chief trains nothing: free the probe's memory (the final stage restarts it)
                _log_plan(budget)
        except BaseException:
            if process is not None and trial_process is None:
                process.close()
            _give_up_claim(study, lock, owner=owner, existed=existed)
            raise
        if plan.owner:
            sweep_temp_files(study)
        if plan.writes_study_files:
            atomic_write_text(study.study_yaml, cfg.to_yaml())
            atomic_write_json(study.fingerprint_json, data.fingerprint)
            atomic_write_json(study.environment_json, environment_info())
        try:
            return _drive(cfg, plan, study=study, data=data, folds=folds, results_root=results_root,
                          verbose=verbose, show_progress=show_progress, process=process, slots=slots,
                          parent_pid=parent_pid, deadline=deadline, budget=budget, on_trial_end=on_trial_end)
        finally:
            if trial_process is None:
                process.close()
    finally:
        lock.release()


def _claim(cfg: Config, results_root: Path, *, role: str,
           allow_changes: bool) -> tuple[StudyDir, bool, StudyLock, bool]:
    """The study folder, whether it existed, its lock and whether this driver holds it.

    The lock is the claim on a new study, taken before its data is prepared: study.yaml (what "exists"
    means) is written only after that, and only the lock holder may remove the folder.
    """
    study, existed = open_study_dir(cfg, results_root, allow_changes=allow_changes)
    lock = StudyLock(study)
    owner = role != "worker" and lock.try_acquire()
    if not existed and study.exists():  # created by another driver between the check and the lock
        study, existed = open_study_dir(cfg, results_root, allow_changes=allow_changes)
    if not existed and role != "worker" and not owner:
        raise ConfigError(
            f"study {cfg.study.name!r} is being created by another driver (pid {lock.holder()}), which is "
            f"preparing its data; run this again once `python -m search status {cfg.study.name}` shows it, "
            f"or use another --study name"
        )
    return study, existed, lock, owner


def _give_up_claim(study: StudyDir, lock: StudyLock, *, owner: bool, existed: bool) -> None:
    """Set-up failed: a new study this driver claimed is removed (still holding its lock), as if never made."""
    if owner and not existed:
        shutil.rmtree(study.root, ignore_errors=True)
        lock.release()
    elif not existed:  # a worker's new local folder: removed only if nothing is in it
        with contextlib.suppress(OSError):
            study.root.rmdir()


def _log_plan(budget: BudgetPlan) -> None:
    for line in budget.describe().splitlines():
        if line.startswith("warning: "):
            logger.warning("plan: %s", line.removeprefix("warning: "))
        else:
            logger.info("plan: %s", line)


def _data_sizes(cfg: Config, data: PreparedData) -> DataSizes:
    """The images one trial trains and validates on (a fold's share of train+valid in a k-fold study)."""
    n = {split: len(data.stems.get(split, ())) for split in ("train", "valid", "test")}
    if cfg.study.evaluation == "kfold":
        pooled, k = n["train"] + n["valid"], cfg.study.folds
        n["valid"] = -(-pooled // k)
        n["train"] = pooled - n["valid"]
    return DataSizes(train=n["train"], valid=n["valid"], test=n["test"], batch_size=cfg.data.batch_size)


def plan_study_budget(cfg: Config, study: StudyDir, data: PreparedData, process: TrialProcess, deadline: Deadline,
                      *, stored_rules: bool, probe: bool, persist: bool) -> BudgetPlan:
    """The study's speed (budget.json, its trials, or a probe now), then the plan; the final stage's
    share is reserved on ``deadline``. Raises ConfigError for a budget below one judged trial."""
    throughput, probed = study_throughput(study, cfg, data, process, probe=probe)
    if probed is not None and persist:
        write_throughput(study.root, probed)
    f = cfg.final
    fresh = (f.reevaluate_top_k + 1) * f.seeds * (cfg.study.folds if cfg.study.evaluation == "kfold" else 1)
    budget = plan_budget(
        budget_s=cfg.study.timeout_s, spent_s=deadline.elapsed(), throughput=throughput, sizes=_data_sizes(cfg, data),
        image_size=cfg.data.image_size, requested=requested_rules(cfg), min_epochs=cfg.train.min_epochs,
        final=FinalStage(test=f.retrain, retrain=f.train_on_valid, reevaluations=fresh if f.reevaluate_top_k else 0),
        folds=cfg.study.folds if cfg.study.evaluation == "kfold" else 1, study_rules=stored_rules,
        first_rung_size=cfg.first_rung_size,
    )
    deadline.reserve(budget.final_s)
    return budget


def dry_run(cfg: Config, *, results_root: Path, deadline: Deadline) -> BudgetPlan:
    """The plan ``run`` would make (``run --dry-run``): the data is cached and the machine probed
    (unless the study has measured it), but no study folder is created and nothing is trained."""
    study = StudyDir(results_root / cfg.study.name)
    if study.exists():
        cfg = adopt_stored_rules(cfg, read_study_config(study))
    data = prepare_data(cfg, results_root)
    process = TrialProcess(recycle_after=1, runtime=trial_runtime(cfg))
    try:
        return plan_study_budget(cfg, study, data, process, deadline, stored_rules=study.exists(), probe=True,
                                 persist=False)
    finally:
        process.close()


def _drive(
    cfg: Config,
    plan: RunPlan,
    *,
    study: StudyDir,
    data: PreparedData,
    folds: FoldPlan | None,
    results_root: Path,
    verbose: int,
    show_progress: bool,
    process: TrialProcess,
    slots: list[DriverSlot],
    parent_pid: int | None,
    deadline: Deadline,
    budget: BudgetPlan | None = None,
    on_trial_end: Callable[[StudyDir], None] | None = None,
) -> dict[str, Any]:
    """Run the strategy loop (and the extra drivers of the plan), then the final stage."""
    extra_slots, chief_env = _extra_slots(plan, slots, deadline)
    refresh = functools.partial(on_trial_end, study) if on_trial_end is not None else None
    progress = Progress(total=cfg.study.max_trials, enabled=show_progress, done=len(
        [r for r in study.trials() if r.status != TrialState.RUNNING]), deadline=deadline)
    executor = TrialExecutor(
        cfg, study, data, process, progress, deadline=deadline, on_trial_end=refresh,
        verbose=verbose, folds=folds, budget=budget,
    )
    extras = ExtraDrivers(study_name=cfg.study.name, results_root=results_root,
                          log_dir=study.engine_dir / "workers", verbose=verbose) if plan.drivers > 1 else None
    restore_sigint = _install_sigint(process, extras, extra_driver=parent_pid is not None)
    if parent_pid is not None:
        watch_parent(parent_pid, lambda: setattr(process, "stop_requested", max(1, process.stop_requested)))
    ledger = RunLedger(deadline, plan=budget.summary() if budget is not None else None)
    search_start = deadline.elapsed()
    try:
        try:
            _search(cfg, plan, executor=executor, study=study, extras=extras, extra_slots=extra_slots,
                    chief_env=chief_env)
        except Interrupted:
            ledger.ended_by = "Ctrl-C"
            raise
        except SearchAborted:
            ledger.ended_by = "failures"
            raise
        finally:
            ledger.search_s = deadline.elapsed() - search_start
            _count_trials(ledger, study, since=deadline.start)
        if ledger.ended_by == "max_trials" and (ledger.stopped_by_budget or not executor.budget_left()):
            ledger.ended_by = "the budget"
        progress.close()
        summary: dict[str, Any] = {"study": str(study.root), "best": _best_summary(study)}
        if cfg.final.retrain and plan.runs_final and summary["best"] is not None:
            summary["final"] = _final_stage(study, cfg, data, process, verbose=verbose, ledger=ledger)
        if refresh is not None:
            refresh()
        summary["run"] = ledger.to_dict()
        return summary
    finally:
        if extras is not None:
            extras.finish(stop_requested=process.stop_requested)
        restore_sigint()
        progress.close()
        if plan.owner:
            logger.info("%s", ledger.sentence())
            with contextlib.suppress(OSError):
                record_run(study.root, ledger.to_dict())


def _extra_slots(plan: RunPlan, slots: list[DriverSlot],
                 deadline: Deadline) -> tuple[list[DriverSlot], dict[str, str]]:
    """The extra drivers' slots (environments) and the Keras Tuner chief's environment (empty without one)."""
    extra_slots = slots[1:]
    chief_env: dict[str, str] = {}
    if plan.kt_local_chief:
        chief_env = {"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "127.0.0.1",
                     "KERASTUNER_ORACLE_PORT": str(free_port())}
        extra_slots = [DriverSlot(s.index, env={**s.env, **chief_env, "KERASTUNER_TUNER_ID": f"tuner{s.index}"},
                                  threads=s.threads) for s in slots]
    if deadline.search_ends_at is not None:  # extra drivers end their search with this one's
        extra_slots = [DriverSlot(s.index, env={**s.env, DEADLINE_ENV: repr(deadline.search_ends_at)},
                                  threads=s.threads) for s in extra_slots]
    return extra_slots, chief_env


def _final_stage(study: StudyDir, cfg: Config, data: PreparedData, process: TrialProcess, *, verbose: int,
                 ledger: RunLedger) -> dict[str, Any]:
    deadline = ledger.deadline
    final_start = deadline.elapsed()
    try:
        return run_final(study, cfg=cfg, data=data, trial_process=process, verbose=verbose, deadline=deadline)
    finally:
        ledger.final_s = deadline.elapsed() - final_start


def _search(cfg: Config, plan: RunPlan, *, executor: TrialExecutor, study: StudyDir, extras: ExtraDrivers | None,
            extra_slots: list[DriverSlot], chief_env: dict[str, str]) -> None:
    """The strategy's loop, with the extra drivers of the plan; returns when the search is over."""
    if plan.engine == "optuna":
        from search.engines.optuna_engine import run_optuna

        run_optuna(
            cfg,
            executor=executor,
            engine_dir=study.engine_dir,
            enqueue_baseline=plan.owner,
            wait_for_others=plan.owner,
            seed_offset=plan.seed_offset,
            on_ready=(lambda: extras.start(extra_slots)) if extras is not None else None,
        )
        if extras is not None:
            extras.wait()
        return
    from search.engines.kt_engine import run_keras_tuner

    if extras is None:
        run_keras_tuner(cfg, executor=executor, engine_dir=study.engine_dir)
        return
    with temporary_environ(chief_env):
        extras.start(extra_slots)
        run_keras_tuner(cfg, executor=executor, engine_dir=study.engine_dir, workers_alive=extras.any_running,
                        drain=lambda: extras.wait(timeout=120))
    extras.wait()


def _count_trials(ledger: RunLedger, study: StudyDir, *, since: float) -> None:
    """Trials this run started or continued (its extra drivers' too), judged, and stopped by the budget."""
    for rec in study.trials():
        if rec.started_at < since and (rec.finished_at or 0.0) < since:
            continue
        if not_started(rec.reason):
            ledger.not_started += 1
            continue
        ledger.trials_started += 1
        if rec.status in (TrialState.COMPLETE, TrialState.PRUNED):
            ledger.trials_judged += 1
        if stopped_by_budget(rec.reason):
            ledger.stopped_by_budget.append(rec.number)


def _install_sigint(
    process: TrialProcess, extras: ExtraDrivers | None = None, *, extra_driver: bool = False
) -> Callable[[], None]:
    """First Ctrl-C: stop the running trial at its next optimizer step (search/study/budget.py), keeping its last
    completed epoch's checkpoint; then stop. Second: stop at once.

    Either way the study stays resumable (the trial continues from its last completed epoch).
    The main driver forwards each Ctrl-C to its extra drivers as SIGUSR1; an extra driver
    (``extra_driver``) ignores SIGINT, which the terminal sends to the whole process group, so
    that one Ctrl-C counts once.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        process.stop_requested += 1
        if extras is not None:
            extras.interrupt()
        if process.stop_requested == 1:
            logger.warning("Ctrl-C: stopping at the next step (resumable from the last completed epoch); "
                           "Ctrl-C again stops now")
        else:
            logger.warning("Ctrl-C again: stopping now")

    if extra_driver:
        previous = {signal.SIGUSR1: signal.signal(signal.SIGUSR1, handler),
                    signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
    else:
        previous = {signal.SIGINT: signal.signal(signal.SIGINT, handler)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


def _best_summary(study: StudyDir) -> dict[str, Any] | None:
    best = study.best_trial()
    if best is None:
        return None
    return {"number": best.number, "score": best.score, "values": best.values}


