"""Optuna strategies (tpe, cmaes, gp, random-optuna) with pruners (none, median, asha, hyperband).

Storage: a journal file under ``results/<study>/engine/optuna.journal`` (several drivers on one
machine share it: appends take a ``flock``, which the kernel releases when a driver dies), or an
RDB storage such as PostgreSQL when ``study.storage`` is set (drivers on many machines, with
heartbeats: a trial whose driver stopped beating is failed and retried as a new trial number).

Every driver runs the same ask/tell loop (:func:`run_optuna`). Two things are decided under a
study-wide lock so that concurrent drivers agree: which trial to run next (a trial left RUNNING
by a dead driver of this machine, a retry, or a new one) and whether the trial budget is spent.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import logging
import math
import os
import platform
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna

from search.config import Config
from search.engines import Executor
from search.errors import ConfigError, Interrupted, SearchAborted, TrialFailed
from search.space import baseline_values, suggest_optuna

logger = logging.getLogger(__name__)

TS = optuna.trial.TrialState
FINISHED = (TS.COMPLETE, TS.PRUNED, TS.FAIL)
HEARTBEAT_S = 30  # seconds between heartbeats; a trial is stale after 4 missed beats (120 s)
HEARTBEAT_LOST = "worker heartbeat lost"
DRIVER_ATTR = "driver"  # user attr of a trial: "host:pid:start" of the driver running it
POLL_S = 2.0  # how often a driver waiting for other drivers' trials looks again
ORPHAN_AGE_S = 120.0  # an untagged RUNNING trial older than this lost its driver (non-PostgreSQL RDB)


def quiet_optuna() -> None:
    """Optuna's logging and the warnings it gives for the way this loop uses it on purpose
    (heartbeats outside ``optimize``, experimental heartbeat arguments, telling a finished trial)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*since trial was already finished.*")
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


# --------------------------------------------------------------------------- sampler, pruner


def make_sampler(cfg: Config, *, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The strategy's sampler; each driver of a parallel study gets its own seed (``seed_offset``)."""
    seed = cfg.study.seed + seed_offset
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


# --------------------------------------------------------------------------- storage


def heartbeat_settings(cfg: Config) -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds for RDB storage.

    ``study.heartbeat_s`` when the config has it, else ``UNET_SEARCH_HEARTBEAT_S``, else 30 s;
    the grace period is four intervals (30 → 120 s).
    """
    value: Any = getattr(cfg.study, "heartbeat_s", None) or os.environ.get("UNET_SEARCH_HEARTBEAT_S")
    try:
        interval = max(1, int(float(value))) if value else HEARTBEAT_S
    except ValueError:
        raise ConfigError(f"UNET_SEARCH_HEARTBEAT_S: expected seconds, got {value!r}") from None
    return interval, 4 * interval


def redact_url(url: str) -> str:
    """The storage URL without its password (for messages)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not even a URL: hide anything between ':' and '@'
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _storage_error(url: str, e: BaseException) -> ConfigError:
    """One line naming the URL (password hidden) and the driver's first line of complaint."""
    orig = getattr(e, "orig", None) or e
    text = " ".join(str(orig).split()) or type(orig).__name__
    text = re.sub(r"\(Background on this error at:.*?\)", "", text).strip()
    try:
        from sqlalchemy.engine import make_url

        password = make_url(url).password
    except Exception:  # noqa: BLE001
        password = None
    if password:
        text = text.replace(str(password), "***")
    return ConfigError(f"study.storage {redact_url(url)}: cannot use this database ({text[:300]})")


def make_rdb_storage(cfg: Config) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage with heartbeats and retry of stale trials; errors become ConfigError."""
    import sqlalchemy.exc

    url = str(cfg.study.storage)
    interval, grace = heartbeat_settings(cfg)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                engine_url(url),
                engine_kwargs=engine_kwargs,
                heartbeat_interval=interval,
                grace_period=grace,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2),
            )
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, RuntimeError) as e:
        raise _storage_error(url, e) from None


def engine_url(url: str) -> str:
    """``postgresql://`` means psycopg (3) to SQLAlchemy 2.1; use psycopg2 (a dependency) when
    psycopg is not installed, so that the plain URL works."""
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


class _FlockLock:
    """Journal lock with ``flock``: unlike Optuna's symlink lock, a SIGKILLed holder releases it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def make_storage(cfg: Config, engine_dir: Path) -> Any:
    """PostgreSQL/RDB when ``study.storage`` is set (with heartbeats), else a local journal file."""
    if cfg.study.storage:
        return make_rdb_storage(cfg)
    from optuna.storages.journal import JournalFileBackend

    engine_dir.mkdir(parents=True, exist_ok=True)
    lock = _FlockLock(engine_dir / ".journal.lock")
    backend = JournalFileBackend(str(engine_dir / "optuna.journal"), lock_obj=lock)  # type: ignore[arg-type]
    return optuna.storages.JournalStorage(backend)


def load_study(cfg: Config, engine_dir: Path, *, create: bool = True, seed_offset: int = 0) -> optuna.Study:
    quiet_optuna()
    storage = make_storage(cfg, engine_dir)
    sampler, pruner = make_sampler(cfg, seed_offset=seed_offset), make_pruner(cfg)
    try:
        if create:
            return optuna.create_study(
                study_name=cfg.study.name, storage=storage, sampler=sampler, pruner=pruner,
                direction="maximize", load_if_exists=True,
            )
        return optuna.load_study(study_name=cfg.study.name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        raise ConfigError(f"no Optuna study {cfg.study.name!r} in {_where(cfg, engine_dir)}") from None
    except Exception as e:
        import sqlalchemy.exc

        if isinstance(e, sqlalchemy.exc.SQLAlchemyError) and cfg.study.storage:
            raise _storage_error(cfg.study.storage, e) from None
        raise


def _where(cfg: Config, engine_dir: Path) -> str:
    return redact_url(cfg.study.storage) if cfg.study.storage else str(engine_dir / "optuna.journal")


def stored_config(cfg: Config) -> dict[str, Any] | None:
    """The config saved with the study in ``study.storage`` (user attr "config"), or None if new.

    Reads only: used to refuse a study name that exists there with another configuration, and by
    ``worker NAME --storage URL`` on a machine that has no ``results/NAME/study.yaml``.
    """
    storage = make_rdb_storage(cfg)
    try:
        study_id = storage.get_study_id_from_name(cfg.study.name)
    except KeyError:
        return None
    except Exception as e:
        import sqlalchemy.exc

        if isinstance(e, sqlalchemy.exc.SQLAlchemyError):
            raise _storage_error(str(cfg.study.storage), e) from None
        raise
    attrs = storage.get_study_user_attrs(study_id)
    config = attrs.get("config")
    return config if isinstance(config, dict) else {}


# --------------------------------------------------------------------------- drivers


def driver_token() -> str:
    """Who runs a trial: ``host:pid:process start time`` (the start time guards against pid reuse)."""
    pid = os.getpid()
    return f"{platform.node()}:{pid}:{_process_start(pid)}"


def _process_start(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks since boot


def driver_alive(token: str) -> bool | None:
    """True/False for a driver on this machine; None when it runs elsewhere (heartbeats decide)."""
    parts = token.rsplit(":", 2)
    if len(parts) != 3:
        return False
    host, pid_text, start = parts
    if host != platform.node():
        return None
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass
    return start == "?" or _process_start(pid) == start


def _storage(study: optuna.Study) -> Any:
    """The study's storage (heartbeat methods exist only on RDB storages and their cache)."""
    return study._storage


def _heartbeats_enabled(storage: Any) -> bool:
    get = getattr(storage, "get_heartbeat_interval", None)
    return get is not None and get() is not None


def _sql_engine(storage: Any) -> Any:
    """The SQLAlchemy engine behind an RDB storage (Optuna wraps it in a cache), else None."""
    backend = getattr(storage, "_backend", storage)
    return getattr(backend, "engine", None)


@contextlib.contextmanager
def study_lock(study: optuna.Study, engine_dir: Path) -> Iterator[None]:
    """A lock shared by every driver of the study: a PostgreSQL advisory lock or a local flock.

    Both are released by the server/kernel when their holder dies, so a killed driver never
    leaves the study locked.
    """
    engine = _sql_engine(study._storage)
    if engine is not None and engine.dialect.name == "postgresql":
        from sqlalchemy import text

        key = int.from_bytes(hashlib.sha256(f"unet-search:{study.study_name}".encode()).digest()[:8], "big", signed=True)
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
        return
    engine_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(engine_dir / ".study.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def budget_used(trials: list[optuna.trial.FrozenTrial]) -> tuple[int, int]:
    """(trials that count against ``study.max_trials``, retries waiting to run).

    Started trials count, whichever driver started them; a trial failed by a lost heartbeat and
    its retry count once (the retry is the same configuration under a new number).
    """
    retried = {t.system_attrs.get("failed_trial") for t in trials if "failed_trial" in t.system_attrs}
    retried |= {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    used = waiting_retries = 0
    for t in trials:
        if t.state in (TS.COMPLETE, TS.PRUNED, TS.RUNNING):
            used += 1
        elif t.state == TS.FAIL and t.number not in retried:
            used += 1
        elif t.state == TS.WAITING and "failed_trial" in t.system_attrs:
            used += 1
            waiting_retries += 1
    return used, waiting_retries


# --------------------------------------------------------------------------- the loop


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
        if enqueue_baseline and cfg.study.baselines and len(study.get_trials(deepcopy=False)) == 0:
            study.enqueue_trial(baseline_values(cfg), user_attrs={"baseline": True})
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
    heartbeats = _heartbeats_enabled(study._storage)
    announced = False
    while True:
        if getattr(executor, "stop_requested", 0):
            raise Interrupted("stopped before starting another trial")
        if heartbeats:
            optuna.storages.fail_stale_trials(study)  # a dead machine's trial: FAIL + a retry copy
        _reconcile_lost(study, executor)
        with study_lock(study, engine_dir):
            trial, others = _next_trial(study, cfg, executor, token, heartbeats=heartbeats)
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


def _next_trial(
    study: optuna.Study, cfg: Config, executor: Executor, token: str, *, heartbeats: bool
) -> tuple[optuna.trial.Trial | None, int]:
    """Under the study lock: the trial this driver runs next (claimed), or None and how many
    trials other live drivers are still running."""
    trials = study.get_trials(deepcopy=False)
    others = 0
    for t in trials:
        if t.state != TS.RUNNING:
            continue
        owner = t.user_attrs.get(DRIVER_ATTR)
        if owner is None and (_lock_is_global(study) or _age_s(t) > ORPHAN_AGE_S):
            # Every driver sets its token under this lock right after asking: a RUNNING trial
            # without one was asked by a driver killed in between (or by an older version).
            # (Where the lock is only this machine's — an RDB other than PostgreSQL — a young
            # one may belong to a driver on another machine that is tagging it right now.)
            return _claim(study, t, token, heartbeats), others
        if owner is None:
            others += 1
            continue
        alive = driver_alive(owner)
        if alive is False and _may_continue(t, executor, heartbeats):
            logger.info("trial %d: its driver is gone; continuing it from its last completed epoch", t.number)
            return _claim(study, t, token, heartbeats), others
        others += 1
    if not executor.budget_left():
        return None, 0
    used, waiting_retries = budget_used(trials)
    if used >= _max_trials(study, cfg) and not waiting_retries:
        return None, others
    trial = study.ask()
    trial.set_user_attr(DRIVER_ATTR, token)
    if heartbeats:
        _storage(study).record_heartbeat(trial._trial_id)
    return trial, others


def _lock_is_global(study: optuna.Study) -> bool:
    """Whether :func:`study_lock` excludes every driver (journal: one machine; PostgreSQL)."""
    engine = _sql_engine(study._storage)
    return engine is None or engine.dialect.name == "postgresql"


def _age_s(t: optuna.trial.FrozenTrial) -> float:
    if t.datetime_start is None:
        return float("inf")
    return (datetime.datetime.now() - t.datetime_start).total_seconds()


def _max_trials(study: optuna.Study, cfg: Config) -> int:
    """The study's trial budget as its main driver published it (else this driver's config)."""
    stored = study.user_attrs.get("config")
    try:
        return int(stored["study"]["max_trials"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return cfg.study.max_trials


def _may_continue(t: optuna.trial.FrozenTrial, executor: Executor, heartbeats: bool) -> bool:
    """A trial of a dead driver of this machine. With heartbeats (several machines), continue it
    only if its checkpoint is in this results folder; otherwise its heartbeat runs out and a retry
    takes its place."""
    if not heartbeats:
        return True
    owns = getattr(executor, "owns_stale_trial", None)
    return bool(owns is not None and owns(t.number))


def _claim(study: optuna.Study, frozen: optuna.trial.FrozenTrial, token: str, heartbeats: bool) -> optuna.trial.Trial:
    study._storage.set_trial_user_attr(frozen._trial_id, DRIVER_ATTR, token)
    if heartbeats:
        _storage(study).record_heartbeat(frozen._trial_id)
    return optuna.trial.Trial(study, frozen._trial_id)


def _reconcile_lost(study: optuna.Study, executor: Executor) -> None:
    """A trial the storage failed (lost heartbeat) must not stay 'running' in the results."""
    mark = getattr(executor, "mark_lost", None)
    if mark is None:
        return
    for t in study.get_trials(deepcopy=False, states=(TS.FAIL,)):
        mark(t.number, HEARTBEAT_LOST)


def _run_one(study: optuna.Study, trial: optuna.trial.Trial, cfg: Config, executor: Executor) -> None:
    """Run one trial and tell Optuna its state; Interrupted leaves it RUNNING (resumable)."""
    with _Heartbeat(study, trial):
        try:
            value = _objective(trial, cfg, executor)
        except optuna.TrialPruned:
            _tell(study, trial, executor, state=TS.PRUNED)
        except TrialFailed:
            _tell(study, trial, executor, state=TS.FAIL)
        except SearchAborted:
            _tell(study, trial, executor, state=TS.FAIL)  # recorded failed in the results too
            raise
        else:
            _tell(study, trial, executor, value=value)


def _tell(
    study: optuna.Study, trial: optuna.trial.Trial, executor: Executor, *, state: Any = None, value: float | None = None
) -> None:
    frozen = study.tell(trial, value, state=state, skip_if_finished=True)
    wanted = TS.COMPLETE if state is None else state
    if frozen.state != wanted and frozen.state == TS.FAIL:
        # Another driver failed this trial (its heartbeat ran out) while it ran here; a retry
        # copy runs under a new number, so this record must say failed like the storage does.
        logger.warning("trial %d was failed by the storage (heartbeat lost) while it ran here", trial.number)
        mark = getattr(executor, "mark_lost", None)
        if mark is not None:
            mark(trial.number, HEARTBEAT_LOST, force=True)


class _Heartbeat:
    """Record heartbeats for a trial while it runs (RDB storage only), like ``optimize`` does."""

    def __init__(self, study: optuna.Study, trial: optuna.trial.Trial) -> None:
        self.storage = _storage(study)
        self.trial_id = trial._trial_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Heartbeat:
        storage = self.storage
        if _heartbeats_enabled(storage):
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


def _objective(trial: optuna.trial.Trial, cfg: Config, executor: Executor) -> float:
    sampled = suggest_optuna(trial, cfg)
    reported = set(trial.storage.get_trial(trial._trial_id).intermediate_values)
    lost = False

    def should_prune(epoch: int, score: float) -> bool:
        nonlocal lost
        if lost:
            return True
        try:
            if epoch not in reported and math.isfinite(score):
                trial.report(score, epoch)
                reported.add(epoch)
            return trial.should_prune()
        except optuna.exceptions.UpdateFinishedTrialError:
            lost = True  # failed by another driver's fail_stale_trials: stop, a retry runs it
            return True

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
