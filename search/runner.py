"""Run a study: prepare the results folder and data, drive the strategy, run the final stage."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from search.config import Config, best_config, config_from_dict
from search.errors import ConfigError, Interrupted, SearchAborted
from search.parallel import DriverSlot, ExtraDrivers, free_port, plan_slots, watch_parent
from search.progress import Progress
from search.results import StudyDir, TrialRecord, atomic_write_json, atomic_write_text, read_json
from search.runtime import device_memory_budget, temporary_environ
from search.space import complete_values
from search.specs import trial_seed
from search.trial import TrialTask
from search.worker import WorkerPool

logger = logging.getLogger(__name__)

# Settings that may change when a study resumes without --allow-changes.
RESUMABLE_CHANGES = {
    "study.max_trials",
    "study.timeout_s",
    "study.workers",
    "study.recycle_after",
    "study.max_consecutive_failures",
    "study.storage",
    "study.heartbeat_s",
    "data.cache_dir",
    "data.root",
    "final.retrain",
    "final.train_on_valid",
    "final.num_predictions",
    "train.tensorboard",
}


@dataclass
class PreparedData:
    cache_path: str
    fingerprint: dict[str, Any]


def open_study_dir(cfg: Config, results_root: Path, *, allow_changes: bool = False) -> tuple[StudyDir, bool]:
    """Create ``results/<study>/`` or check that the existing one may resume with ``cfg``.

    Returns the study folder and whether the study already existed (its study.yaml, written once its data
    is prepared). A new folder is only a candidate: ``run_study`` claims it with the study lock.
    """
    study = StudyDir(results_root / cfg.study.name)
    if study.exists():
        old = config_from_dict(yaml.safe_load(study.study_yaml.read_text()), source=str(study.study_yaml))
        if not allow_changes:
            refuse_differences(cfg, old, where=str(study.root))
        return study, True
    try:
        study.root.mkdir(parents=True, exist_ok=True)
        probe = study.root / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"results folder {study.root} is not writable ({e.strerror})") from None
    return study, False


def refuse_differences(new: Config, old: Config, *, where: str) -> None:
    """One-line ConfigError listing what a resume may not change (see blocking_differences)."""
    blocking = blocking_differences(old, new)
    if blocking:
        raise ConfigError(
            f"study {new.study.name!r} exists in {where} with another configuration: "
            + "; ".join(blocking[:8])
            + (f" (+{len(blocking) - 8} more)" if len(blocking) > 8 else "")
            + ". Use another --study name, or --allow-changes if the change is compatible"
        )


def blocking_differences(old: Config, new: Config) -> list[str]:
    """Differences that a resume may not make silently (see RESUMABLE_CHANGES).

    The storage URL may change (another host name for the same database), but not between the
    local journal and a database: the trials would be numbered again from 0 in the new one.
    """
    out = []
    for d in config_differences(old, new):
        key = d.split(":")[0]
        if key == "study.storage" and (old.study.storage is None) != (new.study.storage is None):
            out.append("study.storage: between the local journal and a database (the engine state "
                       "does not move; use another --study name)")
        elif key not in RESUMABLE_CHANGES:
            out.append(d)
    return out


def config_differences(old: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ, as ``key: old -> new``."""
    a, b = _flatten(old.to_dict()), _flatten(new.to_dict())
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and prefix != "search_space.":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v, sort_keys=True) if isinstance(v, dict) else v
    return out


def prepare_data(cfg: Config, results_root: Path) -> PreparedData:
    """Discover, validate and cache the dataset (raises DatasetError, exit 3 at the CLI)."""
    from data import DatasetError, LoadSettings, discover, load_cached

    root = Path(cfg.data.root)
    if not root.exists():
        raise DatasetError(
            f"no dataset at {root.resolve()} (data.root); pass --data DIR with train/valid/test "
            f"folders of images/ and masks/, or --demo for the built-in synthetic dataset"
        )
    index = discover(root)
    settings = LoadSettings(image_size=cfg.data.image_size, channels=cfg.data.channels, mask_threshold=cfg.data.mask_threshold)
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else results_root / ".cache"
    cached = load_cached(index, settings, cache_dir=cache_dir)
    for split in ("train", "valid", "test"):
        if len(cached.split(split).images) == 0:
            raise DatasetError(f"dataset {root}: split {split!r} is empty")
    return PreparedData(cache_path=str(cached.path), fingerprint=cached.fingerprint)


def environment_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "argv": sys.argv,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # Installed versions from the package metadata: importing TensorFlow here would cost the driver
    # (which never trains) 2-3 s and ~600 MiB.
    from importlib import metadata

    for mod, dist in (("tensorflow", "tensorflow"), ("keras", "keras"), ("keras_tuner", "keras-tuner"),
                      ("optuna", "optuna"), ("numpy", "numpy"), ("cv2", "opencv-python-headless")):
        try:
            info[mod] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[mod] = None
    try:
        info["git_revision"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_revision"] = None
    info["gpus_visible"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return info


class StudyLock:
    """An advisory lock on the study folder, held while a driver runs it."""

    def __init__(self, study: StudyDir) -> None:
        self.path = study.lock_path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder was just removed by the driver that failed to create it
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A creator that fails removes the folder, lock file included, while holding the lock:
            # a lock on the removed file would claim nothing.
            if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class TrialExecutor:
    """Runs one trial for an engine: records it in the results contract, streams progress."""

    def __init__(
        self,
        cfg: Config,
        study: StudyDir,
        data: PreparedData,
        pool: WorkerPool,
        progress: Progress,
        *,
        deadline: float | None,
        on_trial_end: Callable[[], None] | None = None,
        verbose: int = 0,
    ) -> None:
        self.cfg = cfg
        self.study = study
        self.data = data
        self.pool = pool
        self.progress = progress
        self.deadline = deadline
        self.on_trial_end = on_trial_end
        self.verbose = verbose
        self.consecutive_failures = 0
        self.baselines = cfg.study.baselines
        self.memory_budget = device_memory_budget()

    def budget_left(self) -> bool:
        return self.deadline is None or time.time() < self.deadline

    @property
    def stop_requested(self) -> int:
        """Ctrl-C count (the engines stop asking for trials once it is set)."""
        return self.pool.stop_requested

    def owns_stale_trial(self, number: int) -> bool:
        """The record of a trial left running says it ran on this machine, in this results folder."""
        rec = self.study.read_trial(number)
        return rec is not None and rec.status == "running" and rec.engine_id == platform.node()

    def mark_lost(self, number: int, reason: str, *, force: bool = False) -> None:
        """Record as failed a trial the engine gave up on (its driver stopped sending heartbeats).

        Only a record still 'running' changes, unless ``force`` (the trial finished here after the
        storage had failed it: the storage's verdict wins, a retry runs under a new number).
        """
        rec = self.study.read_trial(number)
        if rec is None or rec.status == "failed" or (rec.status != "running" and not force):
            return
        rec.status = "failed"
        rec.reason = reason if rec.reason == "" or rec.reason == reason else f"{reason} ({rec.reason})"
        rec.finished_at = time.time()
        self.study.write_trial(rec)
        self.study.refresh_trials_csv()
        logger.warning("trial %d: %s; recorded as failed (its retry, if any, has a new number)", number, reason)

    def record_external(
        self, number: int, sampled: dict[str, Any], *, status: str, score: float | None, reason: str, baseline: bool
    ) -> None:
        """Record a trial that another process ran (Keras Tuner chief), unless recorded here already."""
        existing = self.study.read_trial(number)
        if existing is not None:
            if existing.status != "running":
                self.progress.trial_finished(existing, self.study.best_trial())
            return
        values = complete_values(self.cfg, sampled)
        rec = TrialRecord(number=number, status=status, values=values,  # type: ignore[arg-type]
                          seed=trial_seed(self.cfg.study.seed, number), score=score, reason=reason,
                          baseline=baseline, engine_id="keras-tuner worker", finished_at=time.time())
        self.study.write_trial(rec)
        atomic_write_json(self.study.trial_dir(number) / "values.json", values)
        self.study.refresh_trials_csv()
        self.progress.trial_finished(rec, self.study.best_trial())

    def _catch_up_reports(self, number: int, should_prune: Callable[[int, float], bool]) -> None:
        """Report the epochs of a resumed trial's checkpoint that the engine may have missed
        (the driver can die between the checkpoint and the report)."""
        from search.training import OBJECTIVE, Checkpoint

        ckpt = Checkpoint(self.study.trial_dir(number) / "checkpoint")
        if not ckpt.exists():
            return
        try:
            history = json.loads(ckpt.state_path.read_text()).get("history", [])
        except (OSError, ValueError):
            return
        best = float("-inf")
        for row in history:
            score = row.get(OBJECTIVE, row.get("hard_dice"))
            if "epoch" in row and score is not None:
                best = max(best, float(score))  # the running best, as the live reports send it
                try:
                    should_prune(int(row["epoch"]), best)
                except Exception:  # noqa: BLE001 - reporting is best effort, the trial still runs
                    logger.debug("catch-up report failed", exc_info=True)

    def __call__(
        self,
        number: int,
        sampled: dict[str, Any],
        *,
        baseline: bool,
        max_epochs: int | None = None,
        should_prune: Callable[[int, float], bool] | None = None,
    ) -> TrialRecord:
        cfg = self.cfg
        if self.pool.stop_requested:
            raise Interrupted("stopped before starting another trial")
        values = complete_values(cfg, sampled)
        previous = self.study.read_trial(number)
        if previous is not None and previous.status != "running":
            logger.warning("trial %d was already recorded as %s; keeping that record", number, previous.status)
            return previous
        rec = TrialRecord(
            number=number,
            status="running",
            values=values,
            seed=trial_seed(cfg.study.seed, number),
            baseline=baseline,
            engine_id=platform.node(),
        )
        if previous is not None:
            rec.started_at = previous.started_at
        self.study.write_trial(rec)
        atomic_write_json(self.study.trial_dir(number) / "values.json", values)
        self.study.refresh_trials_csv()
        self.progress.trial_started(number)
        task = TrialTask(
            number=number,
            values=values,
            seed=rec.seed,
            out_dir=str(self.study.trial_dir(number)),
            config=cfg.to_dict(),
            cache_path=self.data.cache_path,
            max_epochs=max_epochs,
            memory_budget=self.memory_budget,
            verbose=self.verbose,
        )

        if previous is not None and should_prune is not None:
            self._catch_up_reports(number, should_prune)

        def decide(epoch: int, logs: dict[str, float]) -> str:
            self.progress.epoch(number, epoch, logs)
            if should_prune is None:
                return "continue"
            if not logs.get("judgeable", 1.0):
                return "continue"  # warm-up, or still learning with a zero score (search/training.py)
            try:
                # The running best: the objective is the best epoch, so a dip at a rung is no reason
                # to prune, and a pruned trial's Optuna value equals its trials.csv score.
                score = logs.get("best_score", logs.get("score", float("nan")))
                prune = should_prune(epoch, float(score))
            except Exception:  # noqa: BLE001 - a storage hiccup must not wedge the worker mid-epoch
                logger.warning("trial %d: the pruner could not be asked at epoch %d", number, epoch, exc_info=True)
                return "continue"
            return "prune" if prune else "continue"

        outcome = self.pool.run(task, decide)
        if outcome.status == "interrupted":
            raise Interrupted(f"stopped during trial {number}; it resumes from its last completed epoch")
        rec.status = outcome.status  # type: ignore[assignment]
        rec.score = outcome.score
        rec.best_epoch = outcome.best_epoch
        rec.epochs_run = outcome.epochs_run
        rec.reason = outcome.reason
        rec.duration_s = outcome.duration_s
        rec.train_s = outcome.train_s
        rec.metrics = {k: v for k, v in outcome.metrics.items() if isinstance(v, (int, float, str))}
        rec.finished_at = time.time()
        self.study.write_trial(rec)
        self.study.refresh_trials_csv()
        best = self.study.best_trial()
        self.progress.trial_finished(rec, best)
        if self.on_trial_end is not None:
            self.on_trial_end()
        if rec.status == "failed" and not outcome.infeasible:  # rejected values cost nothing; don't abort
            self.consecutive_failures += 1
            if self.consecutive_failures >= cfg.study.max_consecutive_failures:
                raise SearchAborted(
                    f"{self.consecutive_failures} trials failed in a row (study.max_consecutive_failures); "
                    f"last reason: {rec.reason}. See `python -m search status {cfg.study.name}`"
                )
        elif rec.status != "failed":
            self.consecutive_failures = 0
        return rec


def run_study(
    cfg: Config,
    *,
    results_root: Path,
    allow_changes: bool = False,
    verbose: int = 0,
    show_progress: bool = True,
    pool: WorkerPool | None = None,
    role: Literal["main", "worker"] = "main",
    threads: int | None = None,
    worker_index: int | None = None,
    parent_pid: int | None = None,
) -> dict[str, Any]:
    """Create or resume a study, run the search, then the final stage. Returns a summary.

    Args:
        role: ``main`` (``run``: holds the study lock, starts ``study.workers − 1`` extra drivers,
            runs the final stage) or ``worker`` (``worker NAME``: joins a study and runs trials).
            A ``main`` that finds the study running joins it like a worker (Optuna only).
        threads: CPU threads for this driver's trials (the main driver splits them itself).
        worker_index: an extra driver's index (varies its sampler seed).
        parent_pid: an extra driver stops (after the current epoch) once this process is gone.
    """
    if cfg.study.storage:
        check_stored_config(cfg, allow_changes=allow_changes)  # reads only; before anything is created
    study, existed = open_study_dir(cfg, results_root, allow_changes=allow_changes)
    lock = StudyLock(study)
    # The lock is the claim on a new study, taken before its data is prepared: study.yaml (what
    # "exists" means) is written only after that, and only the lock holder may remove the folder.
    owner = role != "worker" and lock.try_acquire()
    joined = not owner
    if not existed and study.exists():  # created by another driver between the check and the lock
        study, existed = open_study_dir(cfg, results_root, allow_changes=allow_changes)
    if not existed and role != "worker" and not owner:
        raise ConfigError(
            f"study {cfg.study.name!r} is being created by another driver (pid {lock.holder()}), which is "
            f"preparing its data; run this again once `python -m search status {cfg.study.name}` shows it, "
            f"or use another --study name"
        )
    kt_role = kt_distributed_role()
    try:
        try:
            if role == "worker" and cfg.engine != "optuna" and kt_role is None:
                raise ConfigError(
                    f"study {cfg.study.name!r} uses Keras Tuner ({cfg.study.strategy}): its workers join through "
                    f"Keras Tuner's chief/worker mode; set KERASTUNER_TUNER_ID=tuner0 (tuner1, …) and the "
                    f"chief's KERASTUNER_ORACLE_IP / KERASTUNER_ORACLE_PORT, or use `run --workers N`"
                )
            if joined and cfg.engine != "optuna" and kt_role != "worker":
                raise ConfigError(
                    f"study {cfg.study.name!r} is already running (driver pid {lock.holder()}); Keras Tuner "
                    f"studies take one driver: wait for it, use Keras Tuner's chief/worker mode "
                    f"(KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP/PORT), or an Optuna strategy to add workers"
                )
            data = prepare_data(cfg, results_root)
            if existed and study.fingerprint_json.is_file():
                old = read_json(study.fingerprint_json)
                if old.get("content_hash") != data.fingerprint.get("content_hash") and not allow_changes:
                    raise ConfigError(
                        f"study {cfg.study.name!r} was made with another dataset (content hash "
                        f"{str(old.get('content_hash'))[:12]} != {str(data.fingerprint.get('content_hash'))[:12]}); "
                        f"use another --study name or --allow-changes"
                    )
        except BaseException:
            if owner and not existed:  # nothing changed: drop the folder this call claimed, still holding it
                shutil.rmtree(study.root, ignore_errors=True)
                lock.release()
            elif not existed:  # a worker's new local folder: removed only if nothing is in it
                with contextlib.suppress(OSError):
                    study.root.rmdir()
            raise
        if not joined:
            _sweep_temp_files(study)
        if not joined or not existed:
            atomic_write_text(study.study_yaml, cfg.to_yaml())
            atomic_write_json(study.fingerprint_json, data.fingerprint)
            atomic_write_json(study.environment_json, environment_info())
        deadline = time.time() + cfg.study.timeout_s if cfg.study.timeout_s else None
        # Keras Tuner with --workers N on this machine: this process becomes Keras Tuner's chief
        # (it serves the oracle and trains nothing) and starts N workers.
        kt_local = cfg.engine == "keras_tuner" and not joined and kt_role is None and cfg.study.workers > 1
        n_drivers = cfg.study.workers if not joined and (cfg.engine == "optuna" or kt_local) else 1
        slots = plan_slots(n_drivers) if n_drivers > 1 else [DriverSlot(0, threads=threads)]
        extra_slots = slots[1:]
        if kt_local:
            chief_env = {"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "127.0.0.1",
                         "KERASTUNER_ORACLE_PORT": str(free_port())}
            extra_slots = [DriverSlot(s.index, env={**s.env, **chief_env, "KERASTUNER_TUNER_ID": f"tuner{s.index}"},
                                      threads=s.threads) for s in slots]
            kt_role = "chief"
        own_pool = pool is None
        pool = pool or WorkerPool(
            recycle_after=cfg.study.recycle_after,
            runtime={**worker_runtime(cfg), **({"threads": slots[0].threads} if slots[0].threads else {})},
            env=slots[0].env,
        )
        progress = Progress(total=cfg.study.max_trials, enabled=show_progress, done=len(
            [r for r in study.trials() if r.status != "running"]))
        executor = TrialExecutor(
            cfg, study, data, pool, progress, deadline=deadline, on_trial_end=lambda: _refresh_report(study),
            verbose=verbose,
        )
        extras = ExtraDrivers(study_name=cfg.study.name, results_root=results_root,
                              log_dir=study.engine_dir / "workers", verbose=verbose) if n_drivers > 1 else None
        restore_sigint = _install_sigint(pool, extras, extra_driver=parent_pid is not None)
        if parent_pid is not None:
            watch_parent(parent_pid, lambda: setattr(pool, "stop_requested", max(1, pool.stop_requested)))
        try:
            if cfg.engine == "optuna":
                from search.engines.optuna_engine import run_optuna

                run_optuna(
                    cfg,
                    executor=executor,
                    engine_dir=study.engine_dir,
                    enqueue_baseline=not joined,
                    wait_for_others=not joined,
                    seed_offset=0 if not joined else (worker_index if worker_index is not None else 1000 + os.getpid()),
                    on_ready=(lambda: extras.start(extra_slots)) if extras is not None else None,
                )
                if extras is not None:
                    extras.wait()
            else:
                from search.engines.kt_engine import run_keras_tuner

                if extras is None:
                    run_keras_tuner(cfg, executor=executor, engine_dir=study.engine_dir)
                else:
                    with temporary_environ(chief_env):
                        extras.start(extra_slots)
                        run_keras_tuner(cfg, executor=executor, engine_dir=study.engine_dir,
                                        workers_alive=extras.any_running,
                                        drain=lambda: extras.wait(timeout=120))
                    extras.wait()
            progress.close()
            summary: dict[str, Any] = {"study": str(study.root), "best": _best_summary(study)}
            if cfg.final.retrain and not joined and kt_role != "worker":
                summary["final"] = run_final(study, cfg=cfg, data=data, pool=pool, progress=progress, verbose=verbose)
            _refresh_report(study)
            return summary
        finally:
            if extras is not None:
                _stop_extras(extras, pool.stop_requested)
            restore_sigint()
            progress.close()
            if own_pool:
                pool.close()
    finally:
        lock.release()


def _sweep_temp_files(study: StudyDir, *, older_than_s: float = 60.0) -> None:
    """Remove the temp files of atomic writes that a kill interrupted (``.NAME.XXXX.tmp``).

    Only old ones: a driver of the study that is still finishing an epoch may be writing one now.
    """
    now = time.time()
    for path in study.root.rglob(".*.tmp"):
        try:
            if path.is_file() and now - path.stat().st_mtime > older_than_s:
                path.unlink()
        except OSError:
            pass


def check_stored_config(cfg: Config, *, allow_changes: bool = False) -> None:
    """Refuse a study that exists in ``study.storage`` with another configuration (reads only)."""
    from search.engines.optuna_engine import redact_url, stored_config

    stored = stored_config(cfg)
    if not stored:
        return
    old = config_from_dict(stored, source=f"{redact_url(str(cfg.study.storage))} study {cfg.study.name!r}")
    if not allow_changes:
        refuse_differences(cfg, old, where=redact_url(str(cfg.study.storage)))


def kt_distributed_role() -> Literal["chief", "worker"] | None:
    """Keras Tuner's chief/worker mode from its environment variables, if set."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    for var in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        if not os.environ.get(var):
            raise ConfigError(f"KERASTUNER_ORACLE_IP is set but {var} is not (Keras Tuner chief/worker mode)")
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def _stop_extras(extras: ExtraDrivers, stop_requested: int) -> None:
    """The main driver is leaving: let its extra drivers finish (they stop on Ctrl-C or on their own)."""
    codes = [p.poll() for p in extras.procs]
    if any(c is None for c in codes):
        if not stop_requested:
            extras.interrupt()  # an error in the main driver: stop them after the epoch
        extras.wait(timeout=120)
        extras.kill()
    extras.close()


def worker_runtime(cfg: Config) -> dict[str, Any]:
    """Runtime settings of a training worker (search.runtime.configure_runtime's arguments).

    Op determinism makes Keras drop XLA (with only a warning), so ``jit_compile`` turns it off.
    """
    return {
        "mixed_precision": cfg.train.mixed_precision,
        "deterministic": cfg.train.deterministic and not cfg.train.jit_compile,
    }


def _install_sigint(
    pool: WorkerPool, extras: ExtraDrivers | None = None, *, extra_driver: bool = False
) -> Callable[[], None]:
    """First Ctrl-C: finish the current epoch, checkpoint, stop. Second: stop at once.

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
        pool.stop_requested += 1
        if extras is not None:
            extras.interrupt()
        if pool.stop_requested == 1:
            logger.warning("Ctrl-C: finishing the current epoch, then stopping (resumable); Ctrl-C again stops now")
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


def _refresh_report(study: StudyDir) -> None:
    try:
        from search.report import write_report
    except ImportError:
        return
    try:
        write_report(study)
    except Exception:  # noqa: BLE001 - a report problem must never stop a search
        logger.warning("could not refresh %s", study.report_html, exc_info=True)


def run_final(
    study: StudyDir,
    *,
    cfg: Config | None = None,
    data: PreparedData | None = None,
    pool: WorkerPool | None = None,
    progress: Progress | None = None,
    verbose: int = 0,
    results_root: Path | None = None,
) -> dict[str, Any]:
    """Retrain the best trial's values from scratch and evaluate them on the test split."""
    if cfg is None:
        cfg = config_from_dict(yaml.safe_load(study.study_yaml.read_text()), source=str(study.study_yaml))
    best = study.best_trial()
    if best is None:
        raise ConfigError(f"study {study.name!r} has no completed trial yet; nothing to retrain")
    if data is None:
        data = prepare_data(cfg, results_root or study.root.parent)
    final_dir = study.final_dir
    final_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(final_dir / "best_config.yaml", best_config(cfg, best.values).to_yaml())
    fixed = (best.best_epoch or 0) + 1 if cfg.final.train_on_valid else None
    weights = study.trial_dir(best.number) / "best.weights.h5"
    if fixed is None and not weights.is_file():
        raise SearchAborted(
            f"trial {best.number}'s weights {weights} are missing; set final.train_on_valid=true to retrain"
        )
    task = TrialTask(
        number=best.number,
        values=best.values,
        seed=trial_seed(cfg.study.seed, best.number),
        out_dir=str(final_dir),
        config=cfg.to_dict(),
        cache_path=data.cache_path,
        kind="final",
        fixed_epochs=fixed,
        weights_path=None if fixed is not None else str(weights),
        verbose=verbose,
    )
    own = pool is None
    pool = pool or WorkerPool(recycle_after=1, runtime=worker_runtime(cfg))
    logger.info("final: %s trial %d (validation score %.4f)",
                "retraining on train+valid" if fixed else "testing the weights of", best.number, best.score or 0)
    try:
        outcome = pool.run(task, lambda epoch, logs: "continue")
    finally:
        if own:
            pool.close()
    if outcome.status == "interrupted":
        raise Interrupted("final retrain interrupted; run `python -m search final NAME` to redo it")
    if outcome.status != "complete":
        raise SearchAborted(f"final retrain of trial {best.number} failed: {outcome.reason}")
    metrics = read_json(final_dir / "test_metrics.json")
    metrics_summary = {k: metrics[k] for k in ("hard_dice", "hard_iou", "soft_dice", "loss", "n_images")}
    atomic_write_json(
        final_dir / "final.json",
        {"trial": best.number, "values": best.values, "valid_score": best.score, "test": metrics_summary,
         "train_on_valid": cfg.final.train_on_valid, "model_from": metrics.get("model_from"),
         "epochs_run": outcome.epochs_run,
         "duration_s": outcome.duration_s},
    )
    logger.info(
        "final: test hard dice %.4f, IoU %.4f (trial %d)", metrics["hard_dice"], metrics["hard_iou"], best.number
    )
    return {"trial": best.number, **metrics_summary}
