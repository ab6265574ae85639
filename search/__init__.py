"""search: the driver of a UNet hyperparameter search (CLI, config, engines, trials, results).

The names below are the package's public surface; they load on first use (PEP 562), so that
``import search`` costs nothing and a module such as ``search.errors`` imports alone. Where each
piece lives is mapped at the top of the README's "Development" section.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from search.cli import main
    from search.config import Config, best_config, config_from_dict, load_config
    from search.config.specs import TrainSpec, TrialSpecs, specs_from_values
    from search.errors import (
        ConfigError,
        Interrupted,
        SearchAborted,
        TrialCollapsed,
        TrialFailed,
        TrialPruned,
    )
    from search.results import StudyDir, TrialRecord, open_study
    from search.study.final import run_final
    from search.study.runner import RunPlan, run_study
    from search.tools.export import export_study
    from search.tools.predict import predict_folder
    from search.tools.report import write_report
    from search.tools.status import status_text
    from search.trial.process import TrialProcess
    from search.vocabulary import OBJECTIVE, EpochDecision, TrialState

__all__ = [
    "OBJECTIVE",
    "Config",
    "ConfigError",
    "EpochDecision",
    "Interrupted",
    "RunPlan",
    "SearchAborted",
    "StudyDir",
    "TrainSpec",
    "TrialCollapsed",
    "TrialFailed",
    "TrialProcess",
    "TrialPruned",
    "TrialRecord",
    "TrialSpecs",
    "TrialState",
    "best_config",
    "config_from_dict",
    "export_study",
    "load_config",
    "main",
    "open_study",
    "predict_folder",
    "run_final",
    "run_study",
    "specs_from_values",
    "status_text",
    "write_report",
]

_LAZY = {
    "main": "search.cli",
    **dict.fromkeys(("Config", "best_config", "config_from_dict", "load_config"), "search.config"),
    **dict.fromkeys(("ConfigError", "Interrupted", "SearchAborted", "TrialCollapsed", "TrialFailed", "TrialPruned"),
                    "search.errors"),
    "export_study": "search.tools.export",
    "run_final": "search.study.final",
    "predict_folder": "search.tools.predict",
    "write_report": "search.tools.report",
    **dict.fromkeys(("StudyDir", "TrialRecord", "open_study"), "search.results"),
    **dict.fromkeys(("RunPlan", "run_study"), "search.study.runner"),
    **dict.fromkeys(("TrainSpec", "TrialSpecs", "specs_from_values"), "search.config.specs"),
    "status_text": "search.tools.status",
    "TrialProcess": "search.trial.process",
    **dict.fromkeys(("OBJECTIVE", "EpochDecision", "TrialState"), "search.vocabulary"),
}


def __getattr__(name: str) -> Any:
    try:
        return getattr(importlib.import_module(_LAZY[name]), name)
    except KeyError:
        raise AttributeError(f"module 'search' has no attribute {name!r}") from None
