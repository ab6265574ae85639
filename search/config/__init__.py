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
    FAMILY_OPTION_DEFAULTS,
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
    VARIANT,
    Config,
    DataConfig,
    FinalConfig,
    ParamDef,
    ReducerConfig,
    StudyConfig,
    TrainConfig,
    best_config,
    family_options,
    family_values,
    is_active,
    option_family,
)
from search.config.validation import max_feasible_layers

__all__ = [
    "ACTIVATIONS",
    "AUGMENTATIONS",
    "AUTO",
    "BOOL_HYPERPARAMETERS",
    "FAMILY_OPTION_DEFAULTS",
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
    "VARIANT",
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
    "family_options",
    "family_values",
    "is_active",
    "load_config",
    "max_feasible_layers",
    "option_family",
]
