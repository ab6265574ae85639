"""Typed study configuration: the schema (:mod:`~search.config.schema`), loading and overrides
(:mod:`~search.config.loading`), validation (:mod:`~search.config.validation`).

``search.config`` is the public surface: import from here.
"""

from __future__ import annotations

from search.config.loading import apply_override, config_from_dict, load_config
from search.config.schema import (
    ACTIVATIONS,
    AUGMENTATIONS,
    AUTO,
    BOOL_HYPERPARAMETERS,
    HYPERPARAMETER_DEFAULTS,
    INT_HYPERPARAMETERS,
    KT_STRATEGIES,
    LOSS_NAMES,
    NO_BUDGET_RULES,
    OPTUNA_STRATEGIES,
    PRUNERS,
    SCHEMA_VERSION,
    STR_HYPERPARAMETERS,
    STRATEGIES,
    Config,
    DataConfig,
    FinalConfig,
    ParamDef,
    ReducerConfig,
    StudyConfig,
    TrainConfig,
    best_config,
)
from search.config.validation import max_feasible_layers

__all__ = [
    "ACTIVATIONS",
    "AUGMENTATIONS",
    "AUTO",
    "BOOL_HYPERPARAMETERS",
    "HYPERPARAMETER_DEFAULTS",
    "INT_HYPERPARAMETERS",
    "KT_STRATEGIES",
    "LOSS_NAMES",
    "NO_BUDGET_RULES",
    "OPTUNA_STRATEGIES",
    "PRUNERS",
    "SCHEMA_VERSION",
    "STRATEGIES",
    "STR_HYPERPARAMETERS",
    "Config",
    "DataConfig",
    "FinalConfig",
    "ParamDef",
    "ReducerConfig",
    "StudyConfig",
    "TrainConfig",
    "apply_override",
    "best_config",
    "config_from_dict",
    "load_config",
    "max_feasible_layers",
]
