"""``dashboard``: optuna-dashboard on any study, and our trials as Optuna trials.

Optuna studies are served from their own storage (``study.storage`` or ``engine/optuna.journal``). Every
other study (Keras Tuner strategies, or ``--mirror``) is first mirrored from the results contract into an
Optuna journal at ``engine/dashboard.journal``, rebuilt on each call, so the dashboard works for all of them.
The same conversion feeds the report's hyperparameter importance (:func:`frozen_trials`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from search.config import HYPERPARAMETER_DEFAULTS, Config
from search.config.space import to_optuna
from search.errors import ConfigError
from search.results import StudyDir, TrialRecord, read_study_config
from search.results.layout import DASHBOARD_JOURNAL, JOURNAL_FILE
from search.vocabulary import OBJECTIVE, optuna_state

__all__ = [
    "covering_distributions",
    "dashboard_storage",
    "frozen_trials",
    "mirror_to_optuna",
    "quiet_optuna_logging",
    "serve",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- conversion


def covering_distributions(cfg: Config | None, records: Sequence[TrialRecord]) -> dict[str, Any]:
    """Optuna distributions of the sampled hyperparameters, widened to hold every recorded value.

    A study resumed with ``--allow-changes`` may hold values outside today's search space; without a
    config, every hyperparameter whose recorded values differ becomes a parameter.
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution


    dists: dict[str, Any] = to_optuna(cfg) if cfg is not None else {}
    for name in HYPERPARAMETER_DEFAULTS:
        if name in dists:
            continue
        seen = _distinct([r.values[name] for r in records if name in r.values])
        if cfg is None and len(seen) > 1:
            if all(_is_number(v) for v in seen):
                dists[name] = FloatDistribution(float(min(seen)), float(max(seen)))
            else:
                dists[name] = CategoricalDistribution(seen)
    for name, dist in list(dists.items()):
        dists[name] = _widen(dist, [r.values[name] for r in records if name in r.values])
    return dists


def frozen_trials(
    records: Sequence[TrialRecord],
    distributions: dict[str, Any],
    *,
    histories: dict[int, list[dict[str, Any]]] | None = None,
) -> list[Any]:
    """Our trial records as ``optuna.trial.FrozenTrial`` objects (state, value, params, epochs' scores)."""
    from optuna.trial import FrozenTrial, TrialState

    out = []
    for i, r in enumerate(records):
        state = optuna_state(r.status)
        score = None if r.score is None or not math.isfinite(float(r.score)) else float(r.score)
        if state == TrialState.COMPLETE and score is None:
            state = TrialState.FAIL
        params, dists = {}, {}
        for name, dist in distributions.items():
            if name in r.values:
                value = _coerce(dist, r.values[name])
                if value is not None:
                    params[name], dists[name] = value, dist
        start = dt.datetime.fromtimestamp(r.started_at)
        end = None
        if state != TrialState.RUNNING:
            end = dt.datetime.fromtimestamp(r.finished_at) if r.finished_at else start + dt.timedelta(
                seconds=r.duration_s)
        intermediate = {}
        for row in (histories or {}).get(r.number, []):
            v: Any = row.get(OBJECTIVE, row.get("hard_dice"))
            if isinstance(row.get("epoch"), int) and _finite(v):
                intermediate[int(row["epoch"])] = float(v)
        user_attrs: dict[str, Any] = {
            "trial_number": r.number,
            "baseline": r.baseline,
            "seed": r.seed,
            "epochs_run": r.epochs_run,
            "best_epoch": r.best_epoch,
            "duration_s": round(r.duration_s, 2),
        }
        if r.reason:
            user_attrs["reason"] = r.reason
        fixed = {k: v for k, v in r.values.items() if k not in params}
        if fixed:
            user_attrs["fixed_values"] = fixed
        out.append(
            FrozenTrial(
                number=i,
                state=state,
                value=score if state == TrialState.COMPLETE else None,
                datetime_start=start,
                datetime_complete=end,
                params=params,
                distributions=dists,
                user_attrs=user_attrs,
                system_attrs={},
                intermediate_values=intermediate,
                trial_id=i,
            )
        )
    return out


def mirror_to_optuna(study: StudyDir, *, path: Path | None = None) -> Any:
    """Mirror the study's trials into a fresh Optuna journal (``engine/dashboard.journal``).

    The journal is built beside its final path and renamed into place, so a reader never sees half of it.

    Returns:
        An ``optuna.storages.JournalStorage`` on the new journal, holding one study named like ours.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend

    cfg: Config | None
    try:
        cfg = read_study_config(study)
    except ConfigError as e:
        logger.warning("%s; mirroring without the search space", e)
        cfg = None
    records = study.trials()
    histories = {r.number: study.read_history(r.number) for r in records}
    trials = frozen_trials(records, covering_distributions(cfg, records), histories=histories)

    target = path or study.engine_dir / DASHBOARD_JOURNAL
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {target.parent} ({e.strerror})") from None
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp)))
        with quiet_optuna_logging():
            mirror = optuna.create_study(storage=storage, study_name=study.name, direction="maximize")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                mirror.set_metric_names([OBJECTIVE])
            mirror.set_user_attr("source", "unet-search results contract (mirror, rebuilt on each `dashboard`)")
            if cfg is not None:
                mirror.set_user_attr("strategy", cfg.study.strategy)
                mirror.set_user_attr("pruner", cfg.pruner)
            mirror.add_trials(trials)
        del storage, mirror
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {target} ({e.strerror or e})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("mirrored %d trials of %s into %s", len(trials), study.name, target)
    return optuna.storages.JournalStorage(JournalFileBackend(str(target)))


# --------------------------------------------------------------------------------------------- serving


def dashboard_storage(study: StudyDir, *, mirror: bool = False) -> tuple[Any, str]:
    """The storage to serve and a description of it.

    Optuna studies use their own storage unless ``mirror``; other studies are mirrored.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend

    cfg = read_study_config(study)
    if not mirror and cfg.engine == "optuna":
        if cfg.study.storage:
            from search.engines.optuna_engine import engine_url, redact_url

            return engine_url(cfg.study.storage), f"Optuna storage {redact_url(cfg.study.storage)}"
        journal = study.engine_dir / JOURNAL_FILE
        if journal.is_file():
            return optuna.storages.JournalStorage(JournalFileBackend(str(journal))), f"Optuna journal {journal}"
        logger.info("no Optuna journal in %s yet; mirroring the results instead", study.engine_dir)
    storage = mirror_to_optuna(study)
    return storage, f"mirror of the results contract at {study.engine_dir / DASHBOARD_JOURNAL}"


def serve(storage: Any, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run optuna-dashboard on ``storage`` until interrupted (blocks).

    Raises:
        ConfigError: the address cannot be bound (port in use, unknown host).
    """
    import optuna_dashboard

    try:
        optuna_dashboard.run_server(storage, host=host, port=port)
    except OSError as e:
        raise ConfigError(f"cannot serve on {host}:{port} ({e.strerror or e}); choose another --port") from None


# --------------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def quiet_optuna_logging() -> Iterator[None]:
    """Optuna's log level at WARNING inside the block (its study-creation and trial messages), restored after."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return _is_number(v) and math.isfinite(float(v))


def _distinct(values: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if not any(type(v) is type(o) and v == o for o in out):
            out.append(v)
    return out


def _widen(dist: Any, observed: Sequence[Any]) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        extra = [v for v in _distinct(list(observed)) if not any(type(v) is type(c) and v == c for c in dist.choices)]
        return CategoricalDistribution([*dist.choices, *extra]) if extra else dist
    nums = [v for v in observed if _finite(v)]
    if not nums:
        return dist
    if isinstance(dist, IntDistribution):
        ints = [int(v) for v in nums if float(v).is_integer()]
        low, high = min([dist.low, *ints]), max([dist.high, *ints])
        step = dist.step
        if any((v - low) % step for v in ints) or (high - low) % step:
            step = 1
        log = dist.log and low > 0 and step == 1
        if (low, high, step, log) == (dist.low, dist.high, dist.step, dist.log):
            return dist
        return IntDistribution(low, high, log=log, step=step)
    low, high = min(dist.low, *nums), max(dist.high, *nums)
    fstep: float | None = dist.step
    if fstep is not None and any(not _on_grid(v - low, fstep) for v in [*nums, high]):
        fstep = None
    log = dist.log and low > 0 and fstep is None
    if (low, high, fstep, log) == (dist.low, dist.high, dist.step, dist.log):
        return dist
    return FloatDistribution(float(low), float(high), log=log, step=fstep)


def _on_grid(offset: float, step: float) -> bool:
    return abs(offset / step - round(offset / step)) <= 1e-6


def _coerce(dist: Any, value: Any) -> Any:
    """``value`` in the type ``dist`` expects, or None when it does not fit."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    try:
        if isinstance(dist, CategoricalDistribution):
            return value if any(type(value) is type(c) and value == c for c in dist.choices) else None
        if not _is_number(value):
            return None
        if isinstance(dist, IntDistribution):
            return int(value) if float(value).is_integer() else None
        return float(value)
    except (TypeError, ValueError):
        return None
