"""How several drivers share one Optuna study: who runs which trial, and when the budget is spent.

Both are decided under :func:`study_lock`, a lock every driver of the study takes (a PostgreSQL
advisory lock or a local ``flock``; the server or the kernel releases it when its holder dies). Each
driver tags the trial it runs with its :func:`driver_token`; a trial left RUNNING by a dead driver of
this machine is continued from its checkpoint, one of a dead machine is failed by its heartbeat and
retried under a new number.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import platform
from collections.abc import Iterator
from pathlib import Path

import optuna

from search.config import Config
from search.engines import Executor
from search.engines.optuna_engine.storage import sql_engine, study_storage
from search.results.layout import STUDY_LOCK
from search.results.locks import locked

__all__ = ["DRIVER_ATTR", "budget_used", "driver_alive", "driver_token", "next_trial", "study_lock"]

logger = logging.getLogger(__name__)

TS = optuna.trial.TrialState
DRIVER_ATTR = "driver"  # user attr of a trial: "host:pid:start" of the driver running it
ORPHAN_AGE_S = 120.0  # an untagged RUNNING trial older than this lost its driver (non-PostgreSQL RDB)


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


@contextlib.contextmanager
def study_lock(study: optuna.Study, engine_dir: Path) -> Iterator[None]:
    """A lock shared by every driver of the study: a PostgreSQL advisory lock or a local flock.

    Both are released by the server/kernel when their holder dies, so a killed driver never
    leaves the study locked.
    """
    engine = sql_engine(study_storage(study))
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
    with locked(engine_dir / STUDY_LOCK):
        yield


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


def next_trial(
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
        study_storage(study).record_heartbeat(trial._trial_id)
    return trial, others


def _lock_is_global(study: optuna.Study) -> bool:
    """Whether :func:`study_lock` excludes every driver (journal: one machine; PostgreSQL)."""
    engine = sql_engine(study_storage(study))
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
    return executor.owns_stale_trial(t.number)


def _claim(study: optuna.Study, frozen: optuna.trial.FrozenTrial, token: str, heartbeats: bool) -> optuna.trial.Trial:
    study_storage(study).set_trial_user_attr(frozen._trial_id, DRIVER_ATTR, token)
    if heartbeats:
        study_storage(study).record_heartbeat(frozen._trial_id)
    return optuna.trial.Trial(study, frozen._trial_id)
