"""Optuna strategies (tpe, cmaes, gp, random-optuna) with pruners (none, median, asha, hyperband).

Split the way Optuna splits itself:

- ``sampling``: the sampler and pruner of a study;
- ``storage``: the journal file or RDB (PostgreSQL) storage, heartbeats, URL redaction;
- ``coordination``: several drivers on one study (the study lock, trial claims, the trial budget);
- ``loop``: the ask/tell loop each driver runs.
"""

from __future__ import annotations

from search.engines.optuna_engine.coordination import budget_used, driver_alive, driver_token, study_lock
from search.engines.optuna_engine.loop import HEARTBEAT_LOST, run_optuna
from search.engines.optuna_engine.sampling import make_pruner, make_sampler
from search.engines.optuna_engine.storage import (
    engine_url,
    heartbeat_settings,
    load_study,
    make_storage,
    quiet_optuna,
    redact_url,
    stored_config,
)

__all__ = [
    "HEARTBEAT_LOST",
    "budget_used",
    "driver_alive",
    "driver_token",
    "engine_url",
    "heartbeat_settings",
    "load_study",
    "make_pruner",
    "make_sampler",
    "make_storage",
    "quiet_optuna",
    "redact_url",
    "run_optuna",
    "stored_config",
    "study_lock",
]
