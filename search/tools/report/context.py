"""Everything a report reads from the results contract, loaded once per report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from data.labels import ClassMap
from search.config import HYPERPARAMETER_DEFAULTS, Config
from search.errors import ConfigError
from search.results import (
    StudyDir,
    TrialRecord,
    baseline_of,
    best_of,
    read_final,
    read_json,
    read_study_config,
    read_test_metrics,
)
from search.tools.report.page import finite
from search.vocabulary import TrialState

__all__ = ["ReportContext"]


class ReportContext:
    """Everything the sections read, loaded once per report."""

    def __init__(self, study: StudyDir) -> None:
        self.study = study
        self.cfg: Config | None = None
        self.cfg_error = ""
        self.trials: list[TrialRecord] = []
        self.histories: dict[int, list[dict[str, Any]]] = {}
        self.env: dict[str, Any] = {}
        self.final: dict[str, Any] | None = None
        self.test_metrics: dict[str, Any] | None = None

    @classmethod
    def load(cls, study: StudyDir) -> ReportContext:
        ctx = cls(study)
        try:
            ctx.cfg = read_study_config(study)
        except ConfigError as e:
            ctx.cfg_error = str(e)
        ctx.trials = study.trials()
        ctx.histories = {r.number: study.read_history(r.number) for r in ctx.trials}
        ctx.env = _read_json_or(study.environment_json, {})
        ctx.final = read_final(study)
        ctx.test_metrics = read_test_metrics(study)
        return ctx

    @property
    def classes(self) -> ClassMap | None:
        """The study's class map when it has several classes (None: binary, or no readable config)."""
        classes = self.cfg.data.class_map() if self.cfg is not None else None
        return classes if classes is not None and classes.num_classes > 2 else None

    @property
    def complete(self) -> list[TrialRecord]:
        return [r for r in self.trials if r.status == TrialState.COMPLETE and finite(r.score)]

    @property
    def best(self) -> TrialRecord | None:
        return best_of(self.trials)

    @property
    def baseline(self) -> TrialRecord | None:
        return baseline_of(self.trials)

    def param_names(self) -> list[str]:
        """The sampled hyperparameters (else those whose recorded values differ), in a stable order."""
        if self.cfg is not None and self.cfg.sampled_params():
            sampled = self.cfg.sampled_params()
            return [k for k in HYPERPARAMETER_DEFAULTS if k in sampled]
        names = []
        for k in HYPERPARAMETER_DEFAULTS:
            seen = {json.dumps(r.values.get(k), sort_keys=True) for r in self.trials if k in r.values}
            if len(seen) > 1:
                names.append(k)
        return names

    def is_log(self, name: str) -> bool:
        p = self.cfg.search_space.get(name) if self.cfg is not None else None
        return bool(p is not None and p.log) or name == "learning_rate"


def _read_json_or(path: Path, default: Any) -> Any:
    try:
        return read_json(path) if path.is_file() else default
    except (OSError, ValueError):
        return default
