"""Where an Optuna study lives: a local journal file, or an RDB storage such as PostgreSQL.

A journal under ``results/<study>/engine/optuna.journal`` serves several drivers on one machine: its
appends take a ``flock``, which the kernel releases when a driver dies. An RDB storage
(``study.storage``) serves drivers on many machines, with heartbeats: a trial whose driver stopped
beating is failed and retried as a new trial number. Messages name a URL without its password
(:func:`redact_url`).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import optuna

from search.config import Config
from search.engines.optuna_engine.sampling import make_pruner, make_sampler
from search.errors import ConfigError
from search.results.layout import JOURNAL_FILE, JOURNAL_LOCK
from search.results.locks import lock_file, unlock_file

__all__ = [
    "HEARTBEAT_S",
    "engine_url",
    "heartbeat_settings",
    "heartbeats_enabled",
    "load_study",
    "make_rdb_storage",
    "make_storage",
    "quiet_optuna",
    "redact_url",
    "sql_engine",
    "stored_config",
    "study_storage",
]

HEARTBEAT_S = 30  # seconds between heartbeats; a trial is stale after 4 missed beats (120 s)


def quiet_optuna() -> None:
    """Optuna's logging and the warnings it gives for the way this loop uses it on purpose
    (heartbeats outside ``optimize``, experimental heartbeat arguments, telling a finished trial)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*since trial was already finished.*")
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


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
        self._fd = lock_file(self.path)
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            unlock_file(fd)


def make_storage(cfg: Config, engine_dir: Path) -> Any:
    """PostgreSQL/RDB when ``study.storage`` is set (with heartbeats), else a local journal file."""
    if cfg.study.storage:
        return make_rdb_storage(cfg)
    from optuna.storages.journal import JournalFileBackend

    engine_dir.mkdir(parents=True, exist_ok=True)
    lock = _FlockLock(engine_dir / JOURNAL_LOCK)
    backend = JournalFileBackend(str(engine_dir / JOURNAL_FILE), lock_obj=lock)  # type: ignore[arg-type]
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
    return redact_url(cfg.study.storage) if cfg.study.storage else str(engine_dir / JOURNAL_FILE)


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


def study_storage(study: optuna.Study) -> Any:
    """The study's storage (heartbeat methods exist only on RDB storages and their cache)."""
    return study._storage


def heartbeats_enabled(storage: Any) -> bool:
    """Whether the storage records heartbeats (RDB storage with ``heartbeat_interval``)."""
    get = getattr(storage, "get_heartbeat_interval", None)
    return get is not None and get() is not None


def sql_engine(storage: Any) -> Any:
    """The SQLAlchemy engine behind an RDB storage (Optuna wraps it in a cache), else None."""
    backend = getattr(storage, "_backend", storage)
    return getattr(backend, "engine", None)
