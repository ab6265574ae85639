"""Run a study: prepare the results folder and data, drive the strategy, run the final stage."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from search.config import Config, best_config, config_from_dict
from search.errors import ConfigError, Interrupted, SearchAborted
from search.progress import Progress
from search.results import StudyDir, TrialRecord, atomic_write_json, atomic_write_text, read_json
from search.runtime import device_memory_budget
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

    Returns the study folder and whether it already existed.
    """
    study = StudyDir(results_root / cfg.study.name)
    if study.exists():
        old = config_from_dict(yaml.safe_load(study.study_yaml.read_text()), source=str(study.study_yaml))
        diffs = config_differences(old, cfg)
        blocking = [d for d in diffs if d.split(":")[0] not in RESUMABLE_CHANGES]
        if blocking and not allow_changes:
            raise ConfigError(
                f"study {cfg.study.name!r} exists in {study.root} with another configuration: "
                + "; ".join(blocking[:8])
                + (f" (+{len(blocking) - 8} more)" if len(blocking) > 8 else "")
                + ". Use another --study name, or --allow-changes if the change is compatible"
            )
        return study, True
    try:
        study.root.mkdir(parents=True, exist_ok=True)
        probe = study.root / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"results folder {study.root} is not writable ({e.strerror})") from None
    return study, False


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
    for mod in ("tensorflow", "keras", "keras_tuner", "optuna", "numpy", "cv2"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - informational only
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
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
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

    def owns_stale_trial(self, number: int) -> bool:
        """A RUNNING trial whose record says it was running on this machine (we hold the lock)."""
        rec = self.study.read_trial(number)
        return rec is not None and rec.status == "running" and rec.engine_id == platform.node()

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

        def decide(epoch: int, logs: dict[str, float]) -> str:
            self.progress.epoch(number, epoch, logs)
            if should_prune is not None and should_prune(epoch, float(logs.get("score", float("nan")))):
                return "prune"
            return "continue"

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
) -> dict[str, Any]:
    """Create or resume a study, run the search, then the final stage. Returns a summary."""
    study, existed = open_study_dir(cfg, results_root, allow_changes=allow_changes)
    lock = StudyLock(study)
    joined = not lock.try_acquire()
    if joined and cfg.engine != "optuna":
        raise ConfigError(
            f"study {cfg.study.name!r} is already running (driver pid {lock.holder()}); Keras Tuner studies take "
            f"one driver: wait for it, or use an Optuna strategy to add workers"
        )
    try:
        data = prepare_data(cfg, results_root)
        if existed and study.fingerprint_json.is_file():
            old = read_json(study.fingerprint_json)
            if old.get("content_hash") != data.fingerprint.get("content_hash") and not allow_changes:
                raise ConfigError(
                    f"study {cfg.study.name!r} was made with another dataset (content hash "
                    f"{str(old.get('content_hash'))[:12]} != {str(data.fingerprint.get('content_hash'))[:12]}); "
                    f"use another --study name or --allow-changes"
                )
        if not joined:
            atomic_write_text(study.study_yaml, cfg.to_yaml())
            atomic_write_json(study.fingerprint_json, data.fingerprint)
            atomic_write_json(study.environment_json, environment_info())
        deadline = time.time() + cfg.study.timeout_s if cfg.study.timeout_s else None
        own_pool = pool is None
        pool = pool or WorkerPool(
            recycle_after=cfg.study.recycle_after,
            runtime={"mixed_precision": cfg.train.mixed_precision, "deterministic": cfg.train.deterministic},
        )
        progress = Progress(total=cfg.study.max_trials, enabled=show_progress, done=len(
            [r for r in study.trials() if r.status != "running"]))
        executor = TrialExecutor(
            cfg, study, data, pool, progress, deadline=deadline, on_trial_end=lambda: _refresh_report(study),
            verbose=verbose,
        )
        restore_sigint = _install_sigint(pool)
        try:
            if cfg.engine == "optuna":
                from search.engines.optuna_engine import run_optuna

                run_optuna(cfg, executor=executor, engine_dir=study.engine_dir, enqueue_baseline=not joined)
            else:
                from search.engines.kt_engine import run_keras_tuner

                run_keras_tuner(cfg, executor=executor, engine_dir=study.engine_dir)
            progress.close()
            summary: dict[str, Any] = {"study": str(study.root), "best": _best_summary(study)}
            if cfg.final.retrain and not joined:
                summary["final"] = run_final(study, cfg=cfg, data=data, pool=pool, progress=progress, verbose=verbose)
            _refresh_report(study)
            return summary
        finally:
            restore_sigint()
            progress.close()
            if own_pool:
                pool.close()
    finally:
        lock.release()


def _install_sigint(pool: WorkerPool) -> Callable[[], None]:
    """First Ctrl-C: finish the current epoch, checkpoint, stop. Second: stop at once.

    Either way the study stays resumable (the trial continues from its last completed epoch).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        pool.stop_requested += 1
        if pool.stop_requested == 1:
            logger.warning("Ctrl-C: finishing the current epoch, then stopping (resumable); Ctrl-C again stops now")
        else:
            logger.warning("Ctrl-C again: stopping now")

    previous = signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


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
    task = TrialTask(
        number=best.number,
        values=best.values,
        seed=trial_seed(cfg.study.seed, best.number),
        out_dir=str(final_dir),
        config=cfg.to_dict(),
        cache_path=data.cache_path,
        kind="final",
        fixed_epochs=fixed,
        verbose=verbose,
    )
    own = pool is None
    pool = pool or WorkerPool(recycle_after=1, runtime={"mixed_precision": cfg.train.mixed_precision})
    logger.info("final: retraining trial %d's configuration (validation score %.4f)", best.number, best.score or 0)
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
         "train_on_valid": cfg.final.train_on_valid, "epochs_run": outcome.epochs_run,
         "duration_s": outcome.duration_s},
    )
    logger.info(
        "final: test hard dice %.4f, IoU %.4f (trial %d)", metrics["hard_dice"], metrics["hard_iou"], best.number
    )
    return {"trial": best.number, **metrics_summary}
